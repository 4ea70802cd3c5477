"""Argo retry nodes: a task with a retry policy runs its executor as attempts.

The v2 compiler gives such a task the executor template ``retry-system-container-impl``
with Argo's ``retryStrategy`` (kubeflow/pipelines ``backend/src/v2/compiler/argocompiler/
container.go``); Argo makes ``executor`` a ``Retry`` node without a pod, whose children
``executor(0)``, ``executor(1)`` are the pods (argo-workflows ``workflow/controller/
operator.go``), and the KFP API lists each node as a task (``server/api_converter.go``).
The bridge maps the attempts back to their KFP task and reads the last attempt's log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kfp_bridge import run_report
from kfp_bridge.backends import argo_pods, kfp_failures
from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.kfp_api import KfpApiBackend
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

TINY = Path(__file__).parent / "fixtures" / "tiny_pipeline.yaml"
FINAL = "ValueError: the last attempt failed for good"


def fnv32a(data: bytes) -> int:
    """The reference FNV-1a (offset basis 2166136261, prime 16777619)."""
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % 2**32
    return h


def test_fnv_reference_matches_the_published_vectors():
    assert (fnv32a(b""), fnv32a(b"a"), fnv32a(b"foobar")) == (0x811C9DC5, 0xE40C292C, 0xBF9CF968)


def test_attempt_node_ids_follow_from_the_retry_node_id():
    name = "tiny-pipeline-x7k2q.root.greet.executor"
    retry = f"tiny-pipeline-x7k2q-{fnv32a(name.encode())}"
    for n in (0, 1, 12):
        expected = f"tiny-pipeline-x7k2q-{fnv32a(f'{name}({n})'.encode())}"
        assert argo_pods.attempt_node_id(retry, n) == expected
    assert argo_pods.attempt_node_id("not-an-argo-id", 0) is None
    assert argo_pods.attempt_node_id("plainname", 0) is None


def test_pod_nodes_replace_a_retry_node_by_its_attempts_newest_first():
    retry = "wf-123"
    a0, a1 = argo_pods.attempt_node_id(retry, 0), argo_pods.attempt_node_id(retry, 1)
    plain = "wf-999"
    assert argo_pods.pod_nodes([retry], {retry, a0, a1}) == [a1, a0]
    assert argo_pods.pod_nodes([plain], {plain}) == [plain]  # no attempt listed: a pod
    assert argo_pods.pod_nodes([plain, retry], {plain, retry, a0}) == [a0, plain]


def test_retry_pod_template_is_tried_for_v2_pod_names():
    names = argo_pods.candidate_pod_names("wf-42")
    assert "wf-retry-system-container-impl-42" in names
    assert names[0] == "wf-system-container-impl-42" and names[-1] == "wf-42"


@pytest.fixture(scope="module")
def tiny_spec() -> dict:
    return yaml.safe_load(TINY.read_text())


def _finish(backend: KfpApiBackend, spec: dict, name: str) -> str:
    run_id = backend.submit(RunRequest(display_name=name, pipeline_spec=spec)).run_id
    for _ in range(10):
        if backend.get_run(run_id).state.is_terminal:
            return run_id
    raise AssertionError(f"run {run_id} did not end")


def _details(server: KfpApiStandIn, run_id: str) -> list[dict]:
    [run] = [r for r in server.runs() if r["run_id"] == run_id]
    return run["run_details"]["task_details"]


@pytest.mark.parametrize("profile", ["api-server", "ui-proxy"])
def test_failed_retried_task_shows_the_last_attempts_log(profile, tiny_spec):
    with KfpApiStandIn(profile=profile) as server:
        server.set_schedule(outcome="FAILED", error=FINAL, retry_attempts=3)
        backend = KfpApiBackend(server.url, request_timeout=2.0)
        try:
            run_id = _finish(backend, tiny_spec, "retried")
            status = backend.get_run(run_id)
        finally:
            backend.close()
        details = _details(server, run_id)
    assert status.state is RunState.FAILED
    # the stand-in lists what Argo makes: the retry node and its three attempts
    shown = [d["display_name"] for d in details]
    assert {"executor(0)", "executor(1)", "executor(2)"} <= set(shown)
    [retry_node] = [
        d for d in details if d["display_name"] == "executor" and len(d["child_tasks"]) == 3
    ]
    attempts = [c["pod_name"] for c in retry_node["child_tasks"]]
    # one failed task, greet, not an attempt; its pods are the attempts, newest first
    assert [t.name for t in status.failed_tasks] == ["greet"]
    assert status.failed_tasks[0].pods == tuple(reversed(attempts))
    assert status.error.splitlines()[0] == f"task greet failed: {FINAL}"
    assert "lost its connection" not in status.error  # an earlier attempt's log
    assert "not available" not in status.error


def test_report_is_read_from_the_last_attempt(tiny_spec):
    with KfpApiStandIn(profile="ui-proxy") as server:
        server.set_schedule(retry_attempts=2)
        backend = KfpApiBackend(server.url, request_timeout=2.0)
        try:
            run_id = _finish(backend, tiny_spec, "retried-ok")
            node = server.set_task_log(run_id, "greet", run_report.report_line("result", rows=5))
            report = backend.task_report(run_id, "greet")
        finally:
            backend.close()
        details = _details(server, run_id)
    [greet] = [d for d in details if d["display_name"] == "greet"]
    [retry_id] = [c["pod_name"] for c in greet["child_tasks"]]
    last_attempts = [
        d["child_tasks"][-1]["pod_name"]
        for d in details
        if d["display_name"] == "executor" and len(d["child_tasks"]) == 2
    ]
    assert node in last_attempts and node == argo_pods.attempt_node_id(retry_id, 1)
    assert report is not None and report.fields["rows"] == 5


def test_attempt_entries_are_not_failed_tasks():
    class Child:
        def __init__(self, pod: str) -> None:
            self.pod_name = pod

    class Detail:
        def __init__(self, name: str, state: str, children: list[str]) -> None:
            self.display_name, self.state = name, state
            self.child_tasks = [Child(c) for c in children]

    retry = "wf-77"
    a0, a1 = argo_pods.attempt_node_id(retry, 0), argo_pods.attempt_node_id(retry, 1)
    details = [
        Detail("wf", "FAILED", ["wf-1"]),
        Detail("greet", "FAILED", [retry]),
        Detail("executor", "FAILED", [a0, a1]),
        Detail("executor(0)", "FAILED", []),
        Detail("executor(1)", "FAILED", []),
    ]
    [task] = kfp_failures.failed_tasks(details)
    assert (task.name, task.pods) == ("greet", (a1, a0))

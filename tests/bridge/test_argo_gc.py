"""Profile ``argo-gc``: a finished run's workflow and pods are deleted; logs come from the archive.

The API server still knows the run (its task details and ``WorkflowRuntimeManifest`` are
in the database), and ``ReadLog`` falls back to the log archive when the pod is gone
(kubeflow/pipelines ``backend/src/apiserver/resource/resource_manager.go``). Without an
archive no log can be read: the bridge says so with the run link, and the outcome stands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kfp_bridge import run_report
from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.kfp_api import KfpApiBackend
from kfp_bridge.exceptions import BackendError
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

TINY = Path(__file__).parent / "fixtures" / "tiny_pipeline.yaml"


@pytest.fixture(scope="module")
def tiny_spec() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture
def gc_server():
    with KfpApiStandIn(profile="argo-gc") as server:
        yield server


@pytest.fixture
def gc_backend(gc_server):
    backend = KfpApiBackend(gc_server.url, request_timeout=2.0)
    yield backend
    backend.close()


def finish(backend: KfpApiBackend, spec: dict, name: str = "gc-run") -> tuple[str, RunState]:
    run_id = backend.submit(RunRequest(display_name=name, pipeline_spec=spec)).run_id
    for _ in range(10):
        state = backend.get_run(run_id).state
        if state.is_terminal:
            return run_id, state
    raise AssertionError(f"run {run_id} did not end")


def executor_node(server: KfpApiStandIn, run_id: str, task: str = "greet") -> str:
    [run] = [r for r in server.runs() if r["run_id"] == run_id]
    return next(
        c["pod_name"]
        for d in run["run_details"]["task_details"]
        if d["display_name"] == task
        for c in d["child_tasks"]
    )


def log_reads(server: KfpApiStandIn) -> int:
    return sum(r["path"].endswith("/log") for r in server.requests())


def test_a_collected_run_still_answers_and_its_logs_come_from_the_archive(
    gc_server, gc_backend, tiny_spec
):
    run_id, state = finish(gc_backend, tiny_spec)
    assert state is RunState.SUCCEEDED
    assert run_id in gc_server.state.collected and run_id in gc_server.state.pods_gone
    status = gc_backend.get_run(run_id)
    assert status.state is RunState.SUCCEEDED and status.error is None
    tail = gc_backend.task_log_tail(run_id, executor_node(gc_server, run_id))
    assert "launcher_v2.go:178] succeeded" in tail  # the archived main log


def test_the_report_is_read_from_the_archive(gc_server, gc_backend, tiny_spec):
    run_id, _ = finish(gc_backend, tiny_spec)
    gc_server.set_task_log(run_id, "greet", f"x\n{run_report.report_line('result', rows=7)}\n")
    assert gc_backend.task_report(run_id, "greet").fields["rows"] == 7


def test_a_failed_collected_run_keeps_its_log_text(gc_server, gc_backend, tiny_spec):
    gc_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    run_id, state = finish(gc_backend, tiny_spec)
    assert state is RunState.FAILED
    status = gc_backend.get_run(run_id)
    assert status.error.splitlines()[0] == "task greet failed: ValueError: asked to fail"


def test_without_a_log_archive_the_missing_log_is_said_and_the_outcome_stands(
    gc_server, gc_backend, tiny_spec
):
    gc_server.set_log_archive(False)
    gc_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    run_id, state = finish(gc_backend, tiny_spec)
    assert state is RunState.FAILED
    before = log_reads(gc_server)
    status = gc_backend.get_run(run_id)
    assert status.state is RunState.FAILED
    first = status.error.splitlines()[0]
    assert f"the log of task greet is not available through {gc_server.url}" in first
    assert first.endswith(status.url)  # the run link, last on the line
    assert "v2beta1" not in status.error and "KFP < 2.0" not in status.error
    assert log_reads(gc_server) - before == 1  # one attempt, no retries: no delay

    gc_server.set_schedule(outcome="SUCCEEDED")
    ok_id, ok_state = finish(gc_backend, tiny_spec, name="gc-ok")
    assert ok_state is RunState.SUCCEEDED and gc_backend.get_run(ok_id).error is None
    with pytest.raises(BackendError, match="the log of task greet is not available through"):
        gc_backend.task_report(ok_id, "greet")


def test_through_the_ui_server_a_collected_runs_logs_come_from_the_archive_by_pod_name(
    gc_server, gc_backend, tiny_spec
):
    """frontend/server/handlers/pod-logs.ts: Kubernetes, then the workflow's archive record
    (gone with the workflow), then the archive by key format when ARGO_ARCHIVE_LOGS is set."""
    gc_server.set_ui_routes()
    gc_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    run_id, _ = finish(gc_backend, tiny_spec)
    status = gc_backend.get_run(run_id)
    assert status.error.splitlines()[0] == "task greet failed: ValueError: asked to fail"
    assert "/k8s/pod/logs" in [r["path"] for r in gc_server.requests()]

    gc_server.set_log_archive(False)
    status = gc_backend.get_run(run_id)
    first = status.error.splitlines()[0]
    assert f"the log of task greet is not available through {gc_server.url}" in first
    assert status.state is RunState.FAILED and first.endswith(status.url)

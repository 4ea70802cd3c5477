"""KfpApiBackend against the stand-in KFP API server, through the real kfp-server-api client."""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from kfp_bridge.backends import kfp_api as kfp_module
from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.kfp_api import KfpApiBackend, static_token_provider
from kfp_bridge.exceptions import (
    ApiVersionError,
    AuthError,
    BackendError,
    PipelineNotFoundError,
    RetryRefusedError,
    RunNotFoundError,
    TransientBackendError,
)
from kfp_bridge.failures import Failure
from kfp_bridge.run_report import report_line
from kfp_bridge.testing.kfp_api.server import KfpApiStandIn

TINY = Path(__file__).parent / "fixtures" / "tiny_pipeline.yaml"
PLATFORM_SPEC = {
    "platforms": {
        "kubernetes": {
            "deploymentSpec": {
                "executors": {"exec-greet": {"nodeSelector": {"labels": {"pool": "batch"}}}}
            }
        }
    }
}


@pytest.fixture(scope="module")
def tiny_spec() -> dict:
    return yaml.safe_load(TINY.read_text())


def request_for(spec: dict, name: str = "dag__task__2026-11-26T21:00:00+00:00", **kw) -> RunRequest:
    return RunRequest(display_name=name, pipeline_spec=spec, **kw)


def poll_until_terminal(backend: KfpApiBackend, run_id: str, limit: int = 20) -> list[RunState]:
    states = []
    for _ in range(limit):
        states.append(backend.get_run(run_id).state)
        if states[-1].is_terminal:
            return states
    raise AssertionError(f"run {run_id} did not end: {states}")


# -- submit -------------------------------------------------------------------------------
def test_submit_sends_spec_parameters_root_and_service_account(kfp_server, kfp_backend, tiny_spec):
    status = kfp_backend.submit(
        request_for(
            tiny_spec,
            parameters={"message": "hi", "repeat": 2},
            experiment="daily-prediction",
            pipeline_root="gs://bucket/root",
            service_account="pipeline-runner@proj.iam.gserviceaccount.com",
        )
    )

    [run] = kfp_server.runs()
    assert status.run_id == run["run_id"]
    assert status.state is RunState.PENDING
    assert status.url == f"{kfp_server.url}/#/runs/details/{run['run_id']}"
    assert run["display_name"] == "dag__task__2026-11-26T21:00:00+00:00"
    assert run["pipeline_spec"] == tiny_spec
    assert run["runtime_config"] == {
        "parameters": {"message": "hi", "repeat": 2},
        "pipeline_root": "gs://bucket/root",
    }
    assert run["service_account"] == "pipeline-runner@proj.iam.gserviceaccount.com"
    [experiment] = kfp_server.stored("experiments")
    assert experiment["display_name"] == "daily-prediction"
    assert run["experiment_id"] == experiment["experiment_id"]


def test_platform_spec_is_sent_beside_the_pipeline_spec_like_the_sdk(
    kfp_server, kfp_backend, tiny_spec
):
    kfp_backend.submit(request_for(tiny_spec, platform_spec=PLATFORM_SPEC))

    [run] = kfp_server.runs()
    assert run["pipeline_spec"] == {"pipeline_spec": tiny_spec, "platform_spec": PLATFORM_SPEC}


@pytest.mark.parametrize("enable_caching", [True, False])
def test_caching_choice_overrides_every_root_task(
    kfp_server, kfp_backend, tiny_spec, enable_caching
):
    kfp_backend.submit(request_for(tiny_spec, enable_caching=enable_caching))

    tasks = kfp_server.runs()[0]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert {name: t["cachingOptions"]["enableCache"] for name, t in tasks.items()} == {
        "greet": enable_caching,
        "shout": enable_caching,
    }
    # The caller's spec is not modified.
    assert tiny_spec == yaml.safe_load(TINY.read_text())


def test_caching_unset_keeps_compiled_settings(kfp_server, kfp_backend, tiny_spec):
    kfp_backend.submit(request_for(tiny_spec))
    assert kfp_server.runs()[0]["pipeline_spec"] == tiny_spec


def test_submit_by_uploaded_pipeline_version(kfp_server, kfp_backend, tiny_spec):
    kfp_server.add_pipeline_version("pipe-1", "ver-1", tiny_spec)

    kfp_backend.submit(
        RunRequest(
            display_name="by-version",
            pipeline_spec={},
            pipeline_id="pipe-1",
            pipeline_version_id="ver-1",
        )
    )

    [run] = kfp_server.runs()
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipe-1",
        "pipeline_version_id": "ver-1",
    }
    assert run["pipeline_spec"] is None


@pytest.mark.parametrize(
    ("pipeline_id", "version_id", "named"),
    [
        ("pipe-1", "ver-2", "pipeline_version_id 'ver-2'"),
        ("pipe-9", "ver-1", "pipeline_id 'pipe-9'"),
        ("pipe-9", None, "pipeline_id 'pipe-9'"),
    ],
)
def test_missing_pipeline_or_version_fails_before_submitting(
    kfp_server, kfp_backend, tiny_spec, pipeline_id, version_id, named
):
    """The server would answer the run with HTTP 500 (resource_manager.go CreateRun)."""
    kfp_server.add_pipeline_version("pipe-1", "ver-1", tiny_spec)
    request = RunRequest("x", {}, pipeline_id=pipeline_id, pipeline_version_id=version_id)
    with pytest.raises(PipelineNotFoundError, match=named):
        kfp_backend.submit(request)
    assert not [r for r in kfp_server.requests() if r["method"] == "POST"]


def test_pipeline_id_alone_runs_and_returns_the_latest_version(kfp_server, kfp_backend, tiny_spec):
    kfp_server.add_pipeline_version("pipe-1", "ver-1", {"pipelineInfo": {"name": "old"}})
    kfp_server.add_pipeline_version("pipe-1", "ver-2", tiny_spec)
    latest = max(
        (v for v in kfp_server.stored("pipeline_versions") if v["pipeline_id"] == "pipe-1"),
        key=lambda v: (v["created_at"], v["pipeline_version_id"]),  # as the server picks it
    )
    version_id, spec = kfp_backend.pipeline_version("pipe-1")
    assert version_id == latest["pipeline_version_id"]
    assert spec == latest["pipeline_spec"]
    kfp_backend.submit(RunRequest("by-pipeline", {}, pipeline_id="pipe-1"))
    [run] = kfp_server.runs()
    assert run["pipeline_version_reference"]["pipeline_version_id"] == version_id


def test_experiment_is_created_once_and_reused(kfp_server, tiny_spec):
    for i in range(3):  # a fresh backend each time, as each task try would have
        backend = KfpApiBackend(kfp_server.url)
        backend.submit(request_for(tiny_spec, name=f"run-{i}", experiment="daily"))
        backend.submit(request_for(tiny_spec, name=f"run-{i}-b", experiment="daily"))

    assert [e["display_name"] for e in kfp_server.stored("experiments")] == ["daily"]
    creates = [
        r
        for r in kfp_server.requests()
        if r["method"] == "POST" and r["path"].endswith("/experiments")
    ]
    assert len(creates) == 1
    assert len({r["experiment_id"] for r in kfp_server.runs()}) == 1


# -- observe ------------------------------------------------------------------------------
def test_run_goes_pending_running_succeeded(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(pending=2, running=2)
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id

    states = poll_until_terminal(kfp_backend, run_id)

    assert states == [RunState.PENDING] * 2 + [RunState.RUNNING] * 2 + [RunState.SUCCEEDED]
    final = kfp_backend.get_run(run_id)
    assert final.error is None
    assert final.created_at


def test_failed_run_names_the_task_and_its_log_tail(kfp_server, kfp_backend, tiny_spec):
    """A FAILED run has no error text in the API: the bridge reads the failed pod's log."""
    kfp_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id

    assert poll_until_terminal(kfp_backend, run_id)[-1] is RunState.FAILED
    status = kfp_backend.get_run(run_id)
    assert status.error.splitlines()[0] == "task greet failed: ValueError: asked to fail"
    [task] = status.failed_tasks
    assert task.name == "greet" and "Traceback" in task.log_tail
    assert "--- last lines of the log of task greet" in status.error


def test_the_failed_tasks_verdict_is_parsed_from_its_log_tail_into_the_status(
    kfp_server, kfp_backend, tiny_spec
):
    """The component's failure report, read in its pod log, reaches the status as data."""
    report = report_line(
        "failure", step="greet", permanent=True, error="BadGreetingError", input="message",
        message="cannot greet",
    )  # fmt: skip
    kfp_server.set_schedule(outcome="FAILED", error=f"{report}\nValueError: cannot greet")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    assert poll_until_terminal(kfp_backend, run_id)[-1] is RunState.FAILED
    failure = kfp_backend.get_run(run_id).failure
    assert failure == Failure(
        permanent=True, error_type="BadGreetingError", message="cannot greet", input="message",
        step="greet",
    )  # fmt: skip
    assert kfp_backend.find_runs(request_for(tiny_spec).display_name)[0].failure is None  # no logs


def test_retry_resumes_the_same_run_and_a_refusal_is_said(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(outcome="FAILED", failed_task="greet")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    with pytest.raises(RetryRefusedError, match="is PENDING; only a FAILED run"):
        kfp_backend.retry(run_id)  # still PENDING: only a Failed/Error run is retried
    assert poll_until_terminal(kfp_backend, run_id)[-1] is RunState.FAILED

    kfp_backend.retry(run_id)

    assert poll_until_terminal(kfp_backend, run_id)[-1] is RunState.SUCCEEDED
    [view] = kfp_server.runs()
    assert "greet" in view["reruns"]
    kfp_server.set_schedule(outcome="FAILED", failed_task="greet", retry_outcome="FAILED")
    again = kfp_backend.submit(request_for(tiny_spec, name="other")).run_id
    poll_until_terminal(kfp_backend, again)
    kfp_server.inject("status", status=500, path=f"{again}:retry$")
    with pytest.raises(RetryRefusedError, match="refused to retry"):
        kfp_backend.retry(again)  # e.g. its node status is offloaded (workflow.go CanRetry)


def test_a_retry_that_loses_the_race_follows_the_winner(
    kfp_server, kfp_backend, tiny_spec, monkeypatch
):
    """Another retry starts the run between our look and our call: the server answers 409
    (``GenerateRetryExecution``: not Failed/Error), and the run is followed, not replaced."""
    kfp_server.set_schedule(outcome="FAILED", failed_task="greet")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    poll_until_terminal(kfp_backend, run_id)
    other = KfpApiBackend(kfp_server.url, request_timeout=2.0)
    real_get_run = kfp_backend.get_run
    looks = []

    def get_run_then_lose_the_race(rid, *args, **kwargs):
        status = real_get_run(rid, *args, **kwargs)
        if not looks:
            other.retry(rid)  # the winner, after our look saw FAILED
        looks.append(status.state)
        return status

    monkeypatch.setattr(kfp_backend, "get_run", get_run_then_lose_the_race)
    kfp_backend.retry(run_id)  # the server's 409, then the run is active: no refusal
    other.close()
    assert looks[0] is RunState.FAILED and not looks[-1].is_terminal
    [view] = kfp_server.runs()
    assert view["reruns"] == ["greet"]  # rerun once, by the winner
    assert len([r for r in kfp_server.requests() if r["path"].endswith(":retry")]) == 2


def test_failed_run_log_tail_is_bounded(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(pending=0, running=1, outcome="FAILED")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    assert kfp_backend.get_run(run_id).state is RunState.RUNNING
    big = "".join(f"progress {i}\n" for i in range(200_000)) + "RuntimeError: out of data\n"
    kfp_server.set_task_log(run_id, "greet", big)
    status = kfp_backend.get_run(run_id)
    [task] = status.failed_tasks
    assert len(task.log_tail.splitlines()) == 50 and len(task.log_tail.encode()) <= 8192
    assert status.error.splitlines()[0] == "task greet failed: RuntimeError: out of data"


def test_unavailable_logs_are_said_and_never_fail_the_outcome(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(pending=0, running=1, outcome="FAILED")
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    assert kfp_backend.get_run(run_id).state is RunState.RUNNING
    kfp_server.remove_task_logs(run_id)  # pods gone: HTTP 200 with an error body
    status = kfp_backend.get_run(run_id)
    assert status.state is RunState.FAILED
    first = status.error.splitlines()[0]
    assert first.startswith("task greet failed (log unavailable:") and "not found" in first
    assert status.url in first
    kfp_server.inject("status", status=503, path="/log$")  # endpoint broken
    status = kfp_backend.get_run(run_id)
    assert "log unavailable" in status.error and "503" in status.error
    kfp_server.inject("slow", delay=3, path="/log$")  # endpoint hangs (request timeout 2 s)
    status = kfp_backend.get_run(run_id)
    assert status.state is RunState.FAILED and "log unavailable" in status.error


@pytest.mark.parametrize("state", ["PAUSED", "SKIPPED", "CANCELED", "RUNTIME_STATE_UNSPECIFIED"])
def test_every_state_string_maps(kfp_server, kfp_backend, tiny_spec, state):
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    kfp_server.set_run_state(run_id, state)
    assert kfp_backend.get_run(run_id).state is RunState(state)


# -- find by name -------------------------------------------------------------------------
def test_find_runs_by_name_newest_first_across_pages(kfp_server, tiny_spec, monkeypatch):
    monkeypatch.setattr(kfp_module, "_LIST_PAGE_SIZE", 2)
    backend = KfpApiBackend(kfp_server.url)
    ids = [backend.submit(request_for(tiny_spec, name="same")).run_id for _ in range(5)]
    backend.submit(request_for(tiny_spec, name="same-but-longer"))
    backend.submit(request_for(tiny_spec, name="other"))

    found = backend.find_runs("same")

    # created_at has whole seconds; the server orders ties by id (list/list.go)
    created = {r["run_id"]: r["created_at"] for r in kfp_server.runs()}
    assert [s.run_id for s in found] == sorted(ids, key=lambda i: (created[i], i), reverse=True)
    assert {s.display_name for s in found} == {"same"}
    lists = [
        r for r in kfp_server.requests() if r["method"] == "GET" and r["path"].endswith("/runs")
    ]
    assert len(lists) == 3  # pages of 2, 2, 1
    assert "page_token" not in lists[0]["query"]
    assert all(r["query"].get("page_token") for r in lists[1:])
    assert lists[0]["query"]["sort_by"] == "created_at desc"


def test_find_runs_sends_the_display_name_filter(kfp_server, kfp_backend):
    assert kfp_backend.find_runs('odd "name"') == []
    [req] = [r for r in kfp_server.requests() if r["path"].endswith("/runs")]
    # escaped once more for the server's second decode (server/list_request_util.go)
    assert json.loads(unquote(req["query"]["filter"])) == {
        "predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": 'odd "name"'}]
    }


@pytest.mark.parametrize("name", ["daily+hourly", "100% done", "two  spaces", "日次 予測", "a%2Bb"])
def test_names_survive_the_double_decode(kfp_server, kfp_backend, tiny_spec, name):
    """kfp.Client cannot find these again (tests/contract); the bridge can."""
    run_id = kfp_backend.submit(request_for(tiny_spec, name=name, experiment=name)).run_id
    again = KfpApiBackend(kfp_server.url)  # no cached experiment ids
    assert again.experiment_id(name, create=False) is not None
    assert [s.run_id for s in again.find_runs(name, experiment=name)] == [run_id]
    assert [e["display_name"] for e in kfp_server.stored("experiments")] == [name]


def test_find_runs_within_an_experiment(kfp_server, kfp_backend, tiny_spec):
    in_a = kfp_backend.submit(request_for(tiny_spec, name="r", experiment="a")).run_id
    kfp_backend.submit(request_for(tiny_spec, name="r", experiment="b"))

    assert [s.run_id for s in kfp_backend.find_runs("r", experiment="a")] == [in_a]
    assert len(kfp_backend.find_runs("r")) == 2
    assert kfp_backend.find_runs("r", experiment="missing") == []
    assert "missing" not in {e["display_name"] for e in kfp_server.stored("experiments")}


# -- cancel -------------------------------------------------------------------------------
def test_cancel_terminates_and_is_idempotent(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(pending=1, running=1000, canceling=3)
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    kfp_backend.get_run(run_id)

    kfp_backend.cancel(run_id)
    kfp_backend.cancel(run_id)  # CANCELING: the server refuses, the backend shrugs

    assert kfp_backend.get_run(run_id).state is RunState.CANCELING
    # Argo fails a terminated workflow: KFP reports FAILED, not CANCELED (model/run.go ToV2)
    assert poll_until_terminal(kfp_backend, run_id)[-1] is RunState.FAILED
    kfp_backend.cancel(run_id)  # already ended: no error
    terminates = [r for r in kfp_server.requests() if r["path"].endswith(":terminate")]
    assert len(terminates) == 3


def test_cancel_of_a_finished_run_is_no_error(kfp_server, kfp_backend, tiny_spec):
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    kfp_server.set_run_state(run_id, "SUCCEEDED")
    kfp_backend.cancel(run_id)
    assert kfp_backend.get_run(run_id).state is RunState.SUCCEEDED


def test_cancel_of_an_unknown_run(kfp_backend):
    with pytest.raises(RunNotFoundError):
        kfp_backend.cancel("no-such-run")


# -- faults -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "options", "error", "text"),
    [
        ("status", {"status": 500}, TransientBackendError, "HTTP 500"),
        ("status", {"status": 503}, TransientBackendError, "HTTP 503"),
        ("status", {"status": 502}, TransientBackendError, "HTTP 502"),
        ("status", {"status": 429}, TransientBackendError, "HTTP 429"),
        ("drop", {}, TransientBackendError, "unreachable or too slow"),
        ("slow", {"delay": 3.0}, TransientBackendError, "timed out"),
        ("status", {"status": 401}, AuthError, "HTTP 401"),
        ("status", {"status": 403}, AuthError, "HTTP 403"),
        ("status", {"status": 302}, AuthError, "login page"),
        ("status", {"status": 400, "message": "Invalid input error: bad"}, BackendError, "bad"),
    ],
)
def test_faults_map_to_bridge_errors(kfp_server, tiny_spec, kind, options, error, text):
    backend = KfpApiBackend(kfp_server.url, request_timeout=0.5)
    run_id = backend.submit(request_for(tiny_spec)).run_id
    kfp_server.inject(kind, method="GET", **options)

    with pytest.raises(error, match=text) as raised:
        backend.get_run(run_id)

    if error is BackendError:
        assert not isinstance(raised.value, (AuthError, RunNotFoundError))
    assert backend.get_run(run_id).run_id == run_id  # the fault was one request only


def test_auth_error_says_what_to_check(kfp_server, kfp_backend):
    kfp_server.require_token("right")
    with pytest.raises(AuthError) as err:
        kfp_backend.healthz()
    message = str(err.value)
    assert "401" in message
    assert "auth setting" in message
    assert kfp_server.url in message


def test_a_burst_of_503_then_recovery(kfp_server, kfp_backend, tiny_spec):
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    kfp_server.inject("status", times=3, status=503, path=r"/runs/")

    for _ in range(3):
        with pytest.raises(TransientBackendError):
            kfp_backend.get_run(run_id)
    assert kfp_backend.get_run(run_id).state is RunState.PENDING


def test_a_run_that_disappears_is_not_found(kfp_server, kfp_backend, tiny_spec):
    run_id = kfp_backend.submit(request_for(tiny_spec)).run_id
    kfp_server.delete_run(run_id)
    with pytest.raises(RunNotFoundError, match=run_id):
        kfp_backend.get_run(run_id)


def test_connection_refused_is_transient(tiny_spec):
    server = KfpApiStandIn().start()
    url = server.url
    server.stop()
    with pytest.raises(TransientBackendError, match="unreachable"):
        KfpApiBackend(url, request_timeout=1).get_run("x")


@pytest.mark.parametrize("kind", ["drop", "status"])
def test_failed_submit_is_not_retried_behind_the_callers_back(
    kfp_server, kfp_backend, tiny_spec, kind
):
    kfp_server.inject(kind, method="POST", path=r"/runs$", status=503)
    with pytest.raises(TransientBackendError):
        kfp_backend.submit(request_for(tiny_spec))
    posts = [
        r for r in kfp_server.requests() if r["method"] == "POST" and r["path"].endswith("/runs")
    ]
    assert len(posts) == 1
    assert kfp_server.runs() == []


# -- auth ---------------------------------------------------------------------------------
def test_static_token_is_sent_as_bearer(kfp_server, tiny_spec):
    kfp_server.require_token("kubeflow-sa-token")
    backend = KfpApiBackend(
        kfp_server.url, token_provider=static_token_provider("kubeflow-sa-token")
    )

    backend.submit(request_for(tiny_spec, experiment="e"))

    assert {r["authorization"] for r in kfp_server.requests()} == {"Bearer kubeflow-sa-token"}
    assert "kubeflow-sa-token" not in repr(backend)


def test_token_provider_is_asked_before_every_request(kfp_server, tiny_spec):
    issued = []

    def rotating() -> str:
        issued.append(f"token-{len(issued)}")
        return issued[-1]

    kfp_server.require_token(*(f"token-{i}" for i in range(10)))
    backend = KfpApiBackend(kfp_server.url, token_provider=rotating)
    run_id = backend.submit(request_for(tiny_spec)).run_id
    backend.get_run(run_id)
    backend.get_run(run_id)

    assert [r["authorization"] for r in kfp_server.requests()] == [f"Bearer {t}" for t in issued]
    assert len(issued) == 3


def test_missing_token_is_an_auth_error_without_leaking_tokens(kfp_server):
    kfp_server.require_token("secret-token-value")
    wrong = KfpApiBackend(kfp_server.url, token_provider=static_token_provider("wrong-token"))
    with pytest.raises(AuthError) as err:
        wrong.get_run("x")
    assert "wrong-token" not in str(err.value)
    assert "secret-token-value" not in str(err.value)
    with pytest.raises(AuthError, match="Jwt is missing"):
        KfpApiBackend(kfp_server.url).get_run("x")


def test_empty_static_token_is_refused():
    with pytest.raises(AuthError, match="password"):
        static_token_provider("")


# -- multi-user Kubeflow ------------------------------------------------------------------
def test_namespace_is_used_for_experiments_and_lists(kfp_server_multi_user, tiny_spec):
    server = kfp_server_multi_user
    team_a = KfpApiBackend(server.url, namespace="team-a", user="alice@example.com")
    team_b = KfpApiBackend(server.url, namespace="team-b", user="bob@example.com")

    run_a = team_a.submit(request_for(tiny_spec, name="daily", experiment="exp")).run_id
    run_b = team_b.submit(request_for(tiny_spec, name="daily", experiment="exp")).run_id
    default_a = team_a.submit(request_for(tiny_spec, name="no-experiment")).run_id

    assert sorted((e["display_name"], e["namespace"]) for e in server.stored("experiments")) == [
        ("Default", "team-a"),
        ("exp", "team-a"),
        ("exp", "team-b"),
    ]
    assert [s.run_id for s in team_a.find_runs("daily")] == [run_a]
    assert [s.run_id for s in team_b.find_runs("daily")] == [run_b]
    assert [s.run_id for s in team_a.find_runs("no-experiment")] == [default_a]
    lists = [r for r in server.requests() if r["method"] == "GET" and r["path"].endswith("/runs")]
    assert {r["query"].get("namespace") for r in lists} == {"team-a", "team-b"}
    assert {r["user"] for r in server.requests()} == {"alice@example.com", "bob@example.com"}


def test_multi_user_server_without_namespace_fails_clearly(kfp_server_multi_user):
    backend = KfpApiBackend(kfp_server_multi_user.url, user="alice@example.com")
    with pytest.raises(BackendError, match="namespace"):
        backend.find_runs("daily")


def test_multi_user_auth_errors_are_auth_errors(kfp_server_multi_user, tiny_spec):
    """apiserver/auth/: no identity or a rejected token is 401; a denied namespace is 403."""
    server = kfp_server_multi_user
    server.set_multi_user(
        tokens={"sa-token": ("system:serviceaccount:team-a:airflow", ["pipelines.kubeflow.org"])},
        access={"system:serviceaccount:team-a:airflow": ["team-a"], "bob@example.com": ["b"]},
    )
    anonymous = KfpApiBackend(server.url, namespace="team-a")
    with pytest.raises(AuthError, match="401"):
        anonymous.submit(request_for(tiny_spec, experiment="e"))
    bad_token = KfpApiBackend(
        server.url, namespace="team-a", token_provider=static_token_provider("stolen")
    )
    with pytest.raises(AuthError, match="401"):
        bad_token.find_runs("x")
    bob = KfpApiBackend(server.url, namespace="team-a", user="bob@example.com")
    with pytest.raises(AuthError, match="403"):
        bob.find_runs("x")
    robot = KfpApiBackend(
        server.url, namespace="team-a", token_provider=static_token_provider("sa-token")
    )
    run_id = robot.submit(request_for(tiny_spec, experiment="e")).run_id
    assert robot.get_run(run_id).run_id == run_id


def test_kfp_1x_server_is_named_not_a_missing_run(kfp_server, kfp_backend):
    kfp_server.set_server_version("1.8.5")
    for call in (
        lambda: kfp_backend.get_run("r1"),
        lambda: kfp_backend.cancel("r1"),
        kfp_backend.check,
        lambda: kfp_backend.find_runs("x"),
    ):
        with pytest.raises(ApiVersionError, match=r"no v2beta1 endpoints \(KFP < 2.0\?\)"):
            call()


# -- links and health ---------------------------------------------------------------------
def test_run_url_uses_ui_host_when_given():
    backend = KfpApiBackend("https://kfp.example.com/", ui_host="https://ui.example.com")
    assert backend.run_url("abc") == "https://ui.example.com/#/runs/details/abc"
    assert KfpApiBackend("kfp.example.com").run_url("abc") == (
        "https://kfp.example.com/#/runs/details/abc"
    )


def test_healthz_and_access_check(kfp_server, kfp_backend, kfp_server_multi_user):
    assert kfp_backend.healthz() == {  # the API server's own names (apiserver/main.go)
        "commit_sha": "unknown",
        "tag_name": "unknown",
        "multi_user": False,
        "pipeline_store": "database",
    }
    kfp_backend.check_access()
    multi = KfpApiBackend(kfp_server_multi_user.url, namespace="team-a", user="alice@example.com")
    assert multi.healthz()["multi_user"] is True  # healthz needs no identity (apiserver/main.go)
    multi.check_access()


# -- separate process ---------------------------------------------------------------------
def test_standin_in_a_separate_process(kfp_server_process, tiny_spec):
    control = kfp_server_process
    control.set_schedule(pending=0, running=1, outcome="FAILED", error="boom")
    backend = KfpApiBackend(control.url, request_timeout=2)

    run_id = backend.submit(request_for(tiny_spec, experiment="e")).run_id
    control.inject("status", status=503)
    with pytest.raises(TransientBackendError):
        backend.get_run(run_id)
    states = poll_until_terminal(backend, run_id)

    assert states[-1] is RunState.FAILED
    assert backend.get_run(run_id).error.splitlines()[0] == "task greet failed: boom"
    assert [r["run_id"] for r in control.runs()] == [run_id]
    control.delete_run(run_id)
    with pytest.raises(RunNotFoundError):
        backend.get_run(run_id)


def test_schedule_in_seconds_for_many_concurrent_runs(kfp_server, kfp_backend, tiny_spec):
    kfp_server.set_schedule(unit="seconds", pending=0, running=3600)
    long_run = kfp_backend.submit(request_for(tiny_spec, name="long")).run_id
    kfp_server.set_schedule(unit="seconds", pending=0, running=0, display_name="instant")
    instant = kfp_backend.submit(request_for(tiny_spec, name="instant")).run_id

    for _ in range(3):  # polls do not move a time-scheduled run
        assert kfp_backend.get_run(long_run).state is RunState.RUNNING
    assert kfp_backend.get_run(instant).state is RunState.SUCCEEDED
    kfp_backend.cancel(long_run)
    assert kfp_backend.get_run(long_run).state in (RunState.CANCELING, RunState.FAILED)


# -- the UI server as host (ml-pipeline-ui: AI Platform Pipelines proxy, Kubeflow /pipeline) --
# The plugin's kfp_api fixture with the ui-proxy profile, as a user's test would ask for it.
ui_proxy = pytest.mark.kfp_api(profile="ui-proxy")


@pytest.fixture
def ui_server(kfp_api):
    assert kfp_api.profile == "ui-proxy", "mark the test with @ui_proxy"
    return kfp_api.server


@pytest.fixture
def ui_backend(ui_server):
    backend = KfpApiBackend(ui_server.url, request_timeout=2.0)
    yield backend
    backend.close()


def _get(url: str) -> tuple[int, str, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_the_ui_server_answers_healthz_itself_and_the_bridge_reads_it():
    """frontend/server/app.ts registers healthz before the API proxy; handlers/healthz.ts
    answers HealthzStats, 200 with apiServerReady false when the API server did not answer."""
    with KfpApiStandIn(profile="ui-proxy", multi_user=True, server_version="2.5.0") as server:
        status, kind, text = _get(f"{server.url}/apis/v2beta1/healthz")
        assert status == 200 and kind.startswith("application/json")
        assert json.loads(text) == {
            "apiServerReady": True,
            "apiServerCommitHash": "unknown",
            "apiServerTagName": "2.5.0",
            "apiServerMultiUser": True,
            "multi_user": True,
            "buildDate": "",
            "frontendCommitHash": "",
            "frontendTagName": "2.5.0",
        }
        backend = KfpApiBackend(server.url, namespace="team-a", user="alice@example.com")
        assert backend.healthz() == {
            "commit_sha": "unknown",
            "tag_name": "2.5.0",
            "multi_user": True,
        }
        report = backend.check()  # the connection test, through the UI host
        assert report.startswith(f"KFP API at {server.url} is healthy (multi-user); UI server")
        assert "; KFP 2.5.0;" in report

        server.set_api_server_ready(False)
        status, _, text = _get(f"{server.url}/pipeline/apis/v2beta1/healthz")
        assert status == 200 and json.loads(text)["apiServerReady"] is False
        assert json.loads(text)["apiServerTagName"] == "2.5.0"  # the last success's fields
        with pytest.raises(TransientBackendError, match=r"UI server .*apiServerReady false"):
            backend.healthz()
        backend.close()


def _greet_pod(server: KfpApiStandIn, run_id: str) -> tuple[str, str]:
    """The ``greet`` task's executor node id (its child task's ``pod_name``) and real pod."""
    executor = next(
        c["pod_name"]
        for d in server.runs()[0]["run_details"]["task_details"]
        if d["display_name"] == "greet"
        for c in d["child_tasks"]
    )
    return executor, server.state.pod_names(run_id)[executor]


@ui_proxy
def test_ui_proxy_serves_pod_logs_by_argo_v2_pod_name_and_html_404_elsewhere(
    ui_server, ui_backend, tiny_spec
):
    run_id = ui_backend.submit(request_for(tiny_spec)).run_id
    poll_until_terminal(ui_backend, run_id)
    executor, pod = _greet_pod(ui_server, run_id)
    workflow, _, node_hash = executor.rpartition("-")
    assert pod == f"{workflow}-system-container-impl-{node_hash}" != executor

    status, kind, text = _get(f"{ui_server.url}/k8s/pod/logs?podname={pod}&runid={run_id}")
    assert status == 200 and "launcher_v2.go" in text
    status, _, text = _get(f"{ui_server.url}/k8s/pod/logs?podname={executor}&runid={run_id}")
    assert status == 500 and "not found" in text  # the node id is no pod name
    # app.ts (2.5.0-HEAD) has no index.html fallback: the static handlers fall through to
    # Express's 404 page, which names the requested URL (basePath and query included)
    for url in (
        f"/apis/v1alpha1/runs/{run_id}/nodes/{executor}/log",
        f"/pipeline/apis/v1alpha1/runs/{run_id}/nodes/{executor}/log?x=<b>",
        "/apis/v1/unknown",
    ):
        status, kind, text = _get(f"{ui_server.url}{url}")
        assert (status, kind) == (404, "text/html; charset=utf-8"), url
        assert f"<pre>Cannot GET {html.escape(url)}</pre>" in text
        assert "KFP_FLAGS" not in text  # not the UI's index.html


def test_a_multi_user_ui_server_wants_the_pod_namespace_and_the_bridge_says_so(tiny_spec):
    """pod-logs.ts (HEAD): with authorization on, no podnamespace is HTTP 422."""
    with KfpApiStandIn(profile="ui-proxy", multi_user=True) as server:
        server.set_schedule(pending=0, running=1, outcome="FAILED", error="ValueError: x")
        user = {"user": "alice@example.com", "request_timeout": 2.0}
        scoped = KfpApiBackend(server.url, namespace="team-a", **user)
        run_id = scoped.submit(request_for(tiny_spec)).run_id
        assert poll_until_terminal(scoped, run_id)[-1] is RunState.FAILED
        executor, pod = _greet_pod(server, run_id)
        status, _, text = _get(f"{server.url}/k8s/pod/logs?podname={pod}&runid={run_id}")
        assert (status, text) == (422, "podnamespace argument is required")
        assert "ValueError: x" in scoped.task_log_tail(run_id, executor)  # sends podnamespace
        bare = KfpApiBackend(server.url, **user)
        with pytest.raises(BackendError, match="set the connection's namespace") as err:
            bare.task_log_tail(run_id, executor)
        assert "HTTP 422: podnamespace argument is required" in str(err.value)
        scoped.close()
        bare.close()


@ui_proxy
def test_through_the_ui_proxy_failure_messages_keep_their_log_text(
    ui_server, ui_backend, tiny_spec
):
    ui_server.set_schedule(outcome="FAILED", error="ValueError: asked to fail")
    run_id = ui_backend.submit(request_for(tiny_spec)).run_id
    assert poll_until_terminal(ui_backend, run_id)[-1] is RunState.FAILED
    status = ui_backend.get_run(run_id)
    assert status.error.splitlines()[0] == "task greet failed: ValueError: asked to fail"
    assert "v2beta1" not in status.error
    paths = [r["path"] for r in ui_server.requests()]
    assert paths.count("/k8s/pod/logs") >= 2  # the v1alpha1 route was asked once only
    assert sum("/v1alpha1/" in p for p in paths) == 1


@ui_proxy
def test_through_the_ui_proxy_a_missing_log_is_said_plainly(ui_server, ui_backend, tiny_spec):
    ui_server.set_schedule(pending=0, running=1, outcome="FAILED")
    run_id = ui_backend.submit(request_for(tiny_spec)).run_id
    assert ui_backend.get_run(run_id).state is RunState.RUNNING
    ui_server.remove_task_logs(run_id)
    status = ui_backend.get_run(run_id)
    assert status.state is RunState.FAILED
    first = status.error.splitlines()[0]
    assert f"the log of task greet is not available through {ui_server.url}" in first
    assert "v2beta1" not in status.error and "KFP < 2.0" not in status.error
    assert status.url in first


@ui_proxy
def test_the_report_is_read_through_the_ui_proxy(ui_server, ui_backend, tiny_spec):
    from kfp_bridge import run_report

    run_id = ui_backend.submit(request_for(tiny_spec)).run_id
    poll_until_terminal(ui_backend, run_id)
    line = run_report.report_line("result", rows=3)
    ui_server.set_task_log(run_id, "greet", f"hello\n{line}\n")
    assert ui_backend.task_report(run_id, "greet").fields["rows"] == 3
    ui_server.remove_task_logs(run_id)
    with pytest.raises(BackendError, match="the log of task greet is not available through"):
        ui_backend.task_report(run_id, "greet")


@ui_proxy
def test_an_html_404_is_not_called_a_version_problem(ui_server, ui_backend):
    with pytest.raises(BackendError) as raised:
        ui_backend._call(
            "read something",
            ui_backend._api_client.call_api,
            "/apis/v2beta2/nothing",
            "GET",
            auth_settings=["Bearer"],
        )
    assert not isinstance(raised.value, ApiVersionError)
    assert "HTML page" in str(raised.value) and "KFP < 2.0" not in str(raised.value)


# -- permanent HTTP 500s ------------------------------------------------------------------
def test_a_500_naming_bad_input_is_permanent(kfp_server, kfp_backend, tiny_spec):
    """CreateRun wraps an invalid inline spec as internal (resource/resource_manager.go)."""
    with pytest.raises(BackendError, match="invalid pipeline spec manifest") as raised:
        kfp_backend.submit(request_for({"not": "a pipeline spec"}))
    assert not isinstance(raised.value, TransientBackendError)
    assert "retrying cannot help" in str(raised.value)
    assert kfp_server.runs() == []


# The messages as the API server builds them (Go format strings filled in; file at 2.14.0).
@pytest.mark.parametrize(
    "message",
    [
        # server/api_converter.go: an empty display name (the 400 check is never reached)
        "CreateJob(job.ToV2())Failed to create a run due to conversion error: "
        "InternalServerError: Failed to convert a API run detail to its internal "
        "representation: Invalid input error: Run name cannot be empty",
        # resource/resource_manager.go: CreateRun without a spec or a version
        "Failed to create a new run: InternalServerError: Failed to create a run due to error "
        "fetching manifest: Invalid input error: Failed to fetch a template with an empty "
        "pipeline spec manifest",
        # ... with an inline spec that is no pipeline spec (template/template.go)
        "Failed to create a new run: InternalServerError: Failed to create a run due to error "
        "fetching manifest: Failed to fetch a template with an invalid pipeline spec manifest: "
        "InvalidInputError: unknown template format: pipeline spec is invalid",
        # ... with a pipeline version that does not exist (storage/pipeline_store.go): a 500
        "Failed to create a new run: InternalServerError: Failed to create a run due to error "
        "fetching manifest: Failed to fetch a template due to error retrieving pipeline "
        "version: Failed to fetch a pipeline version and its manifest from pipeline version "
        "v-1: Failed to get a pipeline version with id v-1: ResourceNotFoundError: "
        "PipelineVersion v-1 not found",
        # storage/experiment_store.go up to 2.14: MySQL strict mode
        "Failed to create a experiment: InternalServerError: Failed to add experiment to "
        "experiment table: Error 1406 (22001): Data too long for column 'Name' at row 1",
        # validation/length.go from 2.15
        "[ExperimentServer]: Failed to create a experiment due to conversion error: "
        "InternalServerError: Failed to convert API experiment to model experiment: Invalid "
        "input error: Experiment.Name length cannot exceed 128",
        # template/v2_template.go: the compiler refuses the spec (ToGRPCError's default)
        "Internal error: unsupported platform spec\nFailed to compile job",
        # resource/resource_manager.go: Argo's validation
        "Failed to create a new run: InternalServerError: Failed to validate workflow for (): "
        "templates.entrypoint tasks.root name is invalid",
        # resource/resource_manager.go, multi-user: a legacy experiment without a namespace
        "Failed to create a new run: InternalServerError: Failed to fetch a namespace for "
        "experiment e-1 in multi-user mode: NotFoundError: Experiment's namespace was not "
        "found: Namespace is empty",
    ],
)
def test_500s_by_message_fail_at_once(kfp_server, kfp_backend, tiny_spec, message):
    kfp_server.inject("status", status=500, message=message, method="POST", path="/runs$")
    with pytest.raises(BackendError) as raised:
        kfp_backend.submit(request_for(tiny_spec))
    assert not isinstance(raised.value, TransientBackendError)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "message",
    [
        "Failed to create a new run: connection reset",
        # resource/resource_manager.go wraps Kubernetes' own errors, transient ones too
        "Failed to create a new run: InternalServerError: Failed to create a workflow for (): "
        "etcdserver: request timed out",
    ],
)
def test_a_plain_500_stays_transient(kfp_server, kfp_backend, tiny_spec, message):
    kfp_server.inject("status", status=500, message=message, method="POST", path="/runs$")
    with pytest.raises(TransientBackendError):
        kfp_backend.submit(request_for(tiny_spec))


def test_the_ui_proxy_profile_from_the_command_line():
    from kfp_bridge.testing.kfp_api.server import standin_process

    with standin_process(profile="ui-proxy") as control:
        backend = KfpApiBackend(control.url, request_timeout=5.0)
        assert backend.healthz()["multi_user"] is False  # proxied to the API server
        status, kind, _ = _get(f"{control.url}/apis/v1alpha1/runs/r/nodes/n/log")
        assert status == 404 and kind.startswith("text/html")
        status, _, text = _get(f"{control.url}/k8s/pod/logs")
        assert status == 400 and "podname" in text
        backend.close()

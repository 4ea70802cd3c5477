"""LocalBackend with real ``kfp.local`` runs of the tiny compiled pipeline (.venv-pipeline)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest

from kfp_bridge.backends.base import RunRequest, RunState
from kfp_bridge.backends.local import LocalBackend
from kfp_bridge.exceptions import BackendError, RunNotFoundError
from tests.bridge._helpers import (
    PIPELINE_PYTHON,
    process_group_alive,
    runner_pid,
    tiny_request,
    wait_for,
    wait_terminal,
)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("local-runs")


@pytest.fixture(scope="module")
def backend(state_dir) -> LocalBackend:
    return LocalBackend(state_dir, python=str(PIPELINE_PYTHON))


@pytest.fixture(scope="module")
def succeeded_run(backend):
    status = backend.submit(tiny_request("reattach-me", message="hi", repeat="2"))
    return wait_terminal(backend, status.run_id)


def test_submit_runs_the_pipeline_to_success(backend, succeeded_run, state_dir):
    assert succeeded_run.state is RunState.SUCCEEDED
    assert succeeded_run.error is None
    run_dir = state_dir / succeeded_run.run_id
    assert succeeded_run.url == (run_dir / "runner.log").as_uri()
    log = (run_dir / "runner.log").read_text()
    assert "SHOUT: HI HI" in log  # the parameters reached the components, coerced
    request = json.loads((run_dir / "request.json").read_text())
    assert request["parameters"] == {"message": "hi", "repeat": 2}
    assert (run_dir / "outputs").is_dir()


def test_local_pipeline_root_is_honoured(backend, tmp_path):
    request = tiny_request("rooted")
    request = dataclasses.replace(request, pipeline_root=str(tmp_path / "root"))
    final = wait_terminal(backend, backend.submit(request).run_id)
    assert final.state is RunState.SUCCEEDED
    assert (tmp_path / "root" / final.run_id).is_dir()


def test_another_process_finds_and_reattaches_by_name(state_dir, succeeded_run):
    other = LocalBackend(state_dir, python=str(PIPELINE_PYTHON))  # e.g. the retry's worker
    found = other.find_runs("reattach-me")
    assert [r.run_id for r in found] == [succeeded_run.run_id]
    assert other.get_run(succeeded_run.run_id).state is RunState.SUCCEEDED
    assert other.find_runs("reattach-me", experiment="another-experiment") == []
    assert other.find_runs("no-such-run") == []


def test_component_failure_surfaces_the_component_error(backend):
    status = backend.submit(tiny_request("fails", fail=True))
    final = wait_terminal(backend, status.run_id)
    assert final.state is RunState.FAILED
    first_line = final.error.splitlines()[0]
    assert first_line == (
        "Task 'greet' failed: ValueError: greet was asked to fail (message='hello')"
    )
    assert "Inner task failed: 'greet'" in final.error
    assert "\x1b[" not in final.error  # no terminal colour codes in Slack/Airflow logs


def test_cancel_kills_the_process_group_and_records_canceled(backend):
    status = backend.submit(tiny_request("cancel-me", sleep_seconds=120))
    wait_for(backend, status.run_id, lambda s: s.state is RunState.RUNNING)
    pgid = runner_pid(backend, status.run_id)
    backend.cancel(status.run_id)
    final = backend.get_run(status.run_id)
    assert final.state is RunState.CANCELED
    assert not process_group_alive(pgid)  # the sleeping component is gone too
    backend.cancel(status.run_id)  # idempotent
    assert backend.get_run(status.run_id).state is RunState.CANCELED


def test_runner_death_without_final_state_is_failed(backend):
    status = backend.submit(tiny_request("dies", sleep_seconds=120))
    wait_for(backend, status.run_id, lambda s: s.state is RunState.RUNNING)
    pid = runner_pid(backend, status.run_id)
    os.kill(pid, signal.SIGKILL)  # only the runner: e.g. OOM killer
    final = wait_for(backend, status.run_id, lambda s: s.state.is_terminal, timeout=30)
    assert final.state is RunState.FAILED
    assert f"local runner (pid {pid}) exited without recording a final state" in final.error
    assert not process_group_alive(pid)  # leftover component processes were stopped


def test_newest_run_first(backend):
    first = backend.submit(tiny_request("twice", fail=True))
    second = backend.submit(tiny_request("twice", fail=True))
    wait_terminal(backend, first.run_id)
    wait_terminal(backend, second.run_id)
    assert [r.run_id for r in backend.find_runs("twice")] == [second.run_id, first.run_id]


def test_unknown_run_is_not_found(backend):
    with pytest.raises(RunNotFoundError):
        backend.get_run("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFoundError):
        backend.cancel("../../etc")


def test_uploaded_pipeline_ids_are_refused(backend):
    request = RunRequest(display_name="x", pipeline_spec={}, pipeline_id="p-1")
    with pytest.raises(BackendError, match="pipeline_id"):
        backend.submit(request)


def test_missing_pipeline_interpreter_is_a_clear_error(state_dir):
    broken = LocalBackend(state_dir, python="/nonexistent/bin/python")
    with pytest.raises(BackendError, match="interpreter not found"):
        broken.submit(tiny_request("never"))

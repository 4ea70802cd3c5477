"""LocalBackend with real ``kfp.local`` runs of the tiny compiled pipeline (.venv-pipeline)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kfp_bridge.backends import _local_files
from kfp_bridge.backends import local as local_module
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


@pytest.mark.parametrize("kind", ["permanent", "retryable"])
def test_the_component_verdict_reaches_the_run_status_as_data(backend, kind):
    """The report the component prints before its traceback is parsed from the failed
    task's own output and handed on as ``failure``, with the task in ``failed_tasks``."""
    status = backend.submit(tiny_request(f"verdict-{kind}", failure=kind))
    final = wait_terminal(backend, status.run_id)
    assert final.state is RunState.FAILED
    assert [t.name for t in final.failed_tasks] == ["greet"]
    failure = final.failure
    assert failure is not None
    assert (failure.permanent, failure.error_type) == (kind == "permanent", "BadGreetingError")
    assert (failure.input, failure.message) == ("message", "cannot greet 'hello'")


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


def _task_wrapper(pgid: int, timeout: float = 60) -> int:
    """The ``sh -ec ... executor_main`` process kfp.local starts for the running task."""
    from kfp_bridge.backends._procfs import group_members

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in group_members(pgid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[:2] == [b"sh", b"-ec"] and b"executor_main" in b" ".join(argv):
                return pid
        time.sleep(0.1)
    raise AssertionError("no task wrapper appeared")


def test_a_task_whose_wrapper_dies_goes_down_with_the_run(backend, state_dir):
    """Killing kfp.local's wrapper left its Python child running (and publishing) unseen."""
    status = backend.submit(tiny_request("wrapper-killed", sleep_seconds=20))
    wait_for(backend, status.run_id, lambda s: s.state is RunState.RUNNING)
    pgid = runner_pid(backend, status.run_id)
    os.kill(_task_wrapper(pgid), signal.SIGKILL)
    final = wait_terminal(backend, status.run_id)
    assert final.state is RunState.FAILED
    deadline = time.monotonic() + 10  # the runner itself exits just after recording FAILED
    while process_group_alive(pgid):
        assert time.monotonic() < deadline, "processes of the failed run are still alive"
        time.sleep(0.1)
    log = (state_dir / status.run_id / "runner.log").read_text()
    assert "killed task process" in log and "its wrapper died" in log
    # the orphaned task never finished its work (it would have written its outputs)
    assert not list((state_dir / status.run_id).rglob("greet*/executor_output.json"))


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


def test_missing_pipeline_interpreter_is_a_clear_error(state_dir, tmp_path, monkeypatch):
    with pytest.raises(BackendError, match="python does not exist: /nonexistent/bin/python"):
        LocalBackend(state_dir, python="/nonexistent/bin/python")  # a chosen one: at once
    monkeypatch.setenv("KFP_BRIDGE_HOME", str(tmp_path))  # the default one: when needed
    default = LocalBackend(state_dir)
    for needs_python in (lambda: default.submit(tiny_request("never")), default.check):
        with pytest.raises(BackendError, match=r"does not exist: .*/\.venv-pipeline/bin/python"):
            needs_python()


def test_check_runs_the_pipeline_interpreter(backend):
    assert backend.check().startswith("local backend: kfp 2.")
    assert str(PIPELINE_PYTHON) in backend.check()


def test_runner_imports_the_kfp_sdk_not_a_bridge_module():
    """The runner is started by path, so its directory comes first on sys.path."""
    from kfp_bridge.backends.local import RUNNER_SCRIPT

    code = "import kfp, kfp.local, _local_files; print(kfp.__file__)"
    proc = subprocess.run(
        [str(PIPELINE_PYTHON), "-c", f"import sys; sys.path.insert(0, sys.argv[1]); {code}",
         str(RUNNER_SCRIPT.parent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "site-packages/kfp/" in proc.stdout, proc.stdout


# -- pid reuse, partial files, environment -------------------------------------------------


@pytest.fixture
def stranger():
    """An unrelated process leading its own session/group (like ``setsid sleep``)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _fake_live_run(state_dir, name: str, pid_info: dict, state: str = "RUNNING") -> str:
    """A run dir as submit leaves it, whose runner pid now belongs to someone else."""
    run_id = f"fake-{name}"
    run_dir = state_dir / run_id
    run_dir.mkdir()
    created = "2026-11-27T00:00:00+00:00"
    (run_dir / "state.json").write_text(json.dumps({"state": state, "created_at": created}))
    (run_dir / "request.json").write_text(
        json.dumps({"run_id": run_id, "display_name": name, "created_at": created})
    )
    (run_dir / "pid").write_text(json.dumps(pid_info))
    return run_id


def _start_time(pid: int) -> str:
    return (Path(f"/proc/{pid}/stat").read_text()).rsplit(")", 1)[1].split()[19]


def test_reused_runner_pid_is_a_dead_runner_and_never_signalled(backend, state_dir, stranger):
    not_ours = {"pid": stranger.pid, "start_time": str(int(_start_time(stranger.pid)) - 1)}
    run_id = _fake_live_run(state_dir, "pid-reused", not_ours)
    status = backend.get_run(run_id)  # must not stay RUNNING because the pid exists
    assert status.state is RunState.FAILED
    assert "exited without recording a final state" in status.error

    canceled_id = _fake_live_run(state_dir, "pid-reused-cancel", not_ours)
    backend.cancel(canceled_id)
    assert backend.get_run(canceled_id).state is RunState.CANCELED
    time.sleep(0.2)  # give a wrongly sent signal time to land
    assert stranger.poll() is None  # the unrelated process got no SIGTERM/SIGKILL


def test_a_dead_runners_end_is_written_only_once_its_processes_are_gone(
    backend, state_dir, monkeypatch
):
    """A step checks state.json without a lock, then publishes: so when the end is written,
    no process of the run may be left to publish behind it."""
    group = subprocess.Popen(["sh", "-c", "sleep 300 & exit 0"], start_new_session=True)
    group.wait()  # the "runner" (group leader) is gone, a "step" of its group lives on
    assert process_group_alive(group.pid)
    pid_info = {"pid": group.pid, "start_time": "1"}
    run_id = _fake_live_run(state_dir, "ends-after-its-processes", pid_info)
    written = []

    def write_state(run_dir, state):
        written.append((state["state"], process_group_alive(group.pid)))
        _local_files.write_state(run_dir, state)

    monkeypatch.setattr(local_module, "write_state", write_state)
    try:
        assert backend.read_run(run_id).state is RunState.FAILED  # inferred, not written
        assert written == [] and process_group_alive(group.pid)
        assert backend.get_run(run_id).state is RunState.FAILED  # the poll writes it down
        assert written == [("FAILED", False)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)


def test_find_runs_skips_run_dirs_being_written(backend, state_dir, succeeded_run):
    half = state_dir / "half-written"
    half.mkdir()
    (half / "request.json").write_text('{"run_id": "half-written", "display_na')
    no_state = state_dir / "no-state-yet"
    no_state.mkdir()
    (no_state / "request.json").write_text(
        json.dumps({"run_id": "no-state-yet", "display_name": "reattach-me"})
    )
    [found] = backend.find_runs("reattach-me")
    assert found.run_id == succeeded_run.run_id


def test_runner_and_components_do_not_see_airflow_secrets(backend, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KFP_PROD", '{"password": "s3cret-token"}')
    monkeypatch.setenv("AIRFLOW_VAR_SLACK_WEBHOOK", "https://hooks.example/s3cret")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://u:s3cret@db/airflow")
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "kept-project")
    status = backend.submit(tiny_request("env-check", sleep_seconds=60))
    pgid = runner_pid(backend, status.run_id)
    try:
        environs = wait_for_group_environs(pgid, at_least=2)  # runner + the greet component
    finally:
        backend.cancel(status.run_id)
    for environ in environs:
        names = {line.split("=", 1)[0] for line in environ.split("\0") if line}
        assert not {n for n in names if n.startswith(("AIRFLOW_", "_AIRFLOW"))}, names
        assert "s3cret" not in environ
        assert "GOOGLE_CLOUD_PROJECT" in names and "PATH" in names


def wait_for_group_environs(pgid: int, at_least: int, timeout: float = 120.0) -> list[str]:
    """``/proc/<pid>/environ`` of every live process in the group, once it has ``at_least``."""
    deadline = time.monotonic() + timeout
    while True:
        environs = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    environs.append((proc / "environ").read_bytes().decode(errors="replace"))
            except OSError:
                continue
        if len(environs) >= at_least:
            return environs
        assert time.monotonic() < deadline, f"group {pgid} never had {at_least} processes"
        time.sleep(0.2)

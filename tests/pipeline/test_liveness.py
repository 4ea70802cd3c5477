"""A step publishes only while its run is live, and takes no lock of the backend's.

The run directory is laid out as the bridge's local backend lays it out; the file names
are checked against ``kfp_bridge/backends/_local_files.py`` (stdlib only, loaded by path).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import threading
from pathlib import Path

import pytest
from kfp_prediction import liveness
from kfp_prediction.liveness import RunNotLiveError, publishing

REPO = Path(__file__).resolve().parents[2]


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A live run whose runner is this process."""
    (tmp_path / "state.json").write_text(json.dumps({"state": "RUNNING"}))
    pid = {"pid": os.getpid(), "start_time": _start_time(os.getpid())}
    (tmp_path / "pid").write_text(json.dumps(pid))
    monkeypatch.setenv(liveness.RUN_DIR_ENV, str(tmp_path))
    return tmp_path


def test_the_layout_is_the_bridges():
    path = REPO / "kfp_bridge" / "backends" / "_local_files.py"
    spec = importlib.util.spec_from_file_location("_local_files", path)
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)
    assert (liveness.RUN_DIR_ENV, liveness.STATE_FILE, liveness.PID_FILE) == (
        files.RUN_DIR_ENV, files.STATE_FILE, files.PID_FILE
    )  # fmt: skip


def test_a_live_run_publishes(run_dir: Path):
    with publishing("partition x"):
        published = True
    assert published


@pytest.mark.parametrize("state", ["FAILED", "CANCELED", "CANCELING", "SUCCEEDED"])
def test_a_run_reported_ended_does_not_publish(run_dir: Path, state: str):
    (run_dir / "state.json").write_text(json.dumps({"state": state}))
    with (
        pytest.raises(RunNotLiveError, match=f"not publishing partition x: the run is {state}"),
        publishing("partition x"),
    ):
        pytest.fail("published")


def test_a_run_whose_runner_is_gone_does_not_publish(run_dir: Path):
    (run_dir / "pid").write_text(json.dumps({"pid": os.getpid(), "start_time": "1"}))  # reused
    with (
        pytest.raises(RunNotLiveError, match=r"its runner \(pid \d+\) is gone"),
        publishing("partition x"),
    ):
        pytest.fail("published")


def test_an_orphaned_step_does_not_publish(run_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(liveness, "_PARENT", os.getppid() + 1)  # the wrapper that started it
    with pytest.raises(RunNotLiveError, match="parent process is gone"), publishing("partition x"):
        pytest.fail("published")


def test_a_publish_takes_no_lock_of_the_backends(run_dir: Path):
    """The backend's state lock held by someone else (the backend, the runner) does not
    hold a publish back: the step reads the state, it never locks it."""
    with open(run_dir / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        published = threading.Event()

        def publish():
            with publishing("partition x"):
                published.set()

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        assert published.wait(30), "the publish waited for the backend's lock"
        thread.join()


def test_without_the_variable_there_is_nothing_to_check(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(liveness.RUN_DIR_ENV, raising=False)
    with publishing("partition x"):
        pass

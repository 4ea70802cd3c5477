"""Run one compiled pipeline with ``kfp.local``; the process behind ``LocalBackend``.

Runs in the *pipeline* environment (``.venv-pipeline``), started by path:

    python _local_runner.py RUN_DIR

so it must import only the standard library and ``kfp`` (never ``kfp_bridge``,
which lives in the Airflow environment). ``RUN_DIR/request.json`` says what to
run; the runner records its progress in ``RUN_DIR/state.json`` (atomically,
under ``RUN_DIR/state.lock``) and its output goes to ``RUN_DIR/runner.log``
(the backend redirects stdout/stderr there). The file layout and the state
transitions are shared with ``kfp_bridge.backends.local``; keep them in step.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

# Started by path, Python puts this directory first on sys.path, where ``kfp.py`` (the
# bridge's KFP API backend) would shadow the kfp SDK. Drop it before importing kfp.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
LOG_FILE = "runner.log"
_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_ERROR_LINES = 40


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def _locked(run_dir: Path):
    with open(run_dir / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(run_dir: Path, state: dict) -> None:
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, run_dir / STATE_FILE)


def _transition(run_dir: Path, new_state: str, **fields) -> bool:
    """Move to ``new_state`` unless the run already ended or is being canceled."""
    with _locked(run_dir):
        current = _read_state(run_dir)
        if current.get("state") in _TERMINAL | {"CANCELING"}:
            return False
        current.update(fields, state=new_state, updated_at=_now())
        _write_state(run_dir, current)
        return True


def failing_task_error(log_text: str, summary: str) -> str:
    """The failing component's own error (the tail of its output) after kfp's summary.

    ``kfp.local`` prints each task's output indented, then
    ``Task 'NAME' finished with status FAILURE``; the traceback just before that
    line is what a person on call needs to see.
    """
    lines = _ANSI.sub("", log_text).splitlines()
    end = next(
        (
            i
            for i in range(len(lines) - 1, -1, -1)
            if "finished with status FAILURE" in lines[i] and "Task " in lines[i]
        ),
        None,
    )
    summary = _ANSI.sub("", summary).strip()
    if end is None:
        return summary
    start = next(
        (i for i in range(end - 1, -1, -1) if "Traceback (most recent call last)" in lines[i]),
        max(0, end - _MAX_ERROR_LINES),
    )
    block = [line[4:] if line.startswith("    ") else line for line in lines[start:end]]
    block = [line for line in block if line.strip()][-_MAX_ERROR_LINES:]
    last = block[-1].strip() if block else ""
    task = re.search(r"Task '([^']+)'", lines[end])
    head = f"Task {task.group(1)!r} failed: {last}" if task and last else summary
    return "\n".join([head, summary, *block]) if head != summary else "\n".join([summary, *block])


def _pipeline_root(request: dict, run_dir: Path) -> str:
    """A local ``pipeline_root`` is honoured; a remote one (gs://...) means RUN_DIR/outputs."""
    root = request.get("pipeline_root")
    if root and "://" not in root:
        return str(Path(root).expanduser() / request["run_id"])
    return str(run_dir / "outputs")


def main(run_dir_arg: str) -> int:
    run_dir = Path(run_dir_arg).resolve()
    request = json.loads((run_dir / "request.json").read_text())
    if not _transition(run_dir, "RUNNING", pid=os.getpid(), started_at=_now()):
        print("run was canceled before it started", flush=True)
        return 0
    print(
        f"[kfp-bridge local runner] run {request['run_id']} ({request['display_name']}) "
        f"pid {os.getpid()} started {_now()}",
        flush=True,
    )
    try:
        from kfp import components, local

        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=_pipeline_root(request, run_dir),
            workspace_root=str(run_dir / "workspace"),
            raise_on_error=True,
            enable_caching=bool(request.get("enable_caching") or False),
        )
        pipeline = components.load_component_from_file(request["pipeline_path"])
        task = pipeline(**request.get("parameters", {}))
        outputs = {}
        for name, value in (getattr(task, "outputs", None) or {}).items():
            outputs[name] = value if isinstance(value, str | int | float | bool) else repr(value)
        (run_dir / "outputs.json").write_text(json.dumps(outputs, indent=1))
    except BaseException as exc:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        summary = f"{type(exc).__name__}: {exc}"
        try:
            log_text = (run_dir / LOG_FILE).read_text(errors="replace")
        except OSError:
            log_text = ""
        error = failing_task_error(log_text, summary)
        _transition(run_dir, "FAILED", error=error, finished_at=_now())
        print(f"[kfp-bridge local runner] run FAILED {_now()}", flush=True)
        return 1
    _transition(run_dir, "SUCCEEDED", finished_at=_now())
    print(f"[kfp-bridge local runner] run SUCCEEDED {_now()}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: _local_runner.py RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))

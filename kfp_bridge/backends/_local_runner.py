"""Run one compiled pipeline with ``kfp.local``; the process behind ``LocalBackend``.

Runs in the *pipeline* environment (``.venv-pipeline``), started by path:

    python _local_runner.py RUN_DIR

so it imports only the standard library, ``kfp`` and its sibling ``_local_files``
(never ``kfp_bridge``, which lives in the Airflow environment). ``RUN_DIR/request.json``
says what to run; the runner records its progress in ``RUN_DIR/state.json``
(atomically, under ``RUN_DIR/state.lock``) and its output goes to ``RUN_DIR/runner.log``
(the backend redirects stdout/stderr there). The layout and the locking are
``_local_files``'s, shared with ``kfp_bridge.backends.local``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import suppress
from pathlib import Path

# Started by path (pipeline environment), this directory is first on sys.path and the
# shared layout module imports by its file name; nothing here is named like the kfp SDK.
if __package__:  # imported as kfp_bridge.backends._local_runner (the bridge's tests)
    from . import _kfp_local_log as kfp_log
    from . import _local_files as files
    from . import _procfs as procfs
else:
    import _kfp_local_log as kfp_log
    import _local_files as files
    import _procfs as procfs

_MAX_ERROR_LINES = 40
ORPHAN_CHECK_SECONDS = 0.5
# The report line a component prints for the bridge (kfp_bridge.run_report.PREFIX, same
# text: a test checks it); a failure report is kept whole in the run's error.
REPORT_PREFIX = "kfp-bridge-report:"


def _read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / files.STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _transition(run_dir: Path, new_state: str, **fields) -> bool:
    """Move to ``new_state`` unless the run already ended or is being canceled."""
    with files.locked(run_dir):
        current = _read_state(run_dir)
        if current.get("state") in files.TERMINAL_STATES | {"CANCELING"}:
            return False
        current.update(fields, state=new_state, updated_at=files.utcnow())
        files.write_state(run_dir, current)
        return True


def _last_failure(lines: list[str]) -> int | None:
    """Index of the last ``Task 'NAME' finished with status FAILURE`` line."""
    return next(
        (
            i
            for i in range(len(lines) - 1, -1, -1)
            if (kfp_log.task_finished(lines[i]) or ("", ""))[1] == "FAILURE"
        ),
        None,
    )


def failing_task(log_text: str) -> str | None:
    """The task ``kfp.local`` last saw fail, else None (the run failed around its tasks)."""
    lines = kfp_log.strip_ansi(log_text).splitlines()
    end = _last_failure(lines)
    return None if end is None else kfp_log.task_finished(lines[end])[0]  # type: ignore[index]


def failing_task_error(log_text: str, summary: str) -> str:
    """The failing component's own error (the tail of its output) after kfp's summary.

    ``kfp.local`` prints each task's output indented, then
    ``Task 'NAME' finished with status FAILURE``; the traceback just before that
    line is what a person on call needs to see. The last ``kfp-bridge-report:`` line
    the component printed (its failure report: permanent or not) comes second, whole.
    """
    lines = kfp_log.strip_ansi(log_text).splitlines()
    end = _last_failure(lines)
    summary = kfp_log.strip_ansi(summary).strip()
    if end is None:
        return summary
    start = next(
        (i for i in range(end - 1, -1, -1) if "Traceback (most recent call last)" in lines[i]),
        max(0, end - _MAX_ERROR_LINES),
    )
    block = [line[4:] if line.startswith("    ") else line for line in lines[start:end]]
    block = [line for line in block if line.strip()][-_MAX_ERROR_LINES:]
    # the error's own last line (a failure report after the traceback is not it)
    last = next((ln.strip() for ln in reversed(block) if REPORT_PREFIX not in ln), "")
    task = kfp_log.task_finished(lines[end])[0]  # type: ignore[index]  # end: such a line
    head = f"Task {task!r} failed: {last}" if last else summary
    # The component's own verdict (printed before its traceback), kept whole for the bridge.
    marker = next((ln.strip() for ln in reversed(lines[:end]) if REPORT_PREFIX in ln), None)
    verdict = [marker] if marker and marker not in block else []
    first = [head, summary] if head != summary else [summary]
    return "\n".join([first[0], *verdict, *first[1:], *block])


def _pipeline_root(request: dict, run_dir: Path) -> str:
    """A local ``pipeline_root`` is honoured; a remote one (gs://...) means RUN_DIR/outputs."""
    root = request.get("pipeline_root")
    if root and "://" not in root:
        return str(Path(root).expanduser() / request["run_id"])
    return str(run_dir / "outputs")


def _stop_strays(pgid: int, only_orphans: bool) -> list[int]:
    """SIGKILL processes of this run's group other than the runner; the pids it killed.

    ``only_orphans``: only those whose parent is outside the group, i.e. a task process
    whose wrapper (``sh -ec ... executor_main``) died: it would go on, unseen, and
    could publish after the run is reported failed. Its death closes the pipe kfp.local
    reads, so kfp.local then sees the task fail.
    """
    members = procfs.group_members(pgid)
    killed = []
    for pid, parent in members.items():
        if pid == os.getpid() or (only_orphans and parent in members):
            continue
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _wait_alone(pgid: int, within: float = 5.0) -> None:
    """Until this runner is the last live process of its group (SIGKILL takes a moment)."""
    deadline = time.monotonic() + within
    while set(procfs.group_members(pgid)) - {os.getpid()} and time.monotonic() < deadline:
        time.sleep(0.05)


def _watch_for_orphans(stop: threading.Event) -> None:
    pgid = os.getpgrp()
    while not stop.wait(ORPHAN_CHECK_SECONDS):
        for pid in _stop_strays(pgid, only_orphans=True):
            print(
                f"[kfp-bridge local runner] killed task process {pid}: its wrapper died",
                flush=True,
            )


def main(run_dir_arg: str) -> int:
    run_dir = Path(run_dir_arg).resolve()
    request = json.loads((run_dir / files.REQUEST_FILE).read_text())
    if not _transition(run_dir, "RUNNING", pid=os.getpid(), started_at=files.utcnow()):
        print("run was canceled before it started", flush=True)
        return 0
    print(
        f"[kfp-bridge local runner] run {request['run_id']} ({request['display_name']}) "
        f"pid {os.getpid()} started {files.utcnow()}",
        flush=True,
    )
    # The pipeline's processes find the run (and whether it is still live) through this.
    os.environ[files.RUN_DIR_ENV] = str(run_dir)
    stop_watching = threading.Event()
    threading.Thread(target=_watch_for_orphans, args=(stop_watching,), daemon=True).start()
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
        (run_dir / files.OUTPUTS_FILE).write_text(json.dumps(outputs, indent=1))
    except BaseException as exc:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        summary = f"{type(exc).__name__}: {exc}"
        try:
            log_text = (run_dir / files.LOG_FILE).read_text(errors="replace")
        except OSError:
            log_text = ""
        error = failing_task_error(log_text, summary)
        stop_watching.set()
        # Nothing of this run may go on (and publish) behind the report: stop it first.
        _stop_strays(os.getpgrp(), only_orphans=False)
        _wait_alone(os.getpgrp())
        # the failed task by name (data): the backend reads its output for the verdict
        _transition(
            run_dir,
            "FAILED",
            error=error,
            failed_task=failing_task(log_text),
            finished_at=files.utcnow(),
        )
        print(f"[kfp-bridge local runner] run FAILED {files.utcnow()}", flush=True)
        return 1
    _transition(run_dir, "SUCCEEDED", finished_at=files.utcnow())
    print(f"[kfp-bridge local runner] run SUCCEEDED {files.utcnow()}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: _local_runner.py RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))

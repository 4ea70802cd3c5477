"""Local backend: run the compiled pipeline with ``kfp.local`` in the pipeline environment.

Each run is a detached process (its own session and process group) running
``_local_runner.py`` with the pipeline environment's interpreter. Everything
about a run lives under ``state_dir/<run_id>/``:

- ``request.json``  what to run (display name, experiment, parameters, ...)
- ``pipeline.yaml`` the compiled pipeline as submitted (a copy)
- ``state.json``    the run state, replaced atomically under ``state.lock`` (taken by
                    the backend and the runner only)
- ``pid``           runner pid and start time (guards against pid reuse)
- ``runner.log``    runner and component output
- ``outputs/``      the pipeline root (artifacts), unless the request names a local
                    ``pipeline_root`` (then ``<pipeline_root>/<run_id>``); remote roots
                    (gs://...) are ignored here. ``outputs.json``: the pipeline outputs

So submit / get_run / find_runs / cancel work from any process on the machine,
e.g. a retry of the Airflow task reattaches to a run a dead worker started.

An end (FAILED, CANCELED) is written to ``state.json`` only once the run's process
group is gone, by the runner and by the backend alike: a step that checks ``state.json``
and then publishes (``os.replace``) cannot publish after its run was reported ended,
without taking any lock of ours.

The run URL is the run's page on the Airflow api-server (``run_page``, served by
the project's plugin; see ``kfp_bridge.ui``): Airflow's UI draws only http(s)
links, and browsers refuse ``file://`` links from an http page. Without a page
(the backend used outside Airflow) it is a ``file://`` URL of ``runner.log``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from kfp_bridge import run_report
from kfp_bridge.backends import _procfs as procfs
from kfp_bridge.backends._kfp_local_log import task_output
from kfp_bridge.backends._local_files import (
    LOG_FILE,
    PID_FILE,
    REQUEST_FILE,
    STATE_FILE,
    atomic_write,
    locked,
    utcnow,
    write_state,
)
from kfp_bridge.backends.base import Backend, FailedTask, RunRequest, RunState, RunStatus
from kfp_bridge.exceptions import BackendConfigError, BackendError, RunNotFoundError
from kfp_bridge.failures import Failure, parse_failure

log = logging.getLogger(__name__)

RUNNER_SCRIPT = Path(__file__).with_name("_local_runner.py")
# A runner that has not written its pid this long after submit is considered lost.
START_GRACE_SECONDS = 60.0
CANCEL_GRACE_SECONDS = 5.0
KILL_WAIT_SECONDS = 5.0  # SIGKILLed processes are gone well within this
_AIRFLOW_SIDE_ENV = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
# Airflow's own settings and secrets (AIRFLOW_CONN_* tokens, AIRFLOW_VAR_*, AIRFLOW__*
# DB URL and keys, _AIRFLOW_* internals): components run pipeline code and must not see them.
_AIRFLOW_ENV_PREFIXES = ("AIRFLOW_", "_AIRFLOW")


_NEVER_STARTED = "the local runner never started"


def _runner_died(pid: int, run_dir: Path) -> str:
    return (
        f"the local runner (pid {pid}) exited without recording a final "
        f"state (killed, or out of memory?); see {run_dir / LOG_FILE}"
    )


def default_pipeline_python() -> str:
    """``.venv-pipeline/bin/python`` under ``$KFP_BRIDGE_HOME`` or the current directory."""
    home = Path(os.environ.get("KFP_BRIDGE_HOME") or os.getcwd())
    return str(home / ".venv-pipeline" / "bin" / "python")


def _runner_env() -> dict[str, str]:
    """The caller's environment minus Airflow's secrets and what would mix the two venvs.

    PATH, HOME, KFP_BRIDGE_HOME, GOOGLE_*, proxies and locale pass through.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _AIRFLOW_SIDE_ENV and not k.upper().startswith(_AIRFLOW_ENV_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _process_alive(pid: int, start_time: str | None) -> bool:
    """True while ``pid`` runs and, when ``start_time`` is given, is that same process.

    A pid reused by an unrelated process (start time differs) counts as dead, even
    when it belongs to another user.
    """
    with suppress(ChildProcessError):  # reap our own finished child (no zombie)
        os.waitpid(pid, os.WNOHANG)
    fields = procfs.stat_fields(pid)
    if fields is not None:
        if fields[procfs.STATE] in ("Z", "X"):
            return False
        return start_time is None or fields[procfs.START_TIME] == start_time
    if procfs.HAVE_PROC:
        return False  # Linux, and the pid has no /proc entry: gone
    try:
        os.kill(pid, 0)  # not Linux: kill(0) is all we have
    except ProcessLookupError:
        return False
    except PermissionError:
        return start_time is None
    return True


def group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process is in process group ``pgid`` (Linux)."""
    return bool(procfs.group_members(pgid))


class LocalBackend(Backend):
    """Runs compiled pipelines with ``kfp.local`` (SubprocessRunner) as detached processes."""

    name = "local"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        python: str | None = None,
        run_page: Callable[[str], str] | None = None,
    ) -> None:
        """``run_page``: run id -> URL of its page (the hook passes the plugin's page)."""
        self.state_dir = Path(state_dir).expanduser().resolve()
        # absolute, not resolved: the venv interpreter is a symlink that must stay one
        self.python = os.path.abspath(python or default_pipeline_python())
        self.run_page = run_page
        if python:  # a chosen interpreter is checked now; the default one when it is needed
            self._require_python()

    def _require_python(self) -> None:
        if not Path(self.python).exists():
            raise BackendConfigError(
                "python",
                f"does not exist: {self.python} (the pipeline environment's interpreter; "
                "`make setup` creates .venv-pipeline under KFP_BRIDGE_HOME)",
            )

    # -- Backend ---------------------------------------------------------------------------

    def check(self) -> str:
        """The pipeline interpreter runs and imports the kfp SDK (what every run needs)."""
        self._require_python()
        try:
            proc = subprocess.run(
                [self.python, "-c", "import kfp; print(kfp.__version__)"],
                capture_output=True,
                text=True,
                timeout=120,
                env=_runner_env(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"pipeline interpreter {self.python} did not run: {exc}") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendError(f"pipeline interpreter {self.python} cannot import kfp: {last}")
        return (
            f"local backend: kfp {proc.stdout.strip()} in {self.python}, runs in {self.state_dir}"
        )

    def submit(self, request: RunRequest) -> RunStatus:
        if request.pipeline_id or request.pipeline_version_id:
            raise BackendError(
                "the local backend runs a compiled pipeline file; "
                "pipeline_id/pipeline_version_id need the kfp or vertex backend"
            )
        self._require_python()
        run_id = str(uuid.uuid4())
        run_dir = self.state_dir / run_id
        run_dir.mkdir(parents=True)
        pipeline_file = run_dir / "pipeline.yaml"
        if request.pipeline_path:
            shutil.copyfile(request.pipeline_path, pipeline_file)
        else:
            docs = [dict(request.pipeline_spec)]
            if request.platform_spec:
                docs.append(dict(request.platform_spec))
            pipeline_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        created_at = utcnow()
        try:
            payload = {
                "run_id": run_id,
                "display_name": request.display_name,
                "experiment": request.experiment,
                "parameters": dict(request.parameters),
                "pipeline_path": str(pipeline_file),
                "pipeline_root": request.pipeline_root,
                "enable_caching": request.enable_caching,
                "labels": dict(request.labels),
                "created_at": created_at,
            }
            request_text = json.dumps(payload, indent=1)
        except TypeError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise BackendError(f"run parameters are not JSON-serializable: {exc}") from exc
        write_state(run_dir, {"state": "PENDING", "created_at": created_at})
        # request.json last: it is what find_runs / _run_dir look for
        atomic_write(run_dir / REQUEST_FILE, request_text)
        with open(run_dir / LOG_FILE, "ab") as log:
            process = subprocess.Popen(
                [self.python, str(RUNNER_SCRIPT), str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(run_dir),
                start_new_session=True,  # own process group: cancel kills the whole run
                close_fds=True,
                env=_runner_env(),
            )
        pid_info = {"pid": process.pid, "start_time": procfs.start_time(process.pid)}
        atomic_write(run_dir / PID_FILE, json.dumps(pid_info))
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunStatus:
        """:meth:`read_run`; a runner found dead is then recorded and its leftovers stopped.

        The poll of whoever waits on the run (operator, trigger) settles it; a page
        that only shows the run reads it with :meth:`read_run`.
        """
        status, runner_dead = self._read(run_id)
        if runner_dead:
            self._record_dead_runner(self._run_dir(run_id))
            status, _ = self._read(run_id)
        return status

    def read_run(self, run_id: str) -> RunStatus:
        """The run as its files say, without side effects: nothing written, nothing signalled.

        A runner that died without a final state makes the run FAILED (CANCELED when it
        was being canceled) in what is returned; :meth:`get_run` writes that down.
        """
        return self._read(run_id)[0]

    def _read(self, run_id: str) -> tuple[RunStatus, bool]:
        """The run's status, and whether its end was inferred from a dead runner."""
        run_dir = self._run_dir(run_id)
        request = self._read_json(run_dir / REQUEST_FILE)
        state = self._read_json(run_dir / STATE_FILE)
        current = state.get("state", "PENDING")
        error, reason = state.get("error"), None
        if current in ("PENDING", "RUNNING", "CANCELING"):
            reason = self._dead_runner(run_dir, state)
            if reason is not None:
                current, error = ("CANCELED" if current == "CANCELING" else "FAILED"), reason
        failed_task = state.get("failed_task") if current == "FAILED" else None
        status = RunStatus(
            run_id=run_id,
            display_name=request.get("display_name", ""),
            state=RunState(current),
            url=self.run_url(run_id),
            error=error,
            created_at=request.get("created_at"),
            parameters=request.get("parameters"),
            failed_tasks=(FailedTask(failed_task),) if failed_task else (),
            failure=self._failure(run_dir, failed_task) if failed_task else None,
        )
        return status, reason is not None

    def find_runs(self, display_name: str, experiment: str | None = None) -> list[RunStatus]:
        if not self.state_dir.is_dir():
            return []
        matches: list[tuple[str, str]] = []
        for request_file in self.state_dir.glob(f"*/{REQUEST_FILE}"):
            try:
                request = self._read_json(request_file)
            except (BackendError, OSError) as exc:  # being written or removed: not a run yet
                log.debug("Skipping local run dir %s: %s", request_file.parent, exc)
                continue
            if request.get("display_name") != display_name:
                continue
            if experiment is not None and request.get("experiment") != experiment:
                continue
            matches.append((request.get("created_at", ""), request_file.parent.name))
        matches.sort(reverse=True)
        runs = []
        for _, run_id in matches:
            try:
                runs.append(self.get_run(run_id))
            except (BackendError, OSError) as exc:
                log.debug("Skipping local run %s: %s", run_id, exc)
        return runs

    def cancel(self, run_id: str) -> None:
        run_dir = self._run_dir(run_id)
        with locked(run_dir):
            state = self._read_json(run_dir / STATE_FILE, missing_ok=True)
            if RunState(state.get("state", "PENDING")).is_terminal:
                return
            state.update(state="CANCELING", updated_at=utcnow())
            write_state(run_dir, state)
        pid_info = self._read_json(run_dir / PID_FILE, missing_ok=True)
        if pid_info:
            self._stop_process_group(pid_info["pid"], pid_info.get("start_time"))
        with locked(run_dir):
            state = self._read_json(run_dir / STATE_FILE, missing_ok=True)
            if state.get("state") == "CANCELING":
                state.update(state="CANCELED", error="canceled", finished_at=utcnow())
                write_state(run_dir, state)

    def run_url(self, run_id: str) -> str | None:
        if self.run_page is not None:
            return self.run_page(run_id)
        return (self.state_dir / run_id / LOG_FILE).as_uri()

    def task_report(
        self, run_id: str, task: str, kind: str = "result"
    ) -> run_report.RunReport | None:
        """The task's last report in the runner log (kfp.local streams each task's output there)."""
        log_file = self._run_dir(run_id) / LOG_FILE
        try:
            text = log_file.read_text(errors="replace")
        except OSError as exc:
            raise BackendError(f"cannot read {log_file}: {exc}") from exc
        return run_report.last_report("\n".join(task_output(text, task)), kind)

    # -- helpers ---------------------------------------------------------------------------

    def _run_dir(self, run_id: str) -> Path:
        run_dir = self.state_dir / run_id
        if "/" in run_id or run_id in ("", ".", "..") or not (run_dir / REQUEST_FILE).is_file():
            raise RunNotFoundError(f"local run {run_id!r} not found under {self.state_dir}")
        return run_dir

    def _dead_runner(self, run_dir: Path, state: dict[str, Any]) -> str | None:
        """Why the runner of an active run is known dead (it left no final state), else None."""
        pid_info = self._read_json(run_dir / PID_FILE, missing_ok=True)
        if not pid_info:
            created = state.get("created_at")
            age = time.time() - datetime.fromisoformat(created).timestamp() if created else 0
            return _NEVER_STARTED if age >= START_GRACE_SECONDS else None
        if _process_alive(pid_info["pid"], pid_info.get("start_time")):
            return None
        return _runner_died(pid_info["pid"], run_dir)

    def _record_dead_runner(self, run_dir: Path) -> None:
        """Write down the end :meth:`read_run` inferred; stop what is left of the run's group."""
        pid_info = self._read_json(run_dir / PID_FILE, missing_ok=True)
        with locked(run_dir):
            state = self._read_json(run_dir / STATE_FILE, missing_ok=True)
            current = state.get("state", "PENDING")
            if current not in ("PENDING", "RUNNING", "CANCELING"):
                return
            reason = self._dead_runner(run_dir, state)
            if reason is None:
                return
            if pid_info:  # leftover component processes of the dead runner's group, first:
                # once the end is written down, nothing of the run may still publish
                self._stop_process_group(pid_info["pid"], pid_info.get("start_time"), grace=0)
            final = "CANCELED" if current == "CANCELING" else "FAILED"
            state.update(state=final, error=reason, finished_at=utcnow())
            write_state(run_dir, state)

    def _failure(self, run_dir: Path, task: str) -> Failure | None:
        """The failed task's verdict, from its own output in the runner log."""
        try:
            text = (run_dir / LOG_FILE).read_text(errors="replace")
        except OSError:
            return None
        return parse_failure("\n".join(task_output(text, task)))

    @staticmethod
    def _group_is_ours(pid: int, start_time: str | None) -> bool:
        """Whether process group ``pid`` is verifiably our runner's.

        Yes when its leader is our runner (pid and start time match). When the runner
        is gone, the group may still hold its component processes: the kernel does not
        hand out a pid while it names a live process group, so a group ``pid`` with
        members but no process ``pid`` is still ours. A live process ``pid`` with another
        start time is a stranger that reused the pid: never signal its group.
        """
        if not procfs.HAVE_PROC:  # pragma: no cover - not Linux: kill(0) is all we have
            return _process_alive(pid, start_time)
        if start_time is None:
            return False  # nothing to verify against
        with suppress(ChildProcessError):  # reap our own finished runner
            os.waitpid(pid, os.WNOHANG)
        fields = procfs.stat_fields(pid)
        if fields is not None:  # alive or a zombie: ours only if the start time matches
            return fields[procfs.START_TIME] == start_time
        return group_alive(pid)

    @classmethod
    def _stop_process_group(
        cls, pid: int, start_time: str | None, grace: float = CANCEL_GRACE_SECONDS
    ) -> None:
        if not cls._group_is_ours(pid, start_time):
            log.debug("Not signalling process group %s: its leader is not our runner", pid)
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.05)
        if cls._group_is_ours(pid, start_time):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT_SECONDS  # gone before the end is recorded
            while group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    @staticmethod
    def _read_json(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise RunNotFoundError(f"{path} is missing") from None
        except ValueError as exc:
            raise BackendError(f"{path} is not valid JSON: {exc}") from exc


__all__ = ["LocalBackend", "default_pipeline_python", "group_alive", "task_output"]

if sys.platform == "win32":  # pragma: no cover
    raise ImportError("kfp_bridge.backends.local needs a POSIX system (process groups, flock)")

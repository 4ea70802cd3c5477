"""Read-only view of the local backend's runs, for the run page.

Reads only what ``kfp_bridge.backends.local`` and its runner write under
``<state dir>/<run id>/``: ``request.json`` (name, parameters, labels),
``state.json`` (through ``LocalBackend.read_run``, which infers a dead runner's end
without writing it down or signalling anything: a page view has no side effects),
``runner.log`` and the pipeline root ``outputs/``, where ``kfp.local``
writes one ``executor_output.json`` per finished step (output parameters,
artifact metadata such as the Metrics a component logs).

A run id comes from a URL, so it is checked before any file is touched: it must
be a run id the backend makes (a UUID), its folder must be a real folder right
under the state dir (no symlink), and every file is opened with ``O_NOFOLLOW``
under that folder. A crafted id (``..``, an absolute path, a symlink) is
:class:`RunNotFound`, never a read outside the runs folder.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kfp_bridge.backends._kfp_local_log import strip_ansi, task_finished, task_started
from kfp_bridge.backends.local import LOG_FILE, LocalBackend
from kfp_bridge.exceptions import BackendError, RunNotFoundError
from kfp_bridge.redaction import airflow_redact, redact_data

# The backend names runs str(uuid.uuid4()) (LocalBackend.submit).
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LOG_TAIL_BYTES = 64 * 1024
LOG_TAIL_LINES = 200
MAX_JSON_BYTES = 1024 * 1024


class RunNotFound(LookupError):
    """No readable local run by that id in this runs folder (or the id is not one)."""


@dataclass(frozen=True)
class Step:
    """One pipeline step (a task of the pipeline's root DAG) as the run reports it."""

    name: str
    state: str
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    state: str
    dag_id: str | None
    created_at: str | None
    # the run's parameters, secrets hidden (the list shows them: which run is which date)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunView(RunSummary):
    task_id: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""
    log_truncated: bool = False


def run_dir(state_dir: Path, run_id: str) -> Path:
    """The folder of ``run_id``, checked to be a real run folder right under ``state_dir``."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RunNotFound(f"{run_id!r} is not a local run id")
    root = Path(state_dir).resolve()
    folder = root / run_id
    if folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != root:
        raise RunNotFound(f"local run {run_id} not found")
    return folder


def _open_inside(folder: Path, relative: str) -> Any | None:
    """Binary handle on a regular file under ``folder``, or None.

    No symlink anywhere below ``folder``: the directories on the way must resolve
    to themselves and the file is opened with ``O_NOFOLLOW``.
    """
    path = folder / relative
    try:
        if path.parent.resolve() != path.parent:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        return None
    return handle


def _read_bytes(folder: Path, relative: str, *, limit: int) -> bytes | None:
    handle = _open_inside(folder, relative)
    if handle is None:
        return None
    with handle:
        return handle.read(limit)


def _read_json(folder: Path, relative: str) -> dict[str, Any]:
    data = _read_bytes(folder, relative, limit=MAX_JSON_BYTES)
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def log_tail(folder: Path) -> tuple[str, bool]:
    """The last lines of ``runner.log`` (bounded), without colour codes; and whether cut."""
    handle = _open_inside(folder, LOG_FILE)
    if handle is None:
        return "", False
    with handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        data = handle.read(LOG_TAIL_BYTES)
    lines = strip_ansi(data.decode("utf-8", errors="replace")).splitlines()
    truncated = size > LOG_TAIL_BYTES
    if truncated and lines:
        lines = lines[1:]  # the first line is cut somewhere in the middle
    if len(lines) > LOG_TAIL_LINES:
        lines, truncated = lines[-LOG_TAIL_LINES:], True
    return airflow_redact("\n".join(lines)), truncated


def _step_progress(folder: Path) -> tuple[set[str], dict[str, str]]:
    """Steps kfp.local started, and how each finished, from its lines in ``runner.log``."""
    started: set[str] = set()
    finished: dict[str, str] = {}
    handle = _open_inside(folder, LOG_FILE)
    if handle is None:
        return started, finished
    with handle:
        for raw in handle:
            if b"task" not in raw and b"Task" not in raw:
                continue
            line = raw.decode("utf-8", errors="replace")
            if name := task_started(line):
                started.add(name)
            elif ended := task_finished(line):
                finished[ended[0]] = ended[1]
    return started, finished


def _pipeline_steps(folder: Path) -> list[str]:
    """Task names of the pipeline's root DAG, from the compiled pipeline the run was given."""
    data = _read_bytes(folder, "pipeline.yaml", limit=8 * MAX_JSON_BYTES)
    if not data:
        return []
    try:
        spec = next(iter(yaml.safe_load_all(data)), None) or {}
    except yaml.YAMLError:
        return []
    tasks = ((spec.get("root") or {}).get("dag") or {}).get("tasks") or {}
    return list(tasks) if isinstance(tasks, dict) else []


def _executor_outputs(folder: Path) -> dict[str, dict[str, Any]]:
    """``executor_output.json`` per step name under ``outputs/<pipeline run>/<step>/``."""
    found: dict[str, dict[str, Any]] = {}
    outputs = folder / "outputs"
    if outputs.is_symlink() or not outputs.is_dir():
        return found
    for pipeline_run in sorted(outputs.iterdir()):
        if pipeline_run.is_symlink() or not pipeline_run.is_dir():
            continue
        for step in sorted(pipeline_run.iterdir()):
            if step.is_symlink() or not step.is_dir():
                continue
            relative = f"outputs/{pipeline_run.name}/{step.name}/executor_output.json"
            data = _read_json(folder, relative)
            if data:
                found[step.name] = data
    return found


def whole_numbers(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with whole floats as ints: KFP stores every number as a float
    (protobuf ``Value``, Metrics metadata), so a count of 10000 arrives as 10000.0."""
    return {
        name: int(v) if isinstance(v, float) and v.is_integer() else v for name, v in values.items()
    }


def _step_metrics(executor_output: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for artifact_list in (executor_output.get("artifacts") or {}).values():
        for artifact in (artifact_list or {}).get("artifacts") or []:
            metadata = artifact.get("metadata") or {}
            if isinstance(metadata, dict):
                metrics.update(metadata)
    return whole_numbers(metrics)


def _steps(folder: Path, run_state: str) -> list[Step]:
    started, finished = _step_progress(folder)
    executor_outputs = _executor_outputs(folder)
    names = _pipeline_steps(folder)
    names += [n for n in [*started, *executor_outputs] if n not in names]
    steps = []
    for name in names:
        if finished.get(name) == "SUCCESS" or (name in executor_outputs and name not in finished):
            state = "SUCCEEDED"
        elif finished.get(name) == "FAILURE":
            state = "FAILED"
        elif name in started:
            state = "RUNNING" if run_state in ("PENDING", "RUNNING") else run_state
        else:
            state = "PENDING" if run_state in ("PENDING", "RUNNING") else "NOT RUN"
        output = executor_outputs.get(name, {})
        steps.append(
            Step(
                name=name,
                state=state,
                outputs=whole_numbers(dict(output.get("parameterValues") or {})),
                metrics=_step_metrics(output),
            )
        )
    return steps


def run_dag_id(backend: LocalBackend, run_id: str) -> str | None:
    """The Airflow DAG of ``run_id`` (its ``airflow-dag-id`` label), reading only its request.

    The page asks whether the user may read that DAG before it reads anything else.
    """
    request = _read_json(run_dir(backend.state_dir, run_id), "request.json")
    if not request:
        raise RunNotFound(f"local run {run_id} has no request.json")
    return (request.get("labels") or {}).get("airflow-dag-id")


def _summary(backend: LocalBackend, run_id: str) -> tuple[RunSummary, dict[str, Any], Path]:
    folder = run_dir(backend.state_dir, run_id)
    request = _read_json(folder, "request.json")
    if not request:
        raise RunNotFound(f"local run {run_id} has no request.json")
    try:
        status = backend.read_run(run_id)
    except (RunNotFoundError, BackendError) as exc:
        raise RunNotFound(str(exc)) from exc
    labels = request.get("labels") or {}
    summary = RunSummary(
        run_id=run_id,
        name=str(request.get("display_name") or ""),
        state=status.state.value,
        dag_id=labels.get("airflow-dag-id"),
        created_at=request.get("created_at"),
        parameters=redact_data(dict(request.get("parameters") or {})),
    )
    return summary, {"request": request, "error": status.error}, folder


def read_run(backend: LocalBackend, run_id: str) -> RunView:
    """Everything the page shows about one run."""
    summary, extra, folder = _summary(backend, run_id)
    request = extra["request"]
    state = _read_json(folder, "state.json")
    tail, truncated = log_tail(folder)
    steps = _steps(folder, summary.state)
    return RunView(
        **summary.__dict__,
        task_id=(request.get("labels") or {}).get("airflow-task-id"),
        error=airflow_redact(extra["error"]) if extra["error"] else None,
        started_at=state.get("started_at"),
        finished_at=state.get("finished_at"),
        steps=steps,
        outputs=whole_numbers(_read_json(folder, "outputs.json")),
        log_tail=tail,
        log_truncated=truncated,
    )


def list_runs(backend: LocalBackend, limit: int = 50) -> list[RunSummary]:
    """The most recent runs (by creation time), newest first."""
    root = backend.state_dir
    if not root.is_dir():
        return []
    candidates = []
    for entry in root.iterdir():
        if not _RUN_ID.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        request = _read_json(entry, "request.json")
        if request:
            candidates.append((str(request.get("created_at") or ""), entry.name))
    candidates.sort(reverse=True)
    runs = []
    for _, run_id in candidates[:limit]:
        try:
            runs.append(_summary(backend, run_id)[0])
        except RunNotFound:
            continue
    return runs

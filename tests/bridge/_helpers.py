"""Shared helpers for the operator engineer's tests (local backend, operator, trigger)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from kfp_bridge.backends.base import RunRequest, RunStatus
from kfp_bridge.backends.local import LocalBackend, group_alive
from kfp_bridge.pipeline_spec import load_pipeline

process_group_alive = group_alive  # True while a non-zombie process of the group lives
REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_PIPELINE = FIXTURES / "tiny_pipeline.yaml"
PIPELINE_PYTHON = REPO / ".venv-pipeline" / "bin" / "python"
AIRFLOW_BIN = REPO / ".venv" / "bin" / "airflow"


def tiny_request(name: str, **parameters) -> RunRequest:
    compiled = load_pipeline(TINY_PIPELINE)
    return RunRequest(
        display_name=name,
        pipeline_spec=compiled.pipeline_spec,
        pipeline_path=str(TINY_PIPELINE),
        parameters=compiled.validate_parameters({"message": "hello", **parameters}),
    )


def wait_for(backend: LocalBackend, run_id: str, predicate, timeout: float = 120.0) -> RunStatus:
    """Poll until ``predicate(status)``; the timeout only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.get_run(run_id)
        if predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stuck in {status.state}: {status}")
        time.sleep(0.2)


def wait_terminal(backend: LocalBackend, run_id: str, timeout: float = 120.0) -> RunStatus:
    return wait_for(backend, run_id, lambda s: s.state.is_terminal, timeout)


def runner_pid(backend: LocalBackend, run_id: str) -> int:
    return json.loads((backend.state_dir / run_id / "pid").read_text())["pid"]


def local_connection_env(state_dir: Path, conn_id: str = "kfp_local") -> dict[str, str]:
    """``AIRFLOW_CONN_*`` for a local-backend ``kfp`` connection (inherited by subprocesses)."""
    value = json.dumps(
        {
            "conn_type": "kfp",
            "extra": {
                "backend": "local",
                "local_state_dir": str(state_dir),
                "local_python": str(PIPELINE_PYTHON),
            },
        }
    )
    return {f"AIRFLOW_CONN_{conn_id.upper()}": value}


def airflow_env(home: Path, dags: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an ``airflow`` CLI subprocess with its own SQLite home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "KFP_BRIDGE_HOME": str(REPO),
        }
    )
    env.update(extra or {})
    return env


class TaskStateStore:
    """Stands in for Airflow's ``task_state_store`` accessor: survives across tries."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def set(self, key: str, value, *, retention=None) -> None:
        self.values[key] = value


class TaskInstance:
    """The few task-instance attributes the operator uses; records XCom pushes."""

    def __init__(
        self,
        dag_id: str = "daily_prediction",
        task_id: str = "predict",
        map_index=-1,
        try_number: int = 1,
    ):
        self.dag_id = dag_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.run_id = "scheduled__2026-11-26T21:00:00+00:00"
        self.stats_tags: dict[str, str] = {}
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value) -> None:
        self.xcom[key] = value


def task_context(
    ti: TaskInstance, store: TaskStateStore | None, logical_date, clear_number: int = 0
) -> dict:
    dag_run = SimpleNamespace(run_id=ti.run_id, clear_number=clear_number)
    context = {"ti": ti, "task_instance": ti, "logical_date": logical_date, "dag_run": dag_run}
    if store is not None:
        context["task_state_store"] = store
    return context

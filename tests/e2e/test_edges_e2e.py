"""Issue 21 on a real Airflow stack: an orphaned worker stops; a clear waits for the old run.

One stack (api-server, scheduler, dag-processor, triggerer, LocalExecutor workers) and
a KFP API stand-in whose runs stay RUNNING for an hour unless terminated; a terminated
run is CANCELING for a few seconds before it ends, as an Argo workflow takes a while
to stop its pods.

- point 6: ``orphan`` waits in the worker (``deferrable=False``). Its supervisor (the
  task process's parent) is SIGKILLed: the task process, reparented, must exit on its
  own, without terminating the run (the next try owns it).
- point 3: ``cleared`` waits in the triggerer; the task is cleared while deferred. The
  trigger's ``on_kill`` terminates the old run, and the replacement run (the clear's
  ``__c1`` name) is created only after the old run reached its terminal state.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import textwrap
import time

import psutil
import pytest

from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json
from tests.e2e.airflow_stack import REPO, AirflowStack

TINY = REPO / "tests" / "bridge" / "fixtures" / "tiny_pipeline.yaml"
LOGICAL = "2026-03-01T00:00:00+00:00"
CANCELING_SECONDS = 6  # how long a terminated run stays CANCELING

DAGS = """
import os
from pathlib import Path
import pendulum
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator

def note_pid(context):
    # The test finds the task process (and its supervisor, the parent) by this file.
    Path("{pids}", context["ti"].task_id).write_text(f"{{os.getpid()}} {{os.getppid()}}")

common = dict(pipeline_file="{tiny}", parameters={{"message": "hi"}}, kfp_conn_id="kfp_e2e",
              retries=0, pre_execute=note_pid)
with DAG("e2e_orphan", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KubeflowPipelineRunOperator(task_id="orphan", deferrable=False, poll_interval=1, **common)
with DAG("e2e_clear", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    # >= 15 s: a trigger firing seconds after deferral races the scheduler (README)
    KubeflowPipelineRunOperator(task_id="cleared", poll_interval=15, **common)
"""


@pytest.fixture(scope="module")
def edges(tmp_path_factory, metadata_db):
    root = tmp_path_factory.mktemp("e2e_edges")
    dags, pids = root / "dags", root / "pids"
    dags.mkdir()
    pids.mkdir()
    (dags / "e2e_edges.py").write_text(textwrap.dedent(DAGS).format(tiny=TINY, pids=pids))
    with KfpApiStandIn() as server:
        server.set_schedule(pending=0, running=3600, unit="seconds", canceling=CANCELING_SECONDS)
        env = {"AIRFLOW_CONN_KFP_E2E": airflow_connection_json(server.url, request_timeout=5)}
        with AirflowStack(
            root / "home", dags_folder=dags, extra_env=env, database_url=metadata_db
        ) as stack:
            deadline = time.monotonic() + 240
            while len(stack.query("SELECT 1 FROM dag WHERE dag_id LIKE 'e2e_%'")) < 2:
                assert time.monotonic() < deadline, stack.tail("dag-processor")
                time.sleep(1)
            yield stack, server, pids


def _wait(what: str, check, stack: AirflowStack, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s\n{stack.tail()}"
        time.sleep(1)


def _runs_named(server: KfpApiStandIn, prefix: str, count: int = 1) -> list[dict]:
    """The stand-in's runs whose name starts with ``prefix``, once there are ``count``."""
    runs = [r for r in server.runs() if r["display_name"].startswith(prefix)]
    return runs if len(runs) >= count else []


def _gets_of(server: KfpApiStandIn, run_id: str) -> list[dict]:
    return [
        r for r in server.requests() if r["method"] == "GET" and r["path"].endswith(f"/{run_id}")
    ]


def _terminates(server: KfpApiStandIn) -> list[dict]:
    return [r for r in server.requests() if r["method"] == "POST" and ":terminate" in r["path"]]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped (reparented to a non-reaping init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_clear_while_deferred_starts_the_new_run_after_the_old_one_ended(edges):
    """Point 3: at most one run per partition is active, even across a clear."""
    stack, server, _ = edges
    # A logical date: `tasks clear` selects DAG runs by it (a run without one is never cleared)
    stack.airflow("dags", "trigger", "e2e_clear", "--run-id", "clear_1", "-l", LOGICAL)
    [old] = _wait("the first run", lambda: _runs_named(server, "e2e_clear__cleared"), stack)
    _wait(
        "the task deferred",
        lambda: stack.query(
            "SELECT 1 FROM task_instance WHERE dag_id = 'e2e_clear' AND state = 'deferred'"
        ),
        stack,
    )
    # (no --task-regex: Airflow 3.3's `tasks clear` then matches no task instance at all)
    stack.airflow("tasks", "clear", "e2e_clear", "--yes",
                  "--start-date", LOGICAL, "--end-date", LOGICAL)  # fmt: skip
    runs = _wait(
        "the replacement run",
        lambda: _runs_named(server, "e2e_clear__cleared", count=2),
        stack,
    )
    [old_after] = [r for r in runs if r["run_id"] == old["run_id"]]
    [new] = [r for r in runs if r["run_id"] != old["run_id"]]
    assert new["display_name"].endswith("__c1"), new
    # The old run was terminated (the trigger's on_kill) and had ended before the new one.
    terminates = _terminates(server)
    assert terminates and all(old["run_id"] in t["path"] for t in terminates), terminates
    assert old_after["state"] == "FAILED", old_after
    assert _instant(new["created_at"]) >= _instant(old_after["finished_at"]), (old_after, new)
    create = [r for r in server.requests() if r["method"] == "POST" and r["path"].endswith("/runs")]
    assert len(create) == 2
    assert create[1]["time"] >= min(t["time"] for t in terminates) + CANCELING_SECONDS


def test_an_orphaned_worker_stops_waiting_without_touching_the_run(edges):
    """Point 6: the supervisor of a worker-side wait is SIGKILLed; the task process exits."""
    stack, server, pids = edges
    stack.airflow("dags", "trigger", "e2e_orphan", "--run-id", "orphan_1")
    [run] = _wait("the orphan task's run", lambda: _runs_named(server, "e2e_orphan__orphan"), stack)
    # The task process polls the run in the worker (poll_interval=1): a few GETs of it.
    _wait("the worker polling", lambda: len(_gets_of(server, run["run_id"])) >= 2, stack)
    task_pid, supervisor_pid = (int(p) for p in (pids / "orphan").read_text().split())
    task = psutil.Process(task_pid)
    assert task.ppid() == supervisor_pid and not _gone(task_pid)
    supervisor = psutil.Process(supervisor_pid)
    # Only a process of this stack: the supervisor descends from the scheduler we started.
    assert stack.procs["scheduler"].pid in {p.pid for p in supervisor.parents()}

    os.kill(supervisor_pid, signal.SIGKILL)
    _wait("the supervisor's death", lambda: _gone(supervisor_pid), stack, timeout=30)
    # The product aims at 10 s; a loaded machine gets a generous bound.
    _wait("the orphaned task process to exit", lambda: _gone(task_pid), stack, timeout=90)
    exited = time.time()

    # Nothing stopped the run: it belongs to the next try.
    assert [t for t in _terminates(server) if run["run_id"] in t["path"]] == []
    [after] = [r for r in server.runs() if r["run_id"] == run["run_id"]]
    assert after["state"] == "RUNNING"
    # No poll of the run after the task process was seen gone (the stray actor is gone).
    assert [r for r in _gets_of(server, run["run_id"]) if r["time"] > exited] == []

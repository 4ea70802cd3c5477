"""The real Airflow processes boot here, run DAGs, fire a deadline alert, and leave nothing behind.

One stack for the module (boot costs about a minute): a trivial DAG proves the
scheduler → LocalExecutor → execution API path; a DAG with a short deadline
proves Airflow 3.3's deadline alert reaches Slack through
``DeadlineNotifier`` run by the triggerer (the path the daily DAG uses
when ``DAILY_PREDICTION_DEADLINE_HOURS`` is set).
"""

from __future__ import annotations

import textwrap
import time

import psutil

from tests.dag.helpers import slack_stand_in
from tests.e2e.airflow_stack import AirflowStack

TRIVIAL_DAG = """
import pendulum
from pathlib import Path
from airflow.sdk import DAG, task

with DAG("e2e_trivial", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo")):

    @task
    def touch(out: str, ti=None):
        Path(out).write_text(ti.run_id)

    touch("{out}")
"""

DEADLINE_DAG = """
import time
from datetime import timedelta
import pendulum
from airflow.sdk import DAG, task
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference
from prediction_app.notifications import DeadlineNotifier

with DAG("e2e_deadline", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
         deadline=DeadlineAlert(
             reference=DeadlineReference.DAGRUN_QUEUED_AT,
             interval=timedelta(seconds=3),
             callback=AsyncCallback(DeadlineNotifier,
                                    kwargs={"slack_webhook_conn_id": "slack_default"}),
         )):

    @task
    def slow():
        time.sleep(20)

    slow()
"""


def _wait_parsed(stack: AirflowStack, dag_ids: set[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = stack.query("SELECT dag_id FROM dag")
        if dag_ids <= {r[0] for r in rows}:
            return
        time.sleep(1)
    raise AssertionError(f"DAGs {dag_ids} not parsed\n{stack.tail('dag-processor')}")


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    """The (address, port) of every listening TCP socket of these processes and children."""
    found: set[tuple[str, int]] = set()
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                conns = proc.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            found |= {c.laddr[:2] for c in conns if c.status == psutil.CONN_LISTEN}
    return found


def test_stack_runs_dags_fires_deadline_and_stops(tmp_path, metadata_db):
    dags = tmp_path / "dags"
    dags.mkdir()
    out = tmp_path / "touched.txt"
    (dags / "e2e_trivial.py").write_text(textwrap.dedent(TRIVIAL_DAG).replace("{out}", str(out)))
    (dags / "e2e_deadline.py").write_text(textwrap.dedent(DEADLINE_DAG))

    with slack_stand_in() as slack:
        env = {"AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri("T000/B000/e2e")}
        stack = AirflowStack(
            tmp_path / "home", dags_folder=dags, extra_env=env, database_url=metadata_db
        )
        with stack:
            print(f"stack healthy after {stack.boot_seconds:.1f}s on {stack.database_kind}")
            _wait_parsed(stack, {"e2e_trivial", "e2e_deadline"})
            stack.airflow("dags", "trigger", "e2e_trivial", "--run-id", "e2e_run_1")
            stack.airflow("dags", "trigger", "e2e_deadline", "--run-id", "e2e_slow_1")
            assert stack.wait_for_run("e2e_trivial", "e2e_run_1", {"success", "failed"}) == (
                "success"
            ), stack.tail()
            assert out.read_text() == "e2e_run_1"
            assert stack.wait_for_run("e2e_deadline", "e2e_slow_1", {"success", "failed"}) == (
                "success"
            ), stack.tail()
            for _ in range(60):  # the triggerer runs the deadline callback asynchronously
                if slack.requests:
                    break
                time.sleep(1)
            missed = stack.query("SELECT missed FROM deadline")
            pids = [p.pid for p in stack.procs.values()]
            listening = _listening(pids)
    assert missed == [(1,)]
    # every server the stack runs (and its children fork) is on the loopback only
    assert listening, "no listening socket found: the check would prove nothing"
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
    (message,) = [r["body"] for r in slack.requests]
    assert "*e2e_deadline* not finished by its deadline" in message["text"]
    assert "Run: e2e_slow_1" in message["text"]
    for pid in pids:  # stop() ended every process group it started
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

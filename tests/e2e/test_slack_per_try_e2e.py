"""One Slack message per failed try, whichever Airflow path reports it (real Airflow stack).

Three tries of one task, each ending differently:

1. the worker stops (SIGSTOP of the task process and its supervisor): the scheduler's
   heartbeat-timeout path *and* its executor-event path each ask the dag-processor to
   run the retry callback for the same try;
2. the task process, then its supervisor, are SIGKILLed: the executor-event path;
3. the task raises: the worker's own failure callback.

Expected: exactly three messages, try 1 and 2 "will retry", try 3 final; the first
two say why the try ended although there is no exception, the third has the error.
"""

from __future__ import annotations

import os
import re
import signal
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from tests.dag.helpers import slack_stand_in
from tests.e2e.airflow_stack import AirflowStack, dags_folder

DAG = """
from datetime import timedelta
import pendulum
from airflow.sdk import DAG, task
from prediction_app.notifications import TaskFailureNotifier

with DAG("e2e_slack_tries", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

    @task(retries=2, retry_delay=timedelta(seconds=1),
          on_retry_callback=TaskFailureNotifier(will_retry=True, timeout=5),
          on_failure_callback=TaskFailureNotifier(will_retry=False, timeout=5))
    def predict(ti=None):
        import os, time
        from pathlib import Path
        if ti.try_number >= 3:
            raise RuntimeError("component predict failed: warehouse table users is missing")
        # tell the test this try is in its body, then wait to be ended from outside
        Path(os.environ["E2E_MARKERS"], f"try-{ti.try_number}").touch()
        time.sleep(600)

    predict()
"""


def _running_try(stack: AirflowStack, markers: Path, try_number: int, timeout: float = 240) -> int:
    """The pid of the task process once ``try_number`` is in the task's body (its marker)."""
    deadline = time.monotonic() + timeout
    rows: list = []
    while time.monotonic() < deadline:
        rows = stack.query(
            "SELECT try_number, state, pid FROM task_instance WHERE dag_id = 'e2e_slack_tries'"
        )
        started = (markers / f"try-{try_number}").exists()
        if started and rows and rows[0][:2] == (try_number, "running") and rows[0][2]:
            return rows[0][2]
        time.sleep(0.5)
    raise AssertionError(f"try {try_number} never ran: {rows}\n{stack.tail()}")


def _wait_dead(pid: int, timeout: float = 30) -> None:
    """Until ``pid`` has ended (gone, or a zombie its parent has not reaped yet)."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        with suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        assert time.monotonic() < deadline, f"process {pid} still alive after SIGKILL"
        time.sleep(0.1)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_try_over(stack: AirflowStack, try_number: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = stack.query(
            "SELECT try_number, state FROM task_instance WHERE dag_id = 'e2e_slack_tries'"
        )
        if rows[0][0] > try_number or rows[0][1] == "failed":
            return
        time.sleep(0.5)
    raise AssertionError(f"try {try_number} did not end\n{stack.tail()}")


@pytest.fixture(scope="module")
def messages(tmp_path_factory, metadata_db):
    root = tmp_path_factory.mktemp("e2e_slack")
    dags = dags_folder(root, "e2e_slack_tries", DAG)
    markers = root / "markers"
    markers.mkdir()
    with slack_stand_in() as slack:
        env = {
            "E2E_MARKERS": str(markers),
            "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri("T000/B000/e2e"),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        }
        stack = AirflowStack(
            root / "home", dags_folder=dags, extra_env=env, database_url=metadata_db
        )
        with stack:
            stack.wait_for_dag("e2e_slack_tries")
            stack.airflow("dags", "trigger", "e2e_slack_tries", "--run-id", "tries_1")

            task = _running_try(stack, markers, 1)
            stopped = [_parent(task), task]  # the supervisor stops heartbeating
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            _wait_try_over(stack, 1)
            for pid in stopped:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

            task = _running_try(stack, markers, 2)
            supervisor = _parent(task)
            os.kill(task, signal.SIGKILL)
            _wait_dead(task)  # the task first, then its supervisor
            with suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGKILL)
            _wait_try_over(stack, 2)

            assert stack.wait_for_run("e2e_slack_tries", "tries_1", {"failed", "success"}) == (
                "failed"
            )
            deadline = time.monotonic() + 120
            while len([t for t in slack.texts() if "e2e_slack_tries.predict" in t]) < 3:
                assert time.monotonic() < deadline, (slack.texts(), stack.tail())
                time.sleep(0.5)
            stack.wait_settled()  # any late second report of a try would have been sent by now
            reasons = stack.query(
                "SELECT event FROM log WHERE dag_id = 'e2e_slack_tries' "
                "AND event IN ('heartbeat timeout', 'state mismatch')"
            )
        texts = [t for t in slack.texts() if "e2e_slack_tries.predict" in t]
        # by try: the dag-processor may report a dead worker's try after the next try's worker
        texts.sort(key=lambda t: int(re.search(r"\(try (\d+) of", t).group(1)))
        yield {"texts": texts, "paths": sorted(r[0] for r in reasons)}


def test_the_dead_worker_tries_really_took_both_scheduler_paths(messages):
    assert messages["paths"].count("heartbeat timeout") >= 1, messages["paths"]
    assert messages["paths"].count("state mismatch") >= 2, messages["paths"]


def test_one_message_per_failed_try_with_retry_and_final_told_apart(messages):
    texts = messages["texts"]
    headlines = [t.splitlines()[0] for t in texts]
    assert headlines == [
        ":red_circle: *e2e_slack_tries.predict* failed, will retry (try 1 of 3)",
        ":red_circle: *e2e_slack_tries.predict* failed, will retry (try 2 of 3)",
        ":red_circle: *e2e_slack_tries.predict* failed (try 3 of 3)",
    ], texts


def test_a_try_without_exception_says_why_it_ended(messages):
    first, second, third = messages["texts"]
    for text in (first, second):
        assert "Error: none from the task: its process stopped without reporting" in text
        assert "heartbeat was lost" in text
        assert "no error recorded" not in text
    assert "Error: RuntimeError: component predict failed: warehouse table users is missing" in (
        third
    )

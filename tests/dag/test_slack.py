"""Slack notifications through the real Slack provider, posting to a loopback webhook.

In-process tests drive the notifiers with a task-instance-shaped context; the
last tests run a real failing DAG with ``airflow dags test`` so that Airflow's
task runner and DAG callback machinery build the context and call them.
"""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pendulum
import pytest

from kfp_bridge.notifications.slack import first_error_line, scrub
from prediction_app.notifications import RunFailureNotifier, TaskFailureNotifier
from tests.dag.helpers import AirflowEnv, airflow_env_vars


class FakeTI:
    """The attributes Airflow's RuntimeTaskInstance gives callbacks."""

    dag_id = "daily_prediction"
    task_id = "predict"
    run_id = "scheduled__2026-11-26T21:00:00+00:00"
    log_url = "http://airflow.test:8080/dags/daily_prediction/runs/x/tasks/predict?try_number=2"

    def __init__(self, *, try_number=2, max_tries=3, state="up_for_retry", run_url=None):
        self.try_number = try_number
        self.max_tries = max_tries
        self.state = state
        self._run_url = run_url

    def xcom_pull(self, task_ids, key):
        assert (task_ids, key) == ("predict", "kubeflow_run_url")
        return self._run_url


def _context(ti=None, error=None):
    logical_date = pendulum.datetime(2026, 11, 26, 21, tz="UTC")
    return {
        "ti": ti or FakeTI(run_url="http://kfp.test/#/runs/details/run-123"),
        "run_id": "scheduled__2026-11-26T21:00:00+00:00",
        "logical_date": logical_date,
        "dag_run": SimpleNamespace(logical_date=logical_date, run_after=logical_date),
        "exception": error or RuntimeError("component predict failed: model digest mismatch"),
    }


@pytest.fixture
def slack_conn(slack_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEFAULT", slack_server.connection_uri())
    return slack_server


def _output(capsys, caplog) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err + caplog.text


def test_task_failure_message_content(slack_conn):
    TaskFailureNotifier()(_context())
    (request,) = slack_conn.requests
    assert request["path"] == "/services/T000/B000/secretwebhooktoken"
    text = request["body"]["text"]
    assert "*daily_prediction.predict* failed, will retry (try 2 of 4)" in text
    assert "Target date (JST): 2026-11-27" in text  # not the UTC ds 2026-11-26
    assert "Error: RuntimeError: component predict failed: model digest mismatch" in text
    assert f"Airflow log: {FakeTI.log_url}" in text
    assert "Kubeflow run: http://kfp.test/#/runs/details/run-123" in text


def test_failed_try_message_shows_the_try_history(slack_conn):
    """The history the operator holds is said: this try, then each one so far."""
    held = [
        {
            "try_number": 1,
            "run_id": "R",
            "state": "FAILED",
            "start": "2026-11-26T21:00:05Z",
            "end": "2026-11-26T21:09:00Z",
            "resumed": False,
            "url": "http://kfp.test/#/runs/details/R",
            "failed_tasks": ["predict"],
        },
        {"try_number": 2, "run_id": "R", "state": "FAILED", "resumed": True},
    ]
    TaskFailureNotifier()({**_context(), "task": SimpleNamespace(try_history=held)})
    lines = slack_conn.texts()[0].splitlines()
    assert "This try: try 2/4, resumed run R after FAILED at step predict" in lines
    tries = lines[lines.index("Tries:") + 1 :]
    assert tries[0] == (
        "- try 1: run R, FAILED at step predict "
        "(2026-11-26T21:00:05Z - 2026-11-26T21:09:00Z) http://kfp.test/#/runs/details/R"
    )


def test_the_state_store_is_never_asked_from_a_callback(slack_conn):
    """The dag-processor refuses state-store requests (a dead worker's callbacks run
    there) and the store forgets a failed try: the message goes out without history."""

    def refused(key, default=None):
        raise AssertionError("the notifier asked the task state store")

    context = {
        **_context(),
        "task": SimpleNamespace(),
        "task_state_store": SimpleNamespace(get=refused),
    }
    TaskFailureNotifier()(context)
    [text] = slack_conn.texts()
    assert "Tries:" not in text and "will retry" in text


def test_final_failure_without_run_link(slack_conn):
    ti = FakeTI(try_number=4, max_tries=3, state="failed", run_url=None)
    TaskFailureNotifier()(_context(ti=ti))
    text = slack_conn.texts()[0]
    assert "failed (try 4 of 4)" in text
    assert "will retry" not in text
    assert "Kubeflow run" not in text


@pytest.mark.parametrize(
    ("will_retry", "outcome"), [(True, "failed, will retry"), (False, "failed")]
)
def test_retry_or_final_comes_from_the_callback_not_the_state(slack_conn, will_retry, outcome):
    """The dag-processor runs callbacks of a dead worker's try before any state is set."""
    ti = FakeTI(try_number=1, max_tries=3, state=None)
    context = {**_context(ti=ti), "exception": None}
    TaskFailureNotifier(will_retry=will_retry)(context)
    text = slack_conn.texts()[0]
    assert f"*daily_prediction.predict* {outcome} (try 1 of 4)" in text
    assert "Error: none from the task: its process stopped without reporting (killed" in text


def test_each_try_is_claimed_once_whatever_the_order(monkeypatch):
    """A dead worker's try may be reported by the dag-processor after the next try failed."""
    from types import SimpleNamespace

    from airflow.sdk import Variable

    from kfp_bridge.notifications import reported_tries

    store: dict[str, str] = {}
    monkeypatch.setattr(Variable, "get", lambda key, default=None: store.get(key, default))
    monkeypatch.setattr(
        Variable, "set", lambda key, value, description=None: store.__setitem__(key, value)
    )

    def ti(try_number):
        return SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1,
                               try_number=try_number)  # fmt: skip

    claims = [reported_tries.claim(ti(n)) for n in (1, 1, 3, 2, 2, 3)]
    assert claims == [True, False, True, True, False, False]


def test_error_is_first_line_only_and_scrubbed(slack_conn):
    from airflow.sdk.log import mask_secret

    mask_secret("hunter2-registered-password")
    error = RuntimeError(
        "POST https://user:pa55word@kfp.test/apis failed, Authorization: Bearer ya29.a0AfH6SMBx-"
        "verysecret token=xoxb-1234567890-abcdef hunter2-registered-password {{ not a template }}"
        "\nTraceback line that must not be sent"
    )
    TaskFailureNotifier()(_context(error=error))
    text = slack_conn.texts()[0]
    error_line = next(line for line in text.splitlines() if line.startswith("Error:"))
    for secret in ("pa55word", "ya29.a0AfH6SMBx", "xoxb-1234567890", "hunter2-registered"):
        assert secret not in text
    assert "{{ not a template }}" in error_line  # sent as written, never rendered
    assert "Traceback line" not in text


def test_scrub_and_first_line_helpers():
    assert scrub("password=abc123 and api_key: zzz") == "password=*** and api_key: ***"
    assert first_error_line(None) == "(no error recorded)"
    assert first_error_line(ValueError()) == "ValueError"
    assert len(first_error_line("x" * 1000)) == 300


def test_no_connection_logs_one_line_and_sends_nothing(slack_server, monkeypatch, capsys, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_DEFAULT", raising=False)
    TaskFailureNotifier(slack_webhook_conn_id="slack_missing")(_context())
    assert slack_server.requests == []
    out = _output(capsys, caplog)
    assert out.count("'slack_missing' is not configured") == 1


def test_webhook_error_is_logged_not_raised(slack_conn, capsys, caplog):
    slack_conn.mode = "error"
    TaskFailureNotifier()(_context())  # returns normally: the task's outcome is unchanged
    assert len(slack_conn.requests) == 1
    out = _output(capsys, caplog)
    assert "Slack notification via 'slack_default' failed" in out
    assert "500" in out
    assert "secretwebhooktoken" not in out


def test_hanging_webhook_times_out(slack_conn, capsys, caplog):
    slack_conn.mode = "hang"
    TaskFailureNotifier(timeout=1)(_context())
    assert len(slack_conn.requests) >= 1
    assert "Slack notification via 'slack_default' failed" in _output(capsys, caplog)


def test_run_summary_message(slack_conn):
    from airflow.sdk import DAG

    context = {
        **_context(),
        "dag": DAG("daily_prediction", schedule=None),
        "reason": "task_failure",
    }
    RunFailureNotifier()(context)
    text = slack_conn.texts()[0]
    assert "*daily_prediction* run failed" in text
    assert "Target date (JST): 2026-11-27" in text
    assert "Reason: task_failure" in text
    assert "Last task: predict" in text
    assert "Kubeflow run: http://kfp.test/#/runs/details/run-123" in text
    assert "/dags/daily_prediction/runs/scheduled__2026-11-26T21%3A00%3A00%2B00%3A00" in text


async def _run_deadline_callback(conn_id: str):
    """What the triggerer does with the DAG's deadline AsyncCallback."""
    from airflow.triggers.callback import CallbackTrigger

    trigger = CallbackTrigger(
        callback_path="prediction_app.notifications.DeadlineNotifier",
        callback_kwargs={
            "slack_webhook_conn_id": conn_id,
            "context": {
                "dag_run": {
                    "dag_id": "daily_prediction",
                    "dag_run_id": "scheduled__2026-12-31T21:00:00+00:00",
                    "logical_date": "2026-12-31T21:00:00Z",
                    "state": "running",
                },
                "deadline": {"id": "d1", "deadline_time": "2027-01-01T00:00:00Z"},
            },
        },
    )
    return [event.payload async for event in trigger.run()]


def test_deadline_notifier_through_callback_trigger(slack_conn):
    import asyncio

    events = asyncio.run(_run_deadline_callback("slack_default"))
    assert events[-1]["state"] == "success", events
    text = slack_conn.texts()[0]
    assert "*daily_prediction* not finished by its deadline" in text
    assert "Target date (JST): 2027-01-01" in text


FAILING_DAG = """
import pendulum
from airflow.sdk import DAG, task
from prediction_app.notifications import TaskFailureNotifier, RunFailureNotifier
from prediction_app.target_date import MACROS

with DAG("failing_prediction", schedule=None, catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo"),
         user_defined_macros=MACROS,
         on_failure_callback=RunFailureNotifier()):

    @task(retries=0, on_failure_callback=TaskFailureNotifier(timeout=2),
          on_retry_callback=TaskFailureNotifier(timeout=2))
    def predict(ti=None):
        from airflow.sdk import Connection
        ti.xcom_push(key="kubeflow_run_url", value="http://kfp.test/#/runs/details/run-9")
        token = Connection.get("kfp_secret").password  # masked by Airflow once fetched
        raise RuntimeError(f"component failed: auth {token} rejected")

    predict()
"""


@pytest.fixture(scope="module")
def failing_dag_env(tmp_path_factory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("airflow_failing")
    dags = home / "dags"
    dags.mkdir()
    (dags / "failing_prediction.py").write_text(textwrap.dedent(FAILING_DAG))
    env = AirflowEnv(home=home, env=airflow_env_vars(home, dags_folder=dags))
    env.env["AIRFLOW_CONN_KFP_SECRET"] = '{"conn_type": "kfp", "password": "s3cr3t-kfp-token"}'
    env.run("db", "migrate")
    return env


@pytest.mark.parametrize("mode", ["ok", "error"])
def test_real_task_failure_posts_and_keeps_the_error(failing_dag_env, slack_server, mode):
    slack_server.mode = mode
    proc = failing_dag_env.run(
        "dags", "test", "failing_prediction", "2026-12-31T21:00:00+00:00",
        extra_env={"AIRFLOW_CONN_SLACK_DEFAULT": slack_server.connection_uri()},
        check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    texts = slack_server.texts()
    task_msgs = [t for t in texts if "failing_prediction.predict" in t]
    run_msgs = [t for t in texts if "*failing_prediction* run failed" in t]
    assert len(task_msgs) == 1, texts  # one message for the one failed try
    assert len(run_msgs) == 1, texts
    msg = task_msgs[0]
    assert "failed (try 1 of 1)" in msg
    assert "Target date (JST): 2027-01-01" in msg
    assert "Error: RuntimeError: component failed: auth *** rejected" in msg
    assert "Airflow log: http://airflow.test:8080/dags/failing_prediction/runs/" in msg
    assert "Kubeflow run: http://kfp.test/#/runs/details/run-9" in msg
    assert "s3cr3t-kfp-token" not in "".join(texts)
    # The task's own error and failed state are untouched by Slack's answer.
    assert "component failed: auth" in output
    assert "DagRun Finished: dag_id=failing_prediction" in output
    assert "state=failed" in output
    if mode == "error":
        assert "Slack notification via 'slack_default' failed" in output

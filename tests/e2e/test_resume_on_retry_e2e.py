"""A run whose ``predict`` fails once is resumed, not resubmitted (real Airflow stack, issue 20).

The KFP API stand-in runs the production pipeline's DAG (``features`` then
``predict``); try 1's run fails at ``predict`` (a transient MemoryError). Try 2
finds that run FAILED, which try 1 recorded as its own failure, and asks the
server to retry it (``POST /runs/{id}:retry``): only ``predict`` reruns, on the
same run, and the task succeeds. Real scheduler, dag-processor, triggerer,
api-server and LocalExecutor workers (both tries defer); the Slack notifier posts
to a loopback webhook. The try history is read where the task keeps it (the
``task_state_store`` table), the log lines from the task's log files.
"""

from __future__ import annotations

import json

import pytest

from kfp_bridge.testing.kfp_api.server import KfpApiStandIn, airflow_connection_json
from tests.dag.helpers import slack_stand_in
from tests.e2e.airflow_stack import REPO, AirflowStack, dags_folder

PIPELINE = REPO / "pipelines" / "compiled" / "daily_prediction.yaml"
# Manual run for target date 2026-12-04: logical date 2026-12-04 06:00 JST.
LOGICAL_DATE = "2026-12-03T21:00:00+00:00"
RUN_NAME = "e2e_resume__predict__2026-12-04__manual-060000"

DAG = """
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from prediction_app.notifications import TaskFailureNotifier
from prediction_app.target_date import MACROS

with DAG("e2e_resume", schedule=None, catchup=False, user_defined_macros=MACROS,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    KubeflowPipelineRunOperator(
        task_id="predict", pipeline_file="{pipeline}", kfp_conn_id="kfp_resume",
        parameters={{"target_date": "{{{{ target_date(dag_run) }}}}", "model_sha256": "0" * 64}},
        run_key="{{{{ kfp_run_key(dag_run) }}}}",
        # >= 15 s: a trigger firing seconds after deferral races the scheduler (README)
        poll_interval=15, retries=1, retry_delay=timedelta(seconds=1),
        on_retry_callback=TaskFailureNotifier(will_retry=True, timeout=5),
        on_failure_callback=TaskFailureNotifier(will_retry=False, timeout=5),
    )
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, metadata_db):
    root = tmp_path_factory.mktemp("e2e_resume")
    dags = dags_folder(root, "e2e_resume", DAG.format(pipeline=PIPELINE))
    with KfpApiStandIn() as server, slack_stand_in() as slack:
        # predict fails once (out of memory); the retried run succeeds
        server.set_schedule(
            pending=0, running=4, unit="seconds", outcome="FAILED", failed_task="predict",
            error="MemoryError: Unable to allocate 3.1 GiB", retry_outcome="SUCCEEDED",
        )  # fmt: skip
        env = {
            "AIRFLOW_CONN_KFP_RESUME": airflow_connection_json(server.url, request_timeout=5),
            "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri("T000/B000/e2e"),
        }
        stack = AirflowStack(
            root / "home", dags_folder=dags, extra_env=env, database_url=metadata_db
        )
        with stack:
            stack.wait_for_dag("e2e_resume")
            stack.airflow(
                "dags", "trigger", "e2e_resume", "--run-id", "resume_1",
                "--logical-date", LOGICAL_DATE,
            )  # fmt: skip
            state = stack.wait_for_run("e2e_resume", "resume_1", {"success", "failed"}, 420)
            tries = stack.query(
                "SELECT try_number, state FROM task_instance WHERE dag_id = 'e2e_resume'"
            )
            [(history,)] = stack.query(
                "SELECT value FROM task_state_store WHERE dag_id = 'e2e_resume' "
                "AND run_id = 'resume_1' AND task_id = 'predict' "
                "AND key = 'kfp_bridge_try_history'"
            )
            logs = {
                p.name: p.read_text(errors="replace")
                for p in stack.logs.rglob("attempt=*.log")
                if "dag_id=e2e_resume" in str(p)
            }
            texts = [t for t in slack.texts() if "e2e_resume.predict" in t]
        yield {
            "state": state,
            "tries": tries,
            "runs": server.runs(),
            "requests": server.requests(),
            "history": json.loads(history),
            "logs": logs,
            "slack": texts,
            "tail": stack.tail(),
        }


def test_the_failed_run_is_resumed_not_resubmitted(outcome):
    assert outcome["state"] == "success", outcome["tail"]
    assert outcome["tries"] == [(2, "success")]
    [run] = outcome["runs"]  # one run on the server, under the business-date name
    assert run["display_name"] == RUN_NAME and run["state"] == "SUCCEEDED"
    creates = [
        r for r in outcome["requests"] if r["method"] == "POST" and r["path"].endswith("/runs")
    ]
    retries = [r for r in outcome["requests"] if r["path"].endswith(f"{run['run_id']}:retry")]
    assert len(creates) == 1 and len(retries) == 1
    assert [h["state"] for h in run["state_history"]][-3:] == ["FAILED", "RUNNING", "SUCCEEDED"]


def test_features_is_not_rerun(outcome):
    [run] = outcome["runs"]
    assert run["reruns"] == ["predict"]
    assert run["executions"] == {"features": 1, "predict": 2}


def test_two_entries_in_the_try_history(outcome):
    [run] = outcome["runs"]
    history = outcome["history"]
    assert [(e["try_number"], e["run_id"], e["state"], e["resumed"]) for e in history] == [
        (1, run["run_id"], "FAILED", False),
        (2, run["run_id"], "SUCCEEDED", True),
    ]
    assert history[0]["failed_tasks"] == ["predict"]
    assert all(e["start"] <= e["end"] for e in history)
    assert all(e["url"].endswith(f"/#/runs/details/{run['run_id']}") for e in history)


def test_the_second_tries_log_lists_the_first_try(outcome):
    [run] = outcome["runs"]
    second = outcome["logs"]["attempt=2.log"]
    assert f"try 1: run {run['run_id']}, FAILED at step predict (" in second
    assert f"Resumed run {run['run_id']}" in second
    assert "the runs of earlier tries" not in outcome["logs"]["attempt=1.log"]


def test_the_slack_message_of_the_failed_try_shows_the_history(outcome):
    [run] = outcome["runs"]
    [text] = outcome["slack"]  # one failed try, one message; success posts nothing
    lines = text.splitlines()
    assert "failed, will retry (try 1 of 2)" in lines[0]
    assert f"This try: try 1/2, run {run['run_id']}" in lines, outcome["logs"]["attempt=1.log"][
        -4000:
    ]
    assert any(
        line.startswith(f"- try 1: run {run['run_id']}, FAILED at step predict (") for line in lines
    ), text
    assert "MemoryError" in text

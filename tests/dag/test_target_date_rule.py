"""One target-date rule: the DAG's rendered template and the Slack messages agree.

Real DAG runs of each kind are made the way Airflow makes them (a scheduled run as
the scheduler creates it, ``airflow dags trigger`` without a logical date,
``airflow backfill create``); for each, the task's template is rendered through
the code behind ``airflow tasks render`` and the Slack notifiers build their
messages from the same task context. Its own Airflow home: a backfill holds the
DAG's one active-backfill slot.
"""

from __future__ import annotations

import json

import pytest

from tests.dag.helpers import AirflowEnv, airflow_env_vars

pytestmark = pytest.mark.e2e  # real Airflow runs (triggered and scheduled) in their own home

SCHEDULED_LOGICAL_DATE = "2026-11-26T21:00:00+00:00"  # the 2026-11-27 06:00 JST run

RENDER_AND_NOTIFY = """
import json, re, warnings
warnings.simplefilter("ignore")
import pendulum
from airflow.cli.commands.task_command import _get_template_context, _get_ti
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from prediction_app.notifications import (
    DeadlineNotifier, TaskFailureNotifier, RunFailureNotifier,
)

dag = DagBag(dag_folder="dags").get_dag("daily_prediction")
scheduler_dag = SerializedDagModel.get_dag("daily_prediction")
logical_date = pendulum.parse(SCHEDULED_AT)
scheduler_dag.create_dagrun(  # what the scheduler does for the 06:00 JST run
    run_id="scheduled__" + SCHEDULED_AT,
    logical_date=logical_date,
    data_interval=scheduler_dag.timetable.infer_manual_data_interval(run_after=logical_date),
    run_after=logical_date,
    run_type=DagRunType.SCHEDULED,
    triggered_by=DagRunTriggeredByType.TIMETABLE,
    state=DagRunState.QUEUED,
)
with create_session() as session:
    runs = session.query(DagRun).filter(DagRun.dag_id == "daily_prediction").all()
    runs = [(r.run_id, r.run_type, r.logical_date, r.run_after) for r in runs]

def target_in(text):
    return re.search(r"Target date \\(JST\\): (\\S+)", text).group(1)

out = {}
template = dag.get_task("predict").parameters["target_date"]
for run_id, run_type, run_logical_date, run_after in runs:
    ti, _ = _get_ti(scheduler_dag.get_task("predict"), -1, logical_date_or_run_id=run_id)
    task = dag.get_task("predict")
    context = _get_template_context(ti, task)
    dag_run_json = {
        "dag_id": "daily_prediction", "dag_run_id": run_id,
        "logical_date": run_logical_date.isoformat() if run_logical_date else None,
        "run_after": run_after.isoformat(),
    }
    out[run_id] = {
        "run_type": str(run_type),
        "has_logical_date": context.get("logical_date") is not None,
        "run_after": run_after.isoformat(),
        "template": task.render_template(template, context),
        "task_message": target_in(TaskFailureNotifier().build_text(context)),
        "run_message": target_in(RunFailureNotifier().build_text({**context, "dag": dag})),
        "deadline_message": target_in(
            DeadlineNotifier().build_text({"dag_run": dag_run_json, "deadline": {}})
        ),
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow_target_date")
    env = AirflowEnv(home=home, env=airflow_env_vars(home))
    env.run("db", "migrate")
    env.run("dags", "reserialize")
    env.run("dags", "trigger", "daily_prediction", "--run-id", "manual__no_logical_date")
    env.run(
        "backfill", "create", "--dag-id", "daily_prediction",
        "--from-date", "2026-09-15T00:00:00+09:00", "--to-date", "2026-09-15T23:59:59+09:00",
    )  # fmt: skip
    return env.python_json(RENDER_AND_NOTIFY.replace("SCHEDULED_AT", repr(SCHEDULED_LOGICAL_DATE)))


def _by_type(runs: dict, run_type: str) -> dict:
    [run] = [r for r in runs.values() if r["run_type"] == run_type]
    return run


@pytest.mark.parametrize(
    ("run_type", "expected"),
    [("scheduled", "2026-11-27"), ("backfill", "2026-09-15"), ("manual", None)],
)
def test_template_and_slack_give_the_same_target_date(runs, run_type, expected):
    run = _by_type(runs, run_type)
    if expected is None:  # no logical date: the JST date of run_after
        from prediction_app.target_date import jst_ds

        assert run["has_logical_date"] is False
        expected = jst_ds(run["run_after"])
    assert run["template"] == expected
    assert run["task_message"] == run["run_message"] == run["deadline_message"] == expected


def test_each_kind_of_run_was_made(runs):
    assert sorted(r["run_type"] for r in runs.values()) == ["backfill", "manual", "scheduled"]
    assert json.dumps(runs)  # plain data from the subprocess

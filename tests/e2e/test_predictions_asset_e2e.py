"""The predictions Asset drives ``deliver_predictions``, with real Airflow processes.

One stack (api-server, scheduler with LocalExecutor, dag-processor, triggerer) with the
real ``daily_prediction`` and ``deliver_predictions`` DAG files on the local backend,
plus a prediction DAG whose component fails (same operator, same outlet):

- one upstream success -> exactly one downstream run, for that target date, which
  delivers exactly that partition (its rows, from the event's partition);
- a backfill of three dates -> three downstream runs, one per target date;
- a failed prediction -> no asset event and no downstream run for its date.

Target dates are chosen relative to today (JST) so the demo data covers them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pendulum
import pytest

from tests.e2e.airflow_stack import REPO, AirflowStack
from tests.e2e.scenario import demo_inputs, failing_dag, pipeline_module

TODAY = pendulum.now("Asia/Tokyo").date()
SINGLE = TODAY - dt.timedelta(days=9)
BACKFILL = [TODAY - dt.timedelta(days=d) for d in (7, 6, 5)]
FAILED = TODAY - dt.timedelta(days=3)


def _logical(target: dt.date) -> str:
    """The scheduled logical date of target date D: D-1 21:00 UTC (06:00 JST on D)."""
    return f"{target - dt.timedelta(days=1)}T21:00:00+00:00"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, metadata_db):
    """On PostgreSQL, as on Composer: a three-date backfill's CLI, scheduler and three runs
    write at once, which SQLite's single writer lock does not always survive."""
    root = tmp_path_factory.mktemp("assets")
    warehouse, model = root / "warehouse", root / "models" / "model.pkl"
    digest = demo_inputs(warehouse, model)
    predictions = (warehouse / "predictions").as_uri()
    dags = root / "dags"
    dags.mkdir()
    for name in ("prediction_workflows.py", "deliver_predictions.py"):
        (dags / name).symlink_to(REPO / "dags" / name)
    (dags / "e2e_failing_prediction.py").write_text(
        failing_dag(
            "e2e_failing_prediction",
            warehouse=warehouse,
            model=model,
            header="from airflow.sdk import Asset",
            task_args=f'report_task="predict", outlets=[Asset({predictions!r})], retries=0,',
        )
    )
    env = {
        "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(
            {
                "conn_type": "kfp",
                "extra": {"backend": "local", "local_state_dir": str(root / "runs")},
            }
        ),
        "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
        "DELIVER_PREDICTIONS_OUTBOX": str(root / "outbox"),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
        "DAILY_PREDICTION_POLL_SECONDS": "15",  # see README: triggers firing within seconds
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }
    airflow = AirflowStack(root / "home", dags_folder=dags, extra_env=env, database_url=metadata_db)
    with airflow:
        wanted = {"daily_prediction", "deliver_predictions", "e2e_failing_prediction"}
        deadline = time.monotonic() + 180
        while not wanted <= {r[0] for r in airflow.query("SELECT dag_id FROM dag")}:
            assert time.monotonic() < deadline, airflow.tail("dag-processor")
            time.sleep(1)
        for dag_id in sorted(wanted):
            airflow.airflow("dags", "unpause", dag_id)
        airflow.root, airflow.warehouse = root, warehouse
        yield airflow


def _deliveries(stack: AirflowStack) -> dict[str, list[str]]:
    """Downstream runs by partition key -> their states."""
    out: dict[str, list[str]] = {}
    for key, state in stack.query(
        "SELECT partition_key, state FROM dag_run WHERE dag_id = 'deliver_predictions' ORDER BY id"
    ):
        out.setdefault(key, []).append(state)
    return out


def _wait_deliveries(stack: AirflowStack, dates: list[dt.date], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        runs = _deliveries(stack)
        if all(runs.get(str(d)) and runs[str(d)][-1] in ("success", "failed") for d in dates):
            return runs
        assert time.monotonic() < deadline, f"{runs}\n{stack.tail()}"
        time.sleep(2)


def _partition_rows(stack: AirflowStack, target: dt.date) -> int:
    args = ["--target-date", str(target), "--warehouse", str(stack.warehouse), "--json"]
    return json.loads(pipeline_module("kfp_prediction.summary", *args))["rows"]


def _outbox(stack: AirflowStack, target: dt.date) -> list[dict]:
    path = Path(stack.root) / "outbox" / f"{target}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_prediction_gives_one_delivery_of_its_partition(stack):
    run_id = "single"
    stack.airflow("dags", "trigger", "daily_prediction", "--run-id", run_id,
                  "--logical-date", _logical(SINGLE))  # fmt: skip
    assert stack.wait_for_run("daily_prediction", run_id, {"success", "failed"}) == "success"
    runs = _wait_deliveries(stack, [SINGLE])
    assert runs[str(SINGLE)] == ["success"]  # one run for the date, and it delivered
    [(extra,)] = stack.query(
        "SELECT e.extra FROM asset_event e WHERE e.partition_key = ? AND e.source_run_id = ?",
        (str(SINGLE), run_id),
    )
    extra = json.loads(extra)
    assert extra["target_date"] == str(SINGLE)
    assert extra["partition"] == str(stack.warehouse / "predictions" / f"{SINGLE}.parquet")
    assert extra["rows"] == _partition_rows(stack, SINGLE) > 0
    assert extra["run_url"].startswith("file://") or extra["run_url"].startswith("http")
    messages = _outbox(stack, SINGLE)
    assert len(messages) == extra["rows"]
    assert {m["target_date"] for m in messages} == {str(SINGLE)}


def test_a_backfill_of_three_dates_gives_three_deliveries(stack):
    stack.airflow(
        "backfill", "create", "--dag-id", "daily_prediction",
        "--from-date", f"{BACKFILL[0]}T00:00:00+09:00",
        "--to-date", f"{BACKFILL[-1]}T23:59:59+09:00", "--max-active-runs", "3",
    )  # fmt: skip
    runs = _wait_deliveries(stack, BACKFILL, timeout=500)
    for target in BACKFILL:
        assert runs[str(target)] == ["success"], runs
        assert len(_outbox(stack, target)) == _partition_rows(stack, target)


def test_a_failed_prediction_gives_no_delivery(stack):
    run_id = "fails"
    stack.airflow("dags", "trigger", "e2e_failing_prediction", "--run-id", run_id,
                  "--logical-date", _logical(FAILED))  # fmt: skip
    assert stack.wait_for_run("e2e_failing_prediction", run_id, {"success", "failed"}) == "failed"
    stack.wait_settled()  # the failure's callbacks done, several scheduler loops after
    assert str(FAILED) not in _deliveries(stack)
    assert stack.query("SELECT id FROM asset_event WHERE source_run_id = ?", (run_id,)) == []
    assert not (Path(stack.root) / "outbox" / f"{FAILED}.jsonl").exists()

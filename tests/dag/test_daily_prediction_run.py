"""The real DAG, run by ``airflow dags test`` on the local backend, writes the JST partition.

Everything is real: Airflow's task runner renders the target date, the bridge
operator submits the compiled pipeline to the local backend, which runs it with
``kfp.local`` in ``.venv-pipeline``, and the trigger polls it to the end. Small
demo data and model are generated in a temporary warehouse first.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.dag.helpers import pipeline_module, small_warehouse, train_model


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    warehouse = small_warehouse(root / "warehouse", "2026-12-31")
    model = root / "models" / "model.pkl"
    return root, warehouse, model, train_model(warehouse, model)


def test_dags_test_writes_the_target_date_partition(airflow_env, demo_inputs, slack_server):
    root, warehouse, model, digest = demo_inputs
    local_conn = {"conn_type": "kfp", "extra": {"backend": "local", "local_state_dir": str(root)}}
    proc = airflow_env.run(
        "dags",
        "test",
        "daily_prediction",
        "2027-01-01T06:00:00+09:00",  # logical 12-31 21:00Z
        extra_env={
            "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(local_conn),
            "AIRFLOW_CONN_SLACK_DEFAULT": slack_server.connection_uri(),
            "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
            "DAILY_PREDICTION_POLL_SECONDS": "1",
        },
        check=False,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "state=success" in output
    # The year-boundary run predicts for the JST date, not the UTC ds (2026-12-31).
    assert (warehouse / "predictions" / "2027-01-01.parquet").is_file()
    assert not (warehouse / "predictions" / "2026-12-31.parquet").exists()
    args = ["--target-date", "2027-01-01", "--warehouse", str(warehouse), "--json"]
    summary = json.loads(pipeline_module("kfp_prediction.summary", *args))
    assert summary["target_date"] == "2027-01-01"
    assert summary["rows"] == summary["users"] > 0
    assert summary["model_sha256"] == [digest]
    assert slack_server.requests == []  # nothing failed, nothing posted
    # The asset event carries what the predict step reported about that partition.
    con = sqlite3.connect(airflow_env.home / "airflow.db")
    [(uri, extra)] = con.execute(
        "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE e.source_dag_id = 'daily_prediction' AND e.partition_key = '2027-01-01' "
        "ORDER BY e.id DESC LIMIT 1"
    ).fetchall()
    con.close()
    extra = json.loads(extra)
    assert uri == (warehouse / "predictions").as_uri()
    assert extra["target_date"] == "2027-01-01"
    assert extra["partition"] == str(warehouse / "predictions" / "2027-01-01.parquet")
    assert extra["rows"] == summary["rows"]
    assert extra["model_sha256"] == digest


def test_bad_input_fails_the_task_at_once_naming_it(airflow_env, demo_inputs, slack_server):
    """A model digest mismatch is found inside the component: the real pipeline reports it
    permanent, so the task (retries=3, 5 min apart) fails at once, without a second run."""
    root, warehouse, model, _ = demo_inputs
    local_conn = {"conn_type": "kfp", "extra": {"backend": "local", "local_state_dir": str(root)}}
    proc = airflow_env.run(
        "dags", "test", "daily_prediction", "2026-12-31T06:00:00+09:00",
        extra_env={
            "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(local_conn),
            "AIRFLOW_CONN_SLACK_DEFAULT": slack_server.connection_uri(),
            "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
            "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": "0" * 64,
            "DAILY_PREDICTION_POLL_SECONDS": "1",
        },
        check=False, timeout=240,  # a retry would wait 5 minutes first
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "failed on bad input (input model_sha256), not retrying: ModelDigestMismatchError" in (
        output
    ), output[-6000:]
    assert "new_state=up_for_retry" not in output
    runs = [json.loads(p.read_text()) for p in root.glob("*/request.json")]
    # `dags test` makes a manual run: its KFP run name says the JST target date (issue 20)
    name = "daily_prediction__predict__2026-12-31__manual-060000"
    assert len([r for r in runs if r["display_name"] == name]) == 1
    [text] = [t for t in slack_server.texts() if "daily_prediction.predict" in t]
    assert "failed (try 1 of 4)" in text and "will retry" not in text
    assert "ModelDigestMismatchError" in text
    assert not (warehouse / "predictions" / "2026-12-31.parquet").exists()

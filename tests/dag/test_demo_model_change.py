"""`make demo` for a date demoed before, after the model changed: a new run (issue 21, point 2).

``scripts/demo.py`` (what ``make demo`` runs) drives a real ``airflow dags test`` of the
real ``daily_prediction`` DAG on the local backend (``kfp.local`` runs of the compiled
pipeline in ``.venv-pipeline``). Between two demos of one target date the model file is
retrained in place, and its digest reaches the task as ``make demo`` passes it (the
``daily_prediction_model_sha256`` Variable from the environment): the second demo must
start a new pipeline run and say why, and the partition and asset event must carry the
new model's digest. A third demo, nothing changed, reattaches and says nothing was
recomputed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dag.helpers import REPO, AirflowEnv, pipeline_module, small_warehouse, train_model

DATE = "2026-12-30"  # target date (JST) no other test of this session runs
RUN_NAME = f"daily_prediction__predict__{DATE}__manual-060000"  # the run_key rule (issue 20)


def _train(warehouse: Path, model: Path, trained_on: str) -> str:
    """(Re)train the demo model into ``model`` on the features of ``trained_on``; its digest."""
    return train_model(warehouse, model, "--target-date", trained_on)


@pytest.fixture(scope="module")
def demo_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_model_change")
    warehouse, model = root / "warehouse", root / "models" / "model.pkl"
    small_warehouse(warehouse, "2026-12-31")
    return root, warehouse, model


def _demo(env: AirflowEnv, root: Path, warehouse: Path, model: Path, digest: str, slack) -> str:
    """One ``make demo`` for DATE with the model digest as make demo passes it; its output."""
    local_conn = {
        "conn_type": "kfp",
        "extra": {"backend": "local", "local_state_dir": str(root / "runs")},
    }
    extra = {
        "AIRFLOW_CONN_KFP_DEFAULT": json.dumps(local_conn),
        "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri(),
        "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(model),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digest,
        "DAILY_PREDICTION_POLL_SECONDS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--date", DATE,
         "--dag-id", "daily_prediction", "--log", str(root / "dags-test.log")],
        env={**env.env, **extra}, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:] + (root / "dags-test.log").read_text()[-6000:]
    return output


def _runs(root: Path) -> list[dict]:
    """The local pipeline runs of DATE's task, oldest first."""
    found = []
    for request in (root / "runs").glob("*/request.json"):
        body = json.loads(request.read_text())
        if body["display_name"] == RUN_NAME:
            found.append({"run_id": request.parent.name, "mtime": request.stat().st_mtime})
    return sorted(found, key=lambda r: r["mtime"])


def _written_digests(warehouse: Path) -> list[str]:
    args = ["--target-date", DATE, "--warehouse", str(warehouse), "--json"]
    return json.loads(pipeline_module("kfp_prediction.summary", *args))["model_sha256"]


def _asset_digest(env: AirflowEnv) -> str:
    with sqlite3.connect(env.home / "airflow.db") as db:
        [(extra,)] = db.execute(
            "SELECT e.extra FROM asset_event e WHERE e.source_dag_id = 'daily_prediction' "
            "AND e.partition_key = ? ORDER BY e.id DESC LIMIT 1",
            (DATE,),
        ).fetchall()
    return json.loads(extra)["model_sha256"]


def test_a_changed_model_starts_a_new_run_and_an_unchanged_demo_reattaches(
    airflow_env, demo_setup, slack_server
):
    root, warehouse, model = demo_setup
    old = _train(warehouse, model, "2026-12-01")
    first = _demo(airflow_env, root, warehouse, model, old, slack_server)
    [first_run] = _runs(root)
    assert f"Submitted run {first_run['run_id']}" in first, first
    assert _written_digests(warehouse) == [old]
    assert _asset_digest(airflow_env) == old

    # The model file is retrained in place: same path, other bytes, other digest.
    new = _train(warehouse, model, "2026-12-20")
    assert new != old
    second = _demo(airflow_env, root, warehouse, model, new, slack_server)
    runs = _runs(root)
    assert [r["run_id"] for r in runs][:1] == [first_run["run_id"]] and len(runs) == 2, runs
    new_run = runs[1]["run_id"]
    # Not reattached: the log, repeated on screen, says the earlier run had other parameters
    assert "Reattaching" not in second and "nothing recomputed" not in second
    assert (
        f"Earlier run {first_run['run_id']} ({RUN_NAME}) SUCCEEDED with other parameters "
        "(model_sha256): not reusing it; starting a new run"
    ) in second, second
    assert f"Submitted run {new_run}" in second, second
    # What the demo prints (the summary of the partition) and the asset event: the new model
    assert _written_digests(warehouse) == [new]
    assert _asset_digest(airflow_env) == new

    # The same demo again, nothing changed: reattach to the new run, nothing recomputed.
    third = _demo(airflow_env, root, warehouse, model, new, slack_server)
    assert len(_runs(root)) == 2  # no run started
    assert f"Reattaching to existing run {new_run} of " in third, third
    assert "same parameters, state SUCCEEDED: nothing recomputed" in third, third
    assert "Submitted run" not in third
    assert _written_digests(warehouse) == [new]

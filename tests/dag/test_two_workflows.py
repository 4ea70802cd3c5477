"""Both demo workflows of the registry, run by real Airflow on the local backend (issue 19).

``daily_prediction`` (06:00 JST, linear model, 28 days, table ``predictions``) and
``morning_ranking`` (09:00 JST, tree model, 7 days, table ``ranking_predictions``) share one
warehouse and one compiled pipeline. Each ``airflow dags test`` run submits through its own
KFP connection (a local backend with its own state directory) and must write only its own
table's partition (and its own features table's), never the other workflow's; the asset
event of each names its own table. The second workflow then runs for a second target date,
which adds that date's partition and leaves the first date's as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dag.helpers import REPO, asset_events, pipeline_module, small_warehouse, train_model

DAY, NEXT = "2027-01-01", "2027-01-02"
DAILY_TABLES = ("predictions", "user_features")
RANKING_TABLES = ("ranking_predictions", "ranking_predictions_user_features")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One small warehouse, the two workflows' models, an Airflow environment for both."""
    root = tmp_path_factory.mktemp("two_workflows")
    warehouse = small_warehouse(root / "warehouse", "2027-01-01")
    digests = {}
    for kind in ("linear", "tree"):
        model = root / "models" / f"{kind}.pkl"
        digests[kind] = (model, train_model(warehouse, model, "--kind", kind))

    def conn(state: str) -> str:
        extra = {"backend": "local", "local_state_dir": str(root / state)}
        return json.dumps({"conn_type": "kfp", "extra": extra})

    env = {
        "AIRFLOW_CONN_KFP_DEFAULT": conn("runs_default"),
        "AIRFLOW_CONN_KFP_RECOMMENDATION": conn("runs_recommendation"),
        "DAILY_PREDICTION_WAREHOUSE": str(warehouse),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_URI": str(digests["linear"][0]),
        "AIRFLOW_VAR_DAILY_PREDICTION_MODEL_SHA256": digests["linear"][1],
        "AIRFLOW_VAR_MORNING_RANKING_MODEL_URI": str(digests["tree"][0]),
        "AIRFLOW_VAR_MORNING_RANKING_MODEL_SHA256": digests["tree"][1],
        "DAILY_PREDICTION_POLL_SECONDS": "1",
        "MORNING_RANKING_POLL_SECONDS": "1",
    }
    return root, warehouse, {k: v[1] for k, v in digests.items()}, env


def _dags_test(airflow_env, env: dict, dag_id: str, logical: str, slack) -> str:
    proc = airflow_env.run(
        "dags", "test", dag_id, logical,
        extra_env={**env, "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_uri()},
        check=False, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "state=success" in output, output[-6000:]
    return output


def _files(warehouse: Path, tables: tuple[str, ...]) -> dict[str, bytes]:
    """Every file of these tables, temporary ones included, by relative path."""
    return {
        str(p.relative_to(warehouse)): p.read_bytes()
        for table in tables
        if (warehouse / table).is_dir()
        for p in sorted((warehouse / table).iterdir())
    }


def _summary(warehouse: Path, date: str, table: str) -> dict:
    args = ["--target-date", date, "--warehouse", str(warehouse), "--table", table, "--json"]
    return json.loads(pipeline_module("kfp_prediction.summary", *args))


def _asset_events(airflow_env, dag_id: str, warehouse: Path) -> list[tuple[str, str, dict]]:
    """The DAG's asset events on tables of ``warehouse`` (other tests share the database)."""
    events = asset_events(airflow_env.home, "e.source_dag_id", dag_id)
    prefix = warehouse.as_uri() + "/"
    return [(uri, key, extra) for uri, _, key, extra in events if uri.startswith(prefix)]


def _runs(state_dir: Path) -> list[str]:
    return sorted(
        json.loads(p.read_text())["display_name"] for p in state_dir.glob("*/request.json")
    )


def test_each_workflow_writes_only_its_own_table(airflow_env, shared, slack_server):
    root, warehouse, digests, env = shared

    out = _dags_test(airflow_env, env, "daily_prediction", f"{DAY}T06:00:00+09:00", slack_server)
    gate_read = {"daily_prediction": out}
    daily_files = _files(warehouse, DAILY_TABLES)
    assert sorted(daily_files) == [
        "predictions/2027-01-01.parquet",
        "user_features/2027-01-01.parquet",
    ]
    assert _files(warehouse, RANKING_TABLES) == {}

    out = _dags_test(airflow_env, env, "morning_ranking", f"{DAY}T09:00:00+09:00", slack_server)
    gate_read["morning_ranking"] = out
    assert sorted(_files(warehouse, RANKING_TABLES)) == [
        "ranking_predictions/2027-01-01.parquet",
        "ranking_predictions_user_features/2027-01-01.parquet",
    ]
    # The second workflow left the first one's partitions byte for byte as they were.
    assert _files(warehouse, DAILY_TABLES) == daily_files

    daily = _summary(warehouse, DAY, "predictions")
    ranking = _summary(warehouse, DAY, "ranking_predictions")
    assert daily["model_sha256"] == [digests["linear"]]
    assert ranking["model_sha256"] == [digests["tree"]]
    assert daily["rows"] == daily["users"] > 0 and ranking["rows"] == ranking["users"] > 0
    assert daily["run_ids"] != ranking["run_ids"]
    # Each run's data-quality gate read its own partition: its rows, model and run id.
    for (dag_id, table), summary, digest in (
        (("daily_prediction", "predictions"), daily, digests["linear"]),
        (("morning_ranking", "ranking_predictions"), ranking, digests["tree"]),
    ):
        [run_id] = summary["run_ids"]
        assert (
            f"Data-quality gate passed: {warehouse / table / f'{DAY}.parquet'} holds "
            f"{summary['rows']} rows of model {digest} from run {run_id}"
        ) in gate_read[dag_id]

    # Each submitted through its own connection: its own local backend's state directory.
    [daily_run] = _runs(root / "runs_default")
    [ranking_run] = _runs(root / "runs_recommendation")
    assert daily_run == "daily_prediction__predict__2027-01-01__manual-060000"
    assert ranking_run == "morning_ranking__predict__2027-01-01__manual-090000"

    # Each asset event names its own table and the partition its run wrote.
    [(uri, key, extra)] = _asset_events(airflow_env, "daily_prediction", warehouse)[-1:]
    assert (uri, key) == ((warehouse / "predictions").as_uri(), DAY)
    assert extra["partition"] == str(warehouse / "predictions" / f"{DAY}.parquet")
    [(uri, key, extra)] = _asset_events(airflow_env, "morning_ranking", warehouse)
    assert (uri, key) == ((warehouse / "ranking_predictions").as_uri(), DAY)
    assert extra["partition"] == str(warehouse / "ranking_predictions" / f"{DAY}.parquet")
    assert extra["model_sha256"] == digests["tree"]
    assert slack_server.requests == []


def test_the_second_workflow_over_two_dates_adds_only_its_partitions(
    airflow_env, shared, slack_server
):
    """Runs after the test above (same module data): a second target date of morning_ranking."""
    _, warehouse, _, env = shared
    if not (warehouse / "ranking_predictions" / f"{DAY}.parquet").exists():
        _dags_test(airflow_env, env, "morning_ranking", f"{DAY}T09:00:00+09:00", slack_server)
    before = _files(warehouse, DAILY_TABLES + RANKING_TABLES)

    _dags_test(airflow_env, env, "morning_ranking", f"{NEXT}T09:00:00+09:00", slack_server)
    after = _files(warehouse, DAILY_TABLES + RANKING_TABLES)
    added = sorted(set(after) - set(before))
    assert added == [
        f"ranking_predictions/{NEXT}.parquet",
        f"ranking_predictions_user_features/{NEXT}.parquet",
    ]
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else touched
    keys = [key for _, key, _ in _asset_events(airflow_env, "morning_ranking", warehouse)]
    assert keys[-1] == NEXT and DAY in keys
    assert _summary(warehouse, NEXT, "ranking_predictions")["target_date"] == NEXT


def test_make_demo_runs_each_workflow_at_its_own_time_on_its_own_connection():
    """scripts/demo.py reads the registry: the run for target date D is the one at D 09:00 JST
    for morning_ranking, D 06:00 JST for daily_prediction; other DAGs keep the defaults."""
    import datetime as dt
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    daily = demo.workflow_settings("daily_prediction")
    ranking = demo.workflow_settings("morning_ranking")
    assert (daily.at, daily.zone, daily.kfp_conn_id) == ("06:00", "Asia/Tokyo", "kfp_default")
    assert (ranking.at, ranking.zone, ranking.kfp_conn_id) == (
        "09:00",
        "Asia/Tokyo",
        "kfp_recommendation",
    )
    assert (ranking.target_tz, ranking.partition) == ("Asia/Tokyo", "daily")
    other = demo.workflow_settings("demo_tiny")
    assert (other.at, other.zone, other.kfp_conn_id) == ("06:00", "Asia/Tokyo", "kfp_default")
    logical = demo.scheduled_at(dt.date(2027, 1, 1), "09:00", "Asia/Tokyo")
    assert logical.in_timezone("UTC").isoformat() == "2027-01-01T00:00:00+00:00"
    with pytest.raises(SystemExit, match="--at '9h' is not a time HH:MM"):
        demo.scheduled_at(dt.date(2027, 1, 1), "9h", "Asia/Tokyo")

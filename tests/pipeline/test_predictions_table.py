"""The ``predictions_table`` parameter: each workflow writes its own output and features table.

Two workflows sharing one warehouse (issue 19: the daily coupon prediction and a second one
with another model and output) must never overwrite each other's partitions, and a bad table
name must fail before anything is read or written, naming the parameter.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import PredictionsTableError
from kfp_prediction.parameters import FEATURES_STEP, PREDICT_STEP, ROOT_PARAMETERS
from kfp_prediction.schema import (
    FEATURES_TABLE,
    check_predictions_table,
    features_table,
    predictions_schema,
)
from kfp_prediction.steps import run_steps
from kfp_prediction.summary import summarize_partition
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.bigquery import BigQueryWarehouse
from kfp_prediction.warehouse.local import partition_path
from pipeline_support import TARGET_DATE, Model

DAY = dt.date.fromisoformat(TARGET_DATE)
OTHER = "ranking_predictions"


def _run(warehouse: Path, model: Model, **kw) -> dict:
    return run_steps(
        target_date=TARGET_DATE,
        warehouse=str(warehouse),
        model_uri=model.uri,
        model_sha256=model.sha256,
        run_id=kw.pop("run_id", "r-1"),
        run_name="n-1",
        **kw,
    )


def _tables(warehouse: Path) -> set[str]:
    """Directories that hold at least one partition file (the tables written so far)."""
    return {p.parent.name for p in warehouse.glob("*/*.parquet")}


def test_the_parameter_is_declared_for_both_steps_with_the_old_default() -> None:
    [param] = [p for p in ROOT_PARAMETERS if p.name == "predictions_table"]
    assert param.default == "predictions" and param.type is str
    assert set(param.steps) == {FEATURES_STEP, PREDICT_STEP}


def test_features_table_is_keyed_per_output() -> None:
    assert features_table() == FEATURES_TABLE == "user_features"
    assert features_table("predictions") == "user_features"
    assert features_table(OTHER) == "ranking_predictions_user_features"
    assert features_table("a") != features_table("b")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "is not a table name"),
        ("Ranking", "is not a table name"),
        ("ranking-predictions", "is not a table name"),
        ("../predictions", "is not a table name"),
        ("shop.predictions", "is not a table name"),
        ("1st", "is not a table name"),
        ("x" * 129, "is not a table name"),
        (7, "is not a table name"),
        ("users", "is reserved"),
        ("page_views", "is reserved"),
        ("user_features", "is reserved"),
        ("ranking_user_features", "is reserved"),
    ],
)
def test_bad_names_are_refused_naming_the_parameter(name: object, words: str) -> None:
    with pytest.raises(PredictionsTableError, match=words) as caught:
        check_predictions_table(name)
    assert str(caught.value).startswith("predictions_table ")
    assert caught.value.input == "predictions_table" and caught.value.permanent


def test_a_bad_name_fails_before_anything_is_read_or_written(warehouse: Path, model: Model) -> None:
    before = sorted(p.relative_to(warehouse) for p in warehouse.rglob("*"))
    with pytest.raises(PredictionsTableError, match="predictions_table 'users' is reserved"):
        _run(warehouse, model, predictions_table="users")
    with pytest.raises(PredictionsTableError, match="predictions_table"):
        open_warehouse("bigquery://my-project/shop", predictions_table="a;drop")
    assert sorted(p.relative_to(warehouse) for p in warehouse.rglob("*")) == before


def test_two_outputs_in_one_warehouse_keep_their_own_partitions(
    warehouse: Path, model: Model
) -> None:
    first = _run(warehouse, model, run_id="daily")
    default_files = {
        table: partition_path(warehouse, DAY, table).read_bytes()
        for table in ("predictions", "user_features")
    }
    second = _run(warehouse, model, run_id="ranking", lookback_days=7, predictions_table=OTHER)

    assert first["predict"]["partition"] == str(partition_path(warehouse, DAY))
    assert first["features"]["features"] == str(partition_path(warehouse, DAY, "user_features"))
    assert second["predict"]["partition"] == str(partition_path(warehouse, DAY, OTHER))
    assert second["features"]["features"] == str(
        partition_path(warehouse, DAY, "ranking_predictions_user_features")
    )
    assert _tables(warehouse) >= {
        "predictions",
        "user_features",
        OTHER,
        "ranking_predictions_user_features",
    }
    # The second run left the first's partitions byte for byte as they were.
    for table, data in default_files.items():
        assert partition_path(warehouse, DAY, table).read_bytes() == data
    ranking = pq.read_table(partition_path(warehouse, DAY, OTHER))
    assert ranking.schema.equals(predictions_schema())
    assert set(ranking["run_id"].to_pylist()) == {"ranking"}
    assert set(pq.read_table(partition_path(warehouse, DAY))["run_id"].to_pylist()) == {"daily"}
    # The summary `make demo` prints reads the table it is given.
    summary = summarize_partition(str(warehouse), TARGET_DATE, table=OTHER)
    assert (summary["table"], summary["run_ids"]) == (OTHER, ["ranking"])
    assert json.loads(json.dumps(summary))["path"] == str(partition_path(warehouse, DAY, OTHER))
    assert summarize_partition(str(warehouse), TARGET_DATE)["run_ids"] == ["daily"]


def test_predict_refuses_another_outputs_features(warehouse: Path, model: Model) -> None:
    """The hand-off must be this output's own features partition, not the default one's."""
    from kfp_prediction.errors import InvalidSourceDataError
    from kfp_prediction.predict_step import predict

    features = _run(warehouse, model)["features"]["features"]
    with pytest.raises(InvalidSourceDataError, match="ranking_predictions_user_features"):
        predict(
            TARGET_DATE,
            str(warehouse),
            features,
            model.uri,
            model.sha256,
            predictions_table=OTHER,
        )
    assert not (warehouse / OTHER).exists()


class _Job:
    total_rows = 3

    def result(self):
        return self


class _RecordingClient:
    def __init__(self) -> None:
        self.destinations: list[str] = []

    def load_table_from_file(self, file_obj, destination, job_config):
        self.destinations.append(destination)
        return _Job()

    def query(self, sql, job_config):
        table = job_config.destination
        self.destinations.append(f"{table.project}.{table.dataset_id}.{table.table_id}")
        return _Job()


def test_bigquery_writes_the_outputs_own_tables() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client, predictions_table=OTHER)
    window = TargetWindow.build(TARGET_DATE, 7)
    features, _ = wh.materialize_features(window)
    written = wh.write_predictions(DAY, [predictions_schema().empty_table()])
    stamp = f"{DAY:%Y%m%d}"
    assert features == f"my-project.shop.ranking_predictions_user_features${stamp}"
    assert written == f"my-project.shop.ranking_predictions${stamp}"
    assert client.destinations == [features, written]
    assert wh.features_partition(DAY) == features
    # The default output keeps its historical tables.
    default = BigQueryWarehouse("my-project", "shop", client=_RecordingClient())
    assert default.features_partition(DAY) == f"my-project.shop.user_features${stamp}"
    assert default.write_predictions(DAY, [pa.Table.from_pylist([], predictions_schema())]) == (
        f"my-project.shop.predictions${stamp}"
    )
    assert (
        open_warehouse("bigquery://my-project/shop", predictions_table=OTHER).predictions_table
        == OTHER
    )

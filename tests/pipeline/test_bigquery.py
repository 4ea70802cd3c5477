"""BigQuery path, offline: generated SQL, load job configuration and the load call.

Not run against real BigQuery (no credentials or network here). The client stand-in below
replaces Google's client, not our code: it records what our warehouse asks BigQuery to do.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import WarehouseUnreachableError
from kfp_prediction.schema import PREDICTIONS_SCHEMA
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.bigquery import BigQueryWarehouse, predictions_load_job_config


def test_location_scheme_selects_bigquery() -> None:
    wh = open_warehouse("bigquery://my-project/shop?location=asia-northeast1")
    assert isinstance(wh, BigQueryWarehouse)
    assert (wh.project, wh.dataset, wh.bq_location) == ("my-project", "shop", "asia-northeast1")


@pytest.mark.parametrize("location", ["bigquery://my-project", "bigquery:///shop", "s3://b/k", ""])
def test_bad_locations_are_named(location: str) -> None:
    with pytest.raises(WarehouseUnreachableError, match="warehouse location"):
        open_warehouse(location)


def test_partition_decorator_and_load_config() -> None:
    wh = BigQueryWarehouse("my-project", "shop")
    assert wh.partition_id(dt.date(2026, 11, 27)) == "my-project.shop.predictions$20261127"
    config = predictions_load_job_config()
    assert isinstance(config, bigquery.LoadJobConfig)
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.source_format == bigquery.SourceFormat.PARQUET
    assert config.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert config.time_partitioning.field == "target_date"
    assert [f.name for f in config.schema] == PREDICTIONS_SCHEMA.names
    assert {f.name: f.field_type for f in config.schema}["target_date"] == "DATE"
    api = config.to_api_repr()["load"]
    assert api["writeDisposition"] == "WRITE_TRUNCATE"
    assert api["timePartitioning"] == {"type": "DAY", "field": "target_date"}


def test_feature_sql_is_pushed_down_with_qualified_tables() -> None:
    wh = BigQueryWarehouse("my-project", "shop")
    sql = wh.user_features_sql(TargetWindow.build("2026-11-27", 28))
    assert "`my-project`.shop.page_views" in sql
    assert "`my-project`.shop.purchases" in sql and "`my-project`.shop.users" in sql
    assert "CAST('2026-11-26 15:00:00+00' AS TIMESTAMP)" in sql
    assert wh.count_sql("page_views", bounded=True).endswith(
        "WHERE event_time >= @start_utc AND event_time < @end_utc"
    )


class _Job:
    def __init__(self, rows: pa.Table | None = None) -> None:
        self.rows = rows

    def result(self) -> None:
        return None

    def to_arrow(self) -> pa.Table:
        return self.rows


class _RecordingClient:
    def __init__(self, query_result: pa.Table | None = None) -> None:
        self.loads: list[tuple[bytes, str, bigquery.LoadJobConfig]] = []
        self.queries: list[str] = []
        self.query_result = query_result

    def load_table_from_file(self, file_obj, destination, job_config):
        self.loads.append((file_obj.read(), destination, job_config))
        return _Job()

    def query(self, sql, job_config):
        self.queries.append(sql)
        return _Job(self.query_result)


def test_feature_query_result_is_handed_out_in_batches() -> None:
    one_row_chunks = pa.chunked_array([[i] for i in range(5)], pa.int64())  # as BigQuery sends
    client = _RecordingClient(pa.table({"user_id": one_row_chunks}))
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    window = TargetWindow.build("2026-11-27", 28)
    batches = list(wh.user_feature_batches(window, rows_per_batch=2))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert client.queries == [wh.user_features_sql(window)]


def test_failed_stream_loads_nothing() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)

    def parts():
        yield PREDICTIONS_SCHEMA.empty_table()
        raise MemoryError("scoring failed")

    with pytest.raises(MemoryError):
        wh.write_predictions(dt.date(2026, 11, 27), parts())
    assert client.loads == []  # WRITE_TRUNCATE never ran: the partition is as it was


def test_write_loads_parquet_into_the_date_partition() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    rows = PREDICTIONS_SCHEMA.empty_table()
    assert (
        wh.write_predictions(dt.date(2026, 11, 27), [rows])
        == "my-project.shop.predictions$20261127"
    )
    [(payload, destination, config)] = client.loads
    assert destination == "my-project.shop.predictions$20261127"
    assert config.write_disposition == "WRITE_TRUNCATE"
    assert pq.read_table(pa.BufferReader(payload)).schema.names == PREDICTIONS_SCHEMA.names


def test_unreachable_bigquery_is_named() -> None:
    # A real client pointed at a closed loopback port: connection refused, no network used.
    client = bigquery.Client(
        project="my-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": "http://127.0.0.1:9"},
    )
    wh = BigQueryWarehouse("my-project", "shop", client=client, timeout=2.0)
    with pytest.raises(WarehouseUnreachableError, match="bigquery://my-project/shop"):
        wh.check_reachable()

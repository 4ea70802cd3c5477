"""BigQuery warehouse: the feature query runs in BigQuery, predictions load into a partition.

Location ``bigquery://PROJECT/DATASET`` (optionally ``?location=asia-northeast1``). The
predictions table is day-partitioned on ``target_date``; each run loads into the partition
decorator ``predictions$YYYYMMDD`` with WRITE_TRUNCATE, which BigQuery applies atomically:
the partition holds the old rows until the load job succeeds, then exactly the new ones.

Not run against real BigQuery in this repository: tests build the SQL and the load job
configuration offline and assert on them.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.features import bigquery_user_features_sql
from kfp_prediction.schema import PREDICTIONS_SCHEMA, PREDICTIONS_TABLE
from kfp_prediction.warehouse.base import Warehouse

_BQ_TYPES = {
    pa.date32(): "DATE",
    pa.int64(): "INT64",
    pa.string(): "STRING",
    pa.float64(): "FLOAT64",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}


def predictions_bigquery_schema() -> list[Any]:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(field.name, _BQ_TYPES[field.type], mode="REQUIRED")
        for field in PREDICTIONS_SCHEMA
    ]


def predictions_load_job_config() -> Any:
    """Load configuration: Parquet into a day partition on target_date, replacing it."""
    from google.cloud import bigquery

    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        time_partitioning=bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="target_date"
        ),
        schema=predictions_bigquery_schema(),
    )


class BigQueryWarehouse(Warehouse):
    """Source tables and predictions in one BigQuery dataset."""

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        location: str | None = None,
        client: Any = None,
        timeout: float = 60.0,
    ) -> None:
        self.project = project
        self.timeout = timeout
        self.dataset = dataset
        self.bq_location = location
        self.location = f"bigquery://{project}/{dataset}"
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            try:
                self._client = bigquery.Client(project=self.project, location=self.bq_location)
            except Exception as exc:  # no credentials, bad project...
                raise WarehouseUnreachableError(
                    f"warehouse location {self.location!r} is unreachable: {exc}"
                ) from exc
        return self._client

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def partition_id(self, target_date: dt.date) -> str:
        """Partition decorator of one target date, e.g. ``p.d.predictions$20261127``."""
        return f"{self.table_id(PREDICTIONS_TABLE)}${target_date:%Y%m%d}"

    def user_features_sql(self, window: TargetWindow) -> str:
        return bigquery_user_features_sql(window, f"{self.project}.{self.dataset}")

    def count_sql(self, table: str, bounded: bool) -> str:
        sql = f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}`"
        if bounded:
            sql += " WHERE event_time >= @start_utc AND event_time < @end_utc"
        return sql

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            return fn(*args, **kwargs)
        except gexc.NotFound as exc:
            raise NoSourceDataError(f"{what} not found in {self.location}: {exc}") from exc
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise WarehouseUnreachableError(
                f"warehouse location {self.location!r} failed on {what}: {exc}"
            ) from exc

    def check_reachable(self) -> None:
        from google.cloud.bigquery import DEFAULT_RETRY

        try:
            self.client.get_dataset(
                f"{self.project}.{self.dataset}",
                retry=DEFAULT_RETRY.with_deadline(self.timeout),
                timeout=self.timeout,
            )
        except WarehouseUnreachableError:
            raise
        except Exception as exc:  # API errors, refused connections, exhausted retries
            raise WarehouseUnreachableError(
                f"warehouse location {self.location!r} is unreachable: {exc}"
            ) from exc

    def columns(self, table: str) -> set[str]:
        found = self._call(f"source table {table}", self.client.get_table, self.table_id(table))
        return {field.name for field in found.schema}

    def _query(self, what: str, sql: str, params: list[Any] | None = None) -> pa.Table:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params or [])
        job = self._call(what, self.client.query, sql, job_config=config)
        return self._call(what, job.to_arrow)

    def count_rows(
        self, table: str, start_utc: dt.datetime | None = None, end_utc: dt.datetime | None = None
    ) -> int:
        from google.cloud import bigquery

        bounded = start_utc is not None and end_utc is not None
        params = (
            [
                bigquery.ScalarQueryParameter("start_utc", "TIMESTAMP", start_utc),
                bigquery.ScalarQueryParameter("end_utc", "TIMESTAMP", end_utc),
            ]
            if bounded
            else None
        )
        result = self._query(f"source table {table}", self.count_sql(table, bounded), params)
        return int(result.column("n")[0].as_py())

    def user_feature_batches(
        self, window: TargetWindow, rows_per_batch: int = 200_000
    ) -> pa.RecordBatchReader:
        # The result is downloaded whole (~200 MB at 1M users), then handed out in batches;
        # it arrives in many small chunks, which to_reader would only split, never merge.
        table = self._query("feature query", self.user_features_sql(window)).combine_chunks()
        return table.to_reader(max_chunksize=rows_per_batch)

    def contents(self) -> pa.Table:
        sql = (
            "SELECT content_id, channel, category, discount_rate "
            f"FROM `{self.table_id('contents')}` ORDER BY content_id"
        )
        return self._query("source table contents", sql)

    def write_predictions(self, target_date: dt.date, parts: Iterable[pa.Table]) -> str:
        buffer = io.BytesIO()
        with pq.ParquetWriter(buffer, PREDICTIONS_SCHEMA) as writer:
            for part in parts:
                writer.write_table(part)
        buffer.seek(0)
        destination = self.partition_id(target_date)
        job = self._call(
            "predictions load",
            self.client.load_table_from_file,
            buffer,
            destination,
            job_config=predictions_load_job_config(),
        )
        self._call("predictions load", job.result)
        return destination

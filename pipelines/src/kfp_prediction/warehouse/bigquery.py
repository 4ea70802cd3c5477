"""BigQuery warehouse: features and predictions are day partitions of tables in one dataset.

Location ``bigquery://PROJECT/DATASET`` with optional settings (``BigQuerySettings``):
``?location=asia-northeast1``; for an emulator ``endpoint=http://HOST:PORT`` (REST),
``read_endpoint=HOST:PORT`` (Storage Read API, gRPC) and ``credentials=anonymous``.

* The features step runs the feature query as a query job into ``user_features$YYYYMMDD``
  with WRITE_TRUNCATE: the result never leaves BigQuery. A count of the users it would write
  comes first, so a run below its ``min_rows`` floor starts no job.
* The predict step reads that partition through the Storage Read API as Arrow record
  batches (one stream, a row restriction on ``target_date``), so memory is bounded by the
  batch, and loads the predictions into ``predictions$YYYYMMDD`` with WRITE_TRUNCATE.

A workflow whose output is ``T`` (the ``predictions_table`` parameter) writes ``T$YYYYMMDD``
and its own ``T_user_features$YYYYMMDD`` instead (``schema.features_table``).

Both tables are day-partitioned on ``target_date``; BigQuery applies a WRITE_TRUNCATE job to a
partition atomically: it holds the old rows until the job succeeds, then exactly the new ones.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa
import pyarrow.parquet as pq

from kfp_prediction import liveness
from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import (
    NoSourceDataError,
    SourceUnavailableError,
    WarehouseUnreachableError,
)
from kfp_prediction.features import REGISTERED_USERS_SQL, bigquery_user_features_sql
from kfp_prediction.schema import PREDICTIONS_TABLE, predictions_schema
from kfp_prediction.warehouse.base import Warehouse, check_row_floor

_BQ_TYPES = {
    pa.date32(): "DATE",
    pa.int64(): "INT64",
    pa.string(): "STRING",
    pa.float64(): "FLOAT64",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}


# ErrorProto reasons BigQuery returns for failures another try may not meet: rate and quota
# limits come as 403 Forbidden (rateLimitExceeded, quotaExceeded), overload as 500/503
# (backendError, internalError), per the "Error messages" table of the BigQuery docs.
# Any other 4xx (invalid, notFound, accessDenied, billingNotEnabled...) is bad input.
TRANSIENT_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "quotaExceeded",
        "backendError",
        "internalError",
        "jobBackendError",
        "jobInternalError",
    }
)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Failures another try may not meet, whatever their reason: 5xx, 429, deadlines,
    exhausted retries, connection failures (requests' own ConnectionError is not the
    builtin one), and auth transport failures (the metadata server is not ready yet when
    a pod starts). A token refresh failure is judged by :func:`is_transient`."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return (
        gexc.ServerError,
        gexc.TooManyRequests,
        gexc.DeadlineExceeded,
        gexc.RetryError,
        auth_exc.TransportError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        ConnectionError,
        TimeoutError,
    )


def error_reason(exc: BaseException) -> str | None:
    """The ErrorProto reason of a Google API error (``errors[0]['reason']``), if any."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors else None
    if isinstance(first, dict) and first.get("reason"):
        return str(first["reason"])
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else None


def is_transient(exc: BaseException) -> bool:
    """Whether another try may not meet ``exc`` (a retryable failure, not bad input).

    A token refresh failure is retryable only when google-auth says so
    (``RefreshError.retryable``) or a transport failure caused it (the metadata server not
    answering yet): ``invalid_grant``, a deleted key or a refused impersonation are not.
    """
    from google.auth import exceptions as auth_exc

    if isinstance(exc, auth_exc.RefreshError):
        cause = exc.__cause__ or exc.__context__
        return bool(getattr(exc, "retryable", False)) or (cause is not None and is_transient(cause))
    return isinstance(exc, _transient_errors()) or error_reason(exc) in TRANSIENT_REASONS


_PARTITION_REF = re.compile(r"^(?P<table>[^$]+)\$(?P<date>\d{8})$")


# Google Cloud project IDs: 6 to 30 lower-case letters, digits or hyphens, starting with a
# letter and not ending with a hyphen (Resource Manager's rule). Dataset IDs: letters, digits
# and underscores, at most 1,024 (the BigQuery API's DatasetReference). Both are spliced into
# table ids and backtick-quoted SQL, so nothing else may reach them.
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DOMAIN_SCOPED_PROJECT = re.compile(r"^[a-z][a-z0-9.-]*:[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


def check_names(project: str, dataset: str) -> None:
    """Refuse a project or dataset BigQuery would not name (before any client or query).

    Domain-scoped projects (``example.com:project``) are refused by name: their ``:`` and
    ``.`` do not survive the dotted table ids and partition references the steps hand over.
    """
    where = f"bigquery://{project}/{dataset}"
    if _DOMAIN_SCOPED_PROJECT.match(project or ""):
        raise WarehouseUnreachableError(
            f"warehouse location {where!r}: project {project!r} is domain-scoped "
            "(DOMAIN:PROJECT), which this pipeline does not support"
        )
    if not _PROJECT_ID.match(project or ""):
        raise WarehouseUnreachableError(
            f"warehouse location {where!r}: project {project!r} is not a Google Cloud project "
            "ID (6-30 lower-case letters, digits or hyphens, starting with a letter, not "
            "ending with a hyphen)"
        )
    if not _DATASET_ID.match(dataset or ""):
        raise WarehouseUnreachableError(
            f"warehouse location {where!r}: dataset {dataset!r} is not a BigQuery dataset ID "
            "(1-1024 letters, digits or underscores)"
        )


@dataclass(frozen=True)
class BigQuerySettings:
    """Client settings from the location's query string; anything unknown is refused.

    ``credentials=anonymous`` is for an emulator only: it is refused without an ``endpoint``,
    so a production location can never fall back to unauthenticated calls. Without it the
    client uses Application Default Credentials, as on GKE and Vertex AI.
    """

    location: str | None = None
    endpoint: str | None = None
    read_endpoint: str | None = None
    anonymous: bool = False

    @classmethod
    def from_query(cls, query: str, where: str) -> BigQuerySettings:
        values = {key: items[-1] for key, items in parse_qs(query).items()}
        unknown = sorted(set(values) - {"location", "endpoint", "read_endpoint", "credentials"})
        if unknown:
            raise WarehouseUnreachableError(
                f"warehouse location {where!r} has unknown setting(s) {', '.join(unknown)} "
                "(known: location, endpoint, read_endpoint, credentials)"
            )
        credentials = values.get("credentials")
        if credentials not in (None, "anonymous"):
            raise WarehouseUnreachableError(
                f"warehouse location {where!r}: credentials must be 'anonymous' (an emulator) "
                f"or absent (Application Default Credentials), got {credentials!r}"
            )
        if credentials and not values.get("endpoint"):
            raise WarehouseUnreachableError(
                f"warehouse location {where!r}: credentials=anonymous is only for an emulator "
                "and needs endpoint=http://HOST:PORT"
            )
        return cls(
            location=values.get("location"),
            endpoint=values.get("endpoint"),
            read_endpoint=values.get("read_endpoint"),
            anonymous=credentials == "anonymous",
        )


def predictions_bigquery_schema() -> list[Any]:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(field.name, _BQ_TYPES[field.type], mode="REQUIRED")
        for field in predictions_schema()
    ]


def _day_partitioning() -> Any:
    from google.cloud import bigquery

    return bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="target_date")


def predictions_load_job_config() -> Any:
    """Load configuration: Parquet into a day partition on target_date, replacing it."""
    from google.cloud import bigquery

    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        time_partitioning=_day_partitioning(),
        schema=predictions_bigquery_schema(),
    )


def features_query_job_config(destination: str) -> Any:
    """Query configuration: the feature query's result replaces one features partition."""
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        destination=destination,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        time_partitioning=_day_partitioning(),
    )


class BigQueryWarehouse(Warehouse):
    """Source tables, features and predictions in one BigQuery dataset."""

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        settings: BigQuerySettings | None = None,
        client: Any = None,
        read_client: Any = None,
        timeout: float = 60.0,
        predictions_table: str = PREDICTIONS_TABLE,
    ) -> None:
        self._set_output(predictions_table)
        check_names(project, dataset)
        self.project = project
        self.dataset = dataset
        self.settings = settings or BigQuerySettings()
        self.timeout = timeout
        self.location = f"bigquery://{project}/{dataset}"
        self._client = client
        self._read_client = read_client

    @property
    def bq_location(self) -> str | None:
        return self.settings.location

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            kwargs: dict[str, Any] = {"project": self.project, "location": self.bq_location}
            if self.settings.endpoint:
                kwargs["client_options"] = {"api_endpoint": self.settings.endpoint}
            if self.settings.anonymous:
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
            try:
                self._client = bigquery.Client(**kwargs)
            except Exception as exc:  # the metadata server not ready; no credentials...
                raise self._unreachable(exc) from exc
        return self._client

    def _unreachable(self, exc: BaseException) -> Exception:
        """The warehouse could not be reached at all: retryable when another try may not
        meet ``exc`` (:func:`is_transient`), else the location's or credentials' fault."""
        if is_transient(exc):
            return SourceUnavailableError(
                f"warehouse location {self.location!r} is unavailable: {exc}", input="warehouse"
            )
        return WarehouseUnreachableError(
            f"warehouse location {self.location!r} is unreachable: {exc}"
        )

    @property
    def read_client(self) -> Any:
        """Storage Read API client; an emulator's plain-gRPC endpoint with anonymous access."""
        if self._read_client is None:
            from google.cloud import bigquery_storage_v1

            endpoint = self.settings.read_endpoint
            if self.settings.anonymous and endpoint:
                import grpc
                from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                    BigQueryReadGrpcTransport,
                )

                transport = BigQueryReadGrpcTransport(channel=grpc.insecure_channel(endpoint))
                self._read_client = bigquery_storage_v1.BigQueryReadClient(transport=transport)
            else:
                options = {"api_endpoint": endpoint} if endpoint else None
                self._read_client = bigquery_storage_v1.BigQueryReadClient(
                    credentials=self.client._credentials, client_options=options
                )
        return self._read_client

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def partition_id(self, target_date: dt.date, table: str = PREDICTIONS_TABLE) -> str:
        """Partition decorator of one target date, e.g. ``p.d.predictions$20261127``."""
        return f"{self.table_id(table)}${target_date:%Y%m%d}"

    def user_features_sql(self, window: TargetWindow) -> str:
        return bigquery_user_features_sql(window, f"{self.project}.{self.dataset}")

    def count_sql(self, table: str, bounded: bool) -> str:
        sql = f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}`"
        if bounded:
            sql += " WHERE event_time >= @start_utc AND event_time < @end_utc"
        return sql

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        try:
            return fn(*args, **kwargs)
        except gexc.NotFound as exc:
            raise NoSourceDataError(f"{what} not found in {self.location}: {exc}") from exc
        except Exception as exc:
            if is_transient(exc):  # another try may not meet it
                raise SourceUnavailableError(
                    f"warehouse location {self.location!r} failed on {what}: {exc}",
                    input="warehouse",
                ) from exc
            if isinstance(exc, gexc.GoogleAPICallError):  # 400 invalid, 403 accessDenied...
                raise WarehouseUnreachableError(
                    f"warehouse location {self.location!r} failed on {what}: {exc}"
                ) from exc
            if isinstance(exc, auth_exc.GoogleAuthError):  # invalid_grant, a deleted key...
                raise WarehouseUnreachableError(
                    f"warehouse location {self.location!r}: the Google credentials were "
                    f"refused on {what}: {exc}"
                ) from exc
            raise

    def check_reachable(self) -> None:
        from google.cloud.bigquery import DEFAULT_RETRY

        try:
            self.client.get_dataset(
                f"{self.project}.{self.dataset}",
                retry=DEFAULT_RETRY.with_deadline(self.timeout),
                timeout=self.timeout,
            )
        except (WarehouseUnreachableError, SourceUnavailableError):
            raise
        except Exception as exc:  # rate limits, 5xx; no access, no such dataset...
            raise self._unreachable(exc) from exc

    def columns(self, table: str) -> set[str]:
        found = self._call(f"source table {table}", self.client.get_table, self.table_id(table))
        return {field.name for field in found.schema}

    def _query(self, what: str, sql: str, params: list[Any] | None = None) -> pa.Table:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params or [])
        job = self._call(what, self.client.query, sql, job_config=config)
        return self._call(what, job.to_arrow, create_bqstorage_client=False)

    def count_rows(
        self, table: str, start_utc: dt.datetime | None = None, end_utc: dt.datetime | None = None
    ) -> int:
        bounded = start_utc is not None and end_utc is not None
        params = (
            [_timestamp_param("start_utc", start_utc), _timestamp_param("end_utc", end_utc)]
            if bounded
            else None
        )
        result = self._query(f"source table {table}", self.count_sql(table, bounded), params)
        return int(result.column("n")[0].as_py())

    def has_rows(self, table: str, start_utc: dt.datetime, end_utc: dt.datetime) -> bool:
        sql = (
            f"SELECT 1 AS present FROM `{self.table_id(table)}` "
            "WHERE event_time >= @start_utc AND event_time < @end_utc LIMIT 1"
        )
        params = [_timestamp_param("start_utc", start_utc), _timestamp_param("end_utc", end_utc)]
        return self._query(f"source table {table}", sql, params).num_rows > 0

    def registered_users(self, end_utc: dt.datetime) -> tuple[int, int]:
        sql = REGISTERED_USERS_SQL.format(end="@end_utc", table=f"`{self.table_id('users')}`")
        result = self._query("source table users", sql, [_timestamp_param("end_utc", end_utc)])
        row = result.to_pylist()[0]
        return int(row["registered"] or 0), int(row["null_ids"] or 0)

    def user_features(self, window: TargetWindow) -> pa.Table:
        return self._query("feature query", self.user_features_sql(window))

    def contents(self) -> pa.Table:
        sql = (
            "SELECT content_id, channel, category, discount_rate "
            f"FROM `{self.table_id('contents')}` ORDER BY content_id"
        )
        return self._query("source table contents", sql)

    # -- features -------------------------------------------------------------------------
    def features_partition(self, target_date: dt.date) -> str:
        return self.partition_id(target_date, self.features_table)

    def materialize_features(self, window: TargetWindow, min_rows: int = 0) -> tuple[str, int]:
        """One query job into the partition (WRITE_TRUNCATE), started only if the users it
        would write (``REGISTERED_USERS_SQL``, the query's own predicate: one row per user
        registered before the window's end) are at least ``min_rows``.

        The count is a query of its own just before the job, not part of it: rows added to or
        removed from ``users`` in between (seconds) are not seen by the floor. The predict
        step's floor still keeps the predictions partition then.
        """
        destination = self.features_partition(window.target_date)
        if min_rows > 0:
            registered, _ = self.registered_users(window.end_utc)
            check_row_floor(destination, registered, min_rows, "features")
        liveness.check(f"partition {destination}")  # a job cannot be held back once started
        job = self._call(
            "feature query",
            self.client.query,
            self.user_features_sql(window),
            job_config=features_query_job_config(destination),
        )
        result = self._call("feature query", job.result)
        return destination, int(result.total_rows or 0)

    def read_session_request(self, reference: str) -> dict[str, Any]:
        """The Storage Read API session for one features partition: Arrow, one stream."""
        from google.cloud.bigquery_storage_v1 import types

        match = _PARTITION_REF.match(reference)
        if not match:
            raise NoSourceDataError(
                f"features partition {reference!r} is not a PROJECT.DATASET.TABLE$YYYYMMDD "
                "partition"
            )
        project, dataset, table = match["table"].split(".")
        day = dt.datetime.strptime(match["date"], "%Y%m%d").date()
        session = types.ReadSession(
            table=f"projects/{project}/datasets/{dataset}/tables/{table}",
            data_format=types.DataFormat.ARROW,
            read_options=types.ReadSession.TableReadOptions(
                row_restriction=f"target_date = DATE '{day:%Y-%m-%d}'"
            ),
        )
        return {
            "parent": f"projects/{self.project}",
            "read_session": session,
            "max_stream_count": 1,
        }

    def feature_batches(self, reference: str, rows_per_batch: int) -> pa.RecordBatchReader:
        request = self.read_session_request(reference)
        session = self._call(
            f"features partition {reference}", self.read_client.create_read_session, **request
        )
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        streams = [stream.name for stream in session.streams]
        if not streams:  # BigQuery hands out no stream for an empty result
            raise NoSourceDataError(f"features partition {reference} has no rows")

        def batches() -> Iterator[pa.RecordBatch]:
            pending: list[pa.RecordBatch] = []
            count = 0
            for name in streams:
                # Each response carries one Arrow IPC record batch in the session's schema.
                for response in self.read_client.read_rows(name):
                    payload = response.arrow_record_batch.serialized_record_batch
                    batch = pa.ipc.read_record_batch(pa.py_buffer(payload), schema)
                    pending.append(batch)
                    count += batch.num_rows
                    if count >= rows_per_batch:
                        yield from _rebatch(pending, schema, rows_per_batch)
                        pending, count = [], 0
            yield from _rebatch(pending, schema, rows_per_batch)

        return pa.RecordBatchReader.from_batches(schema, batches())

    # -- writing --------------------------------------------------------------------------
    def write_predictions(
        self, target_date: dt.date, parts: Iterable[pa.Table], min_rows: int = 0
    ) -> str:
        """One WRITE_TRUNCATE load job of the whole partition, started only once every row
        is encoded and there are at least ``min_rows``: until then the partition is as it was."""
        destination = self.partition_id(target_date, self.predictions_table)
        buffer = io.BytesIO()
        rows = 0
        with pq.ParquetWriter(buffer, predictions_schema()) as writer:
            for part in parts:
                writer.write_table(part)
                rows += part.num_rows
        check_row_floor(destination, rows, min_rows)
        buffer.seek(0)
        liveness.check(f"partition {destination}")  # a job cannot be held back once started
        job = self._call(
            "predictions load",
            self.client.load_table_from_file,
            buffer,
            destination,
            job_config=predictions_load_job_config(),
        )
        self._call("predictions load", job.result)
        return destination


def _timestamp_param(name: str, value: dt.datetime) -> Any:
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, "TIMESTAMP", value)


def _rebatch(
    batches: list[pa.RecordBatch], schema: pa.Schema, rows: int
) -> Iterator[pa.RecordBatch]:
    """The pages read so far as record batches of about ``rows`` rows (pages are small)."""
    if not batches:
        return
    table = pa.Table.from_batches(batches, schema).combine_chunks()
    yield from table.to_batches(max_chunksize=rows)

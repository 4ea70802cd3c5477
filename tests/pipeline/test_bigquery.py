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
from kfp_prediction.errors import (
    NoSourceDataError,
    SourceUnavailableError,
    TooFewRowsError,
    WarehouseUnreachableError,
)
from kfp_prediction.schema import predictions_schema
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.bigquery import (
    BigQuerySettings,
    BigQueryWarehouse,
    features_query_job_config,
    predictions_load_job_config,
)


def test_location_scheme_selects_bigquery() -> None:
    wh = open_warehouse("bigquery://my-project/shop?location=asia-northeast1")
    assert isinstance(wh, BigQueryWarehouse)
    assert (wh.project, wh.dataset, wh.bq_location) == ("my-project", "shop", "asia-northeast1")
    assert wh.settings == BigQuerySettings(location="asia-northeast1")  # ADC, no emulator


def test_emulator_settings_are_explicit() -> None:
    wh = open_warehouse(
        "bigquery://local-emulator/shop?endpoint=http://127.0.0.1:9050&read_endpoint=127.0.0.1:9060"
        "&credentials=anonymous"
    )
    assert wh.settings == BigQuerySettings(
        endpoint="http://127.0.0.1:9050", read_endpoint="127.0.0.1:9060", anonymous=True
    )
    assert isinstance(wh.client._credentials, AnonymousCredentials)


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("bigquery://my-project/shop?credentials=anonymous", "only for an emulator"),
        (
            "bigquery://my-project/shop?credentials=fallback&endpoint=http://x",
            "credentials must be",
        ),
        ("bigquery://my-project/shop?anon=1", "unknown setting(s) anon"),
    ],
)
def test_bad_bigquery_settings_are_named(location: str, words: str) -> None:
    with pytest.raises(WarehouseUnreachableError) as err:
        open_warehouse(location)
    assert words in str(err.value)


@pytest.mark.parametrize("location", ["bigquery://my-project", "bigquery:///shop", "s3://b/k", ""])
def test_bad_locations_are_named(location: str) -> None:
    with pytest.raises(WarehouseUnreachableError, match="warehouse location"):
        open_warehouse(location)


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("bigquery://example.com:my-project/shop", "project 'example.com:my-project' is domain"),
        ("bigquery://My-Project/shop", "project 'My-Project' is not a Google Cloud project ID"),
        ("bigquery://proj/shop", "project 'proj' is not a Google Cloud project ID"),
        ("bigquery://my-project-/shop", "project 'my-project-' is not"),
        ("bigquery://1project/shop", "project '1project' is not"),
        ("bigquery://my-project`; DROP/shop", "is not a Google Cloud project ID"),
        ("bigquery://user@my-project/shop", "project 'user@my-project' is not"),
        ("bigquery://my-project/shop-eu", "dataset 'shop-eu' is not a BigQuery dataset ID"),
        ("bigquery://my-project/sh`op", "dataset 'sh`op' is not a BigQuery dataset ID"),
        (f"bigquery://my-project/{'d' * 1025}", "is not a BigQuery dataset ID"),
    ],
    ids=[
        "domain-scoped",
        "upper case",
        "too short",
        "trailing hyphen",
        "leading digit",
        "backtick",
        "user info",
        "hyphen in dataset",
        "backtick in dataset",
        "dataset too long",
    ],
)
def test_bad_project_or_dataset_is_named_before_any_io(
    location: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Project and dataset go into table ids and backtick-quoted SQL: anything BigQuery would
    not name is refused at open_warehouse, naming the part, before a client exists."""
    from kfp_prediction.report import failure_fields

    def no_client(**kwargs):
        raise AssertionError("no client may be built for a bad location")

    monkeypatch.setattr(bigquery, "Client", no_client)
    with pytest.raises(WarehouseUnreachableError) as err:
        open_warehouse(location + "?location=EU")
    assert words in str(err.value)
    assert failure_fields(err.value)["permanent"] is True
    assert failure_fields(err.value)["input"] == "warehouse"
    with pytest.raises(WarehouseUnreachableError):  # constructed directly: the same check
        BigQueryWarehouse(*location.removeprefix("bigquery://").split("/", 1))


@pytest.mark.parametrize(
    ("project", "dataset"),
    [("my-project", "shop"), ("a" * 30, "D" * 1024), ("proj-1", "_x9")],
)
def test_valid_project_and_dataset_pass(project: str, dataset: str) -> None:
    wh = open_warehouse(f"bigquery://{project}/{dataset}")
    assert (wh.project, wh.dataset) == (project, dataset)


def test_partition_decorator_and_load_config() -> None:
    wh = BigQueryWarehouse("my-project", "shop")
    assert wh.partition_id(dt.date(2026, 11, 27)) == "my-project.shop.predictions$20261127"
    config = predictions_load_job_config()
    assert isinstance(config, bigquery.LoadJobConfig)
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.source_format == bigquery.SourceFormat.PARQUET
    assert config.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert config.time_partitioning.field == "target_date"
    assert [f.name for f in config.schema] == predictions_schema().names
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
        self.total_rows = 3

    def result(self):
        return self

    def to_arrow(self, create_bqstorage_client: bool = True) -> pa.Table:
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
        self.queries.append((sql, job_config))
        return _Job(self.query_result)


def test_features_are_materialized_by_a_query_job_into_the_partition() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    window = TargetWindow.build("2026-11-27", 28)
    assert wh.materialize_features(window) == ("my-project.shop.user_features$20261127", 3)
    [(sql, config)] = client.queries
    assert sql == wh.user_features_sql(window)
    assert "CAST('2026-11-27' AS DATE) AS target_date" in sql
    api = config.to_api_repr()["query"]
    assert api["destinationTable"] == {
        "projectId": "my-project",
        "datasetId": "shop",
        "tableId": "user_features$20261127",
    }
    assert api["writeDisposition"] == "WRITE_TRUNCATE"
    assert api["createDisposition"] == "CREATE_IF_NEEDED"
    assert api["timePartitioning"] == {"type": "DAY", "field": "target_date"}
    assert features_query_job_config("a.b.c$20261127").destination.table_id == "c$20261127"


def test_features_below_the_floor_start_no_query_job_into_the_partition() -> None:
    """Below ``min_rows`` registered users the WRITE_TRUNCATE job never starts: the date's
    features partition, which other models reuse, stays as it was."""
    client = _RecordingClient(pa.table({"registered": [3], "null_ids": [0]}))
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    window = TargetWindow.build("2026-11-27", 28)
    with pytest.raises(TooFewRowsError) as err:
        wh.materialize_features(window, min_rows=4)
    assert str(err.value) == (
        "features partition my-project.shop.user_features$20261127: 3 row(s), below the "
        "floor min_rows=4; not published, the previous partition is kept"
    )
    assert err.value.permanent
    [(count_sql, count_config)] = client.queries  # the count alone, no destination
    assert "registered_at < @end_utc" in count_sql and "`my-project.shop.users`" in count_sql
    assert count_config.destination is None
    [param] = count_config.query_parameters
    assert (param.name, param.value) == ("end_utc", window.end_utc)
    client.queries.clear()
    assert wh.materialize_features(window, min_rows=3)[0] == (
        "my-project.shop.user_features$20261127"
    )
    [(_, _), (sql, config)] = client.queries  # at the floor: the count, then the job
    assert sql == wh.user_features_sql(window)
    assert config.write_disposition == "WRITE_TRUNCATE"


def test_storage_read_session_for_one_partition() -> None:
    from google.cloud.bigquery_storage_v1 import types

    wh = BigQueryWarehouse("my-project", "shop")
    request = wh.read_session_request("my-project.shop.user_features$20261127")
    session = request["read_session"]
    assert request["parent"] == "projects/my-project" and request["max_stream_count"] == 1
    assert session.table == "projects/my-project/datasets/shop/tables/user_features"
    assert session.data_format == types.DataFormat.ARROW
    assert session.read_options.row_restriction == "target_date = DATE '2026-11-27'"
    with pytest.raises(NoSourceDataError, match=r"PROJECT\.DATASET\.TABLE"):
        wh.read_session_request("my-project.shop.user_features")


def test_failed_stream_loads_nothing() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)

    def parts():
        yield predictions_schema().empty_table()
        raise MemoryError("scoring failed")

    with pytest.raises(MemoryError):
        wh.write_predictions(dt.date(2026, 11, 27), parts())
    assert client.loads == []  # WRITE_TRUNCATE never ran: the partition is as it was


def test_rows_below_the_floor_load_nothing() -> None:
    """Below ``min_rows`` no load job starts: WRITE_TRUNCATE never empties the partition."""
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    rows = _prediction_rows(2)
    with pytest.raises(TooFewRowsError) as err:
        wh.write_predictions(dt.date(2026, 11, 27), iter([rows]), min_rows=1000)
    assert str(err.value) == (
        "predictions partition my-project.shop.predictions$20261127: 2 row(s), below the "
        "floor min_rows=1000; not published, the previous partition is kept"
    )
    assert client.loads == []
    assert wh.write_predictions(dt.date(2026, 11, 27), [rows], min_rows=2) == (
        "my-project.shop.predictions$20261127"
    )
    [(payload, _, config)] = client.loads  # at the floor: loaded, truncating the partition
    assert pq.read_table(pa.BufferReader(payload)).num_rows == 2
    assert config.write_disposition == "WRITE_TRUNCATE"


def _prediction_rows(n: int) -> pa.Table:
    day = dt.date(2026, 11, 27)
    values = {
        "target_date": [day] * n,
        "user_id": list(range(n)),
        "content_id": ["c1"] * n,
        "score": [0.5] * n,
        "model_sha256": ["0" * 64] * n,
        "run_id": ["r"] * n,
        "run_name": ["n"] * n,
        "created_at": [dt.datetime(2026, 11, 27, tzinfo=dt.UTC)] * n,
    }
    return pa.Table.from_pydict(values, schema=predictions_schema())


def test_write_loads_parquet_into_the_date_partition() -> None:
    client = _RecordingClient()
    wh = BigQueryWarehouse("my-project", "shop", client=client)
    rows = predictions_schema().empty_table()
    assert (
        wh.write_predictions(dt.date(2026, 11, 27), [rows])
        == "my-project.shop.predictions$20261127"
    )
    [(payload, destination, config)] = client.loads
    assert destination == "my-project.shop.predictions$20261127"
    assert config.write_disposition == "WRITE_TRUNCATE"
    assert pq.read_table(pa.BufferReader(payload)).schema.names == predictions_schema().names


def test_unreachable_bigquery_is_named() -> None:
    # A real client pointed at a closed loopback port: connection refused, no network used.
    client = bigquery.Client(
        project="my-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": "http://127.0.0.1:9"},
    )
    wh = BigQueryWarehouse("my-project", "shop", client=client, timeout=2.0)
    # Refused connections and exhausted retries may pass: retryable, not bad input.
    with pytest.raises(SourceUnavailableError, match="bigquery://my-project/shop") as err:
        wh.check_reachable()
    assert (err.value.permanent, err.value.input) == (False, "warehouse")


def test_an_endpoint_alone_never_falls_back_to_anonymous(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Without credentials=anonymous the client asks for Application Default Credentials,
    even against an emulator's endpoint, and says so when there are none."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    wh = open_warehouse("bigquery://my-project/shop?endpoint=http://127.0.0.1:9")
    assert wh.settings.anonymous is False
    with pytest.raises(WarehouseUnreachableError, match=r"no-such-key\.json"):
        wh.client  # noqa: B018 - the property builds the client


def _caused(exc: Exception, cause: Exception) -> Exception:
    """``exc`` as ``raise exc from cause`` leaves it (google-auth wraps transport errors so)."""
    exc.__cause__ = cause
    return exc


def _forbidden(reason: str) -> Exception:
    from google.api_core import exceptions as gexc

    return gexc.Forbidden(f"403 {reason}", errors=[{"reason": reason, "message": reason}])


def _classified_errors() -> dict[str, tuple[Exception, type, bool]]:
    """Each class of failure BigQuery or its transport raises: error type, permanent."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return {
        "403 rateLimitExceeded": (_forbidden("rateLimitExceeded"), SourceUnavailableError, False),
        "403 quotaExceeded": (_forbidden("quotaExceeded"), SourceUnavailableError, False),
        "500 backendError": (
            gexc.InternalServerError("500", errors=[{"reason": "backendError"}]),
            SourceUnavailableError,
            False,
        ),
        "503": (gexc.ServiceUnavailable("503"), SourceUnavailableError, False),
        "429": (gexc.TooManyRequests("429"), SourceUnavailableError, False),
        "auth transport": (
            auth_exc.TransportError("metadata server not ready"),
            SourceUnavailableError,
            False,
        ),
        "token refresh, transport cause": (
            _caused(
                auth_exc.RefreshError("Failed to retrieve token from metadata server"),
                auth_exc.TransportError("metadata server not ready"),
            ),
            SourceUnavailableError,
            False,
        ),
        "token refresh, retryable": (
            auth_exc.RefreshError("internal_failure", retryable=True),
            SourceUnavailableError,
            False,
        ),
        "token refresh, invalid_grant": (
            auth_exc.RefreshError("invalid_grant: Invalid JWT Signature."),
            WarehouseUnreachableError,
            True,
        ),
        "requests connection": (
            requests.exceptions.ConnectionError("connection reset"),
            SourceUnavailableError,
            False,
        ),
        "requests timeout": (
            requests.exceptions.ReadTimeout("read timed out"),
            SourceUnavailableError,
            False,
        ),
        "403 accessDenied": (_forbidden("accessDenied"), WarehouseUnreachableError, True),
        "403 no reason": (gexc.Forbidden("403 permission denied"), WarehouseUnreachableError, True),
        "400 invalid": (
            gexc.BadRequest("400", errors=[{"reason": "invalid"}]),
            WarehouseUnreachableError,
            True,
        ),
    }


@pytest.mark.parametrize("case", list(_classified_errors()))
def test_calls_classify_failures_by_class_and_reason(case: str) -> None:
    """Rate and quota limits (403 with those reasons), 5xx, auth transport and token refresh
    failures, requests' connection errors: retryable. 400 invalid, 403 accessDenied: bad
    input. The failure report says the same (``failure_fields``)."""
    from kfp_prediction.report import failure_fields

    raised, error, permanent = _classified_errors()[case]
    wh = BigQueryWarehouse("my-project", "shop", client=_RecordingClient())

    def fails(*args, **kwargs):
        raise raised

    with pytest.raises(error) as err:
        wh._call("source table users", fails)
    assert err.value.__cause__ is raised
    fields = failure_fields(err.value)
    assert (fields["permanent"], fields["input"], fields["error"]) == (
        permanent,
        "warehouse",
        error.__name__,
    )
    assert "bigquery://my-project/shop" in fields["message"]


def test_not_found_is_no_source_data() -> None:
    from google.api_core import exceptions as gexc

    wh = BigQueryWarehouse("my-project", "shop", client=_RecordingClient())

    def fails():
        raise gexc.NotFound("404 users", errors=[{"reason": "notFound"}])

    with pytest.raises(NoSourceDataError) as err:
        wh._call("source table users", fails)
    assert err.value.permanent


@pytest.mark.parametrize("case", list(_classified_errors()))
def test_reachability_check_classifies_failures(case: str) -> None:
    raised, error, permanent = _classified_errors()[case]

    class _Client:
        def get_dataset(self, *args, **kwargs):
            raise raised

    wh = BigQueryWarehouse("my-project", "shop", client=_Client())
    with pytest.raises(error) as err:
        wh.check_reachable()
    assert err.value.permanent is permanent


@pytest.mark.parametrize(
    ("raised", "error", "permanent"),
    [
        (lambda: _auth_error("TransportError"), SourceUnavailableError, False),
        (
            lambda: _caused(_auth_error("RefreshError"), _auth_error("TransportError")),
            SourceUnavailableError,
            False,
        ),
        (lambda: _auth_error("RefreshError"), WarehouseUnreachableError, True),
        (lambda: _auth_error("DefaultCredentialsError"), WarehouseUnreachableError, True),
    ],
    ids=["auth transport", "token refresh, transport cause", "token refresh", "no credentials"],
)
def test_client_construction_classifies_auth_failures(
    monkeypatch: pytest.MonkeyPatch, raised, error: type, permanent: bool
) -> None:
    """The metadata server not answering yet at pod start is retryable; no credentials at
    all is not."""

    def client(**kwargs):
        raise raised()

    monkeypatch.setattr(bigquery, "Client", client)
    wh = BigQueryWarehouse("my-project", "shop")
    with pytest.raises(error) as err:
        wh.client  # noqa: B018 - the property builds the client
    assert err.value.permanent is permanent


def _auth_error(name: str) -> Exception:
    from google.auth import exceptions as auth_exc

    return getattr(auth_exc, name)("metadata server at 169.254.169.254 did not answer")

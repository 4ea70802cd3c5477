"""The data-quality gate reads the predictions partition where it landed (issues 17 and 19).

In-process: the gate a registry entry builds (``ResultGate``) gets a run's result report and
reads the partition the report names, a Parquet file of a local warehouse in ``tmp_path``
or a BigQuery partition through ``BigQueryHook``, whose REST calls ``responses`` answers and
records (no network). A failed check raises before the asset event is recorded.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import responses

from kfp_bridge.results import RunResult
from prediction_app import workflow_dag
from prediction_app.partition_check import bigquery_partition_sql
from prediction_app.registry import load_registry
from prediction_app.workflow_dag import DataQualityError, ResultGate, build_dag
from tests.bridge.google_fakes import TOKEN_URI, GoogleApis, service_account_key
from tests.dag.test_registry import copy_entry, registry  # noqa: F401 (fixture)

DAY = "2027-01-01"
MODEL_A, MODEL_B = "a" * 64, "b" * 64
# The columns of kfp_prediction.schema.predictions_schema() the gate reads, and one more.
SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("model_sha256", pa.string()), ("run_id", pa.string())]
)


class Task:
    """What the gate reads of the task: the rendered parameters, and its log."""

    def __init__(self, model_sha256: str = MODEL_A) -> None:
        self.parameters = {"model_sha256": model_sha256}
        self.log = logging.getLogger("test_partition_gate")


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A partition: one row per (model digest, run id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": list(range(len(rows))),
            "model_sha256": [m for m, _ in rows],
            "run_id": [r for _, r in rows],
        },
        schema=SCHEMA,
    )
    pq.write_table(table, path)
    return path


@pytest.fixture
def gate(registry, tmp_path, monkeypatch):  # noqa: F811
    """The gate of a workflow whose output is ``checked_predictions`` in a tmp warehouse,
    min_rows 3; ``recorded`` lists the results that reached the asset event."""
    warehouse = tmp_path / "warehouse"
    copy_entry(
        registry,
        "checked",
        output__warehouse={"default": str(warehouse)},
        output__table="predictions",
        output__checks={"min_rows": 3},
    )
    loaded = load_registry(registry)
    assert loaded.errors == {}, loaded.error_message()
    [(path, workflow)] = loaded.workflows
    task = build_dag(workflow, path).get_task("predict")
    recorded: list[RunResult] = []
    monkeypatch.setattr(
        workflow_dag, "record_result", lambda result, context: recorded.append(result) or []
    )
    return task.on_result, warehouse / "predictions" / f"{DAY}.parquet", recorded


def _result(partition: Path | str, rows: int, run_id: str = "run-1", model: str = MODEL_A):
    fields = {
        "target_date": DAY,
        "partition": str(partition),
        "rows": rows,
        "model_sha256": model,
        "written_run_id": run_id,
    }
    return RunResult("kfp-run-1", None, "predict", fields)


def test_the_registry_builds_the_gate_of_its_own_table(gate, tmp_path):
    on_result, _, _ = gate
    assert isinstance(on_result, ResultGate)
    assert on_result.workflow == "checked" and on_result.min_rows == 3
    assert on_result.table == (tmp_path / "warehouse" / "predictions").as_uri()
    assert on_result.gcp_conn_id == "google_cloud_default"


def test_a_partition_of_this_model_and_run_passes(gate):
    on_result, partition, recorded = gate
    _write(partition, [(MODEL_A, "run-1")] * 4)
    result = _result(partition, 4)
    assert on_result(result, {"task": Task(MODEL_A.upper())}) == []
    assert recorded == [result]


@pytest.mark.parametrize(
    ("rows", "report", "found"),
    [
        ([], {}, r"rows: expected at least 3, found 0"),
        ([(MODEL_A, "run-1")] * 2, {}, r"rows: expected at least 3, found 2"),
        (
            [(MODEL_B, "run-1")] * 4,
            {},
            rf"model_sha256: expected {MODEL_A}, found '{MODEL_B}'",
        ),
        ([(MODEL_A, "run-2")] * 4, {}, r"run_id: expected 'run-1', found 'run-2'"),
        (
            [(MODEL_A, "run-1")] * 2 + [(MODEL_A, "run-0")] * 2,
            {},
            r"run_id: expected 'run-1', found 'run-0', 'run-1'",
        ),
        ([(MODEL_A, "run-1")] * 4, {"rows": 9}, r"rows: the run reported 9, found 4"),
    ],
    ids=["empty", "too-small", "another-model", "another-run", "two-runs", "not-as-reported"],
)
def test_a_bad_partition_fails_before_the_asset_event(gate, rows, report, found):
    on_result, partition, recorded = gate
    _write(partition, rows)
    result = _result(partition, report.get("rows", len(rows)))
    with pytest.raises(DataQualityError) as failed:
        on_result(result, {"task": Task()})
    message = str(failed.value)
    assert re.search(found, message), message
    # The workflow, the partition and its table, and the run that wrote it are named.
    assert message.startswith("workflow 'checked': data-quality gate failed on partition ")
    assert f"{partition} (table {partition.parent.as_uri()})" in message
    assert "task 'predict' of Kubeflow run kfp-run-1" in message
    assert isinstance(failed.value, ValueError)  # the operator fails the task, no retries
    assert recorded == []


def test_no_partition_where_the_report_says(gate):
    on_result, partition, recorded = gate
    with pytest.raises(DataQualityError, match=r"partition: expected it to exist, found none"):
        on_result(_result(partition, 4), {"task": Task()})
    assert recorded == []


def test_a_report_without_a_partition_fails(gate):
    on_result, _, recorded = gate
    result = _result("", 4)
    with pytest.raises(DataQualityError, match=r"^workflow 'checked': .* reported no partition"):
        on_result(result, {"task": Task()})
    assert recorded == []


def test_a_partition_of_another_table_is_not_read(gate, tmp_path):
    on_result, _, recorded = gate
    other = _write(tmp_path / "warehouse" / "ranking_predictions" / f"{DAY}.parquet", [])
    with pytest.raises(
        DataQualityError,
        match=r"table: expected file://.*/predictions, found file://.*/ranking_predictions$",
    ):
        on_result(_result(other, 4), {"task": Task()})
    assert recorded == []


def test_a_report_without_run_id_fails(gate):
    on_result, partition, recorded = gate
    _write(partition, [(MODEL_A, "run-1")] * 4)
    result = _result(partition, 4)
    result.fields.pop("written_run_id")
    with pytest.raises(
        DataQualityError,
        match=r"written by task 'predict' of Kubeflow run kfp-run-1: run_id: .* found none",
    ):
        on_result(result, {"task": Task()})
    assert recorded == []


def test_without_a_given_digest_the_reported_one_is_required(gate):
    on_result, partition, _ = gate
    _write(partition, [(MODEL_B, "run-1")] * 4)
    with pytest.raises(DataQualityError, match=rf"expected {MODEL_A}, found '{MODEL_B}'"):
        on_result(_result(partition, 4, model=MODEL_A), {"task": Task("")})
    assert on_result(_result(partition, 4, model=MODEL_B), {"task": Task("")}) == []


# -- BigQuery: one query through BigQueryHook ---------------------------------------------

BQ_QUERIES = re.compile(r"https://bigquery\.googleapis\.com/bigquery/v2/projects/([^/]+)/queries")
BQ_PARTITION = f"acme-ml.reco.predictions${DAY.replace('-', '')}"


def _query_response(row_count: int, digests: list[str], run_ids: list[str]) -> dict:
    """A jobs.query response (BigQuery REST v2 ``QueryResponse``), the job complete."""

    def repeated(values: list[str]) -> dict:
        return {"v": [{"v": v} for v in values]}

    return {
        "kind": "bigquery#queryResponse",
        "jobReference": {"projectId": "acme-ml", "jobId": "job-1", "location": "asia-northeast1"},
        "jobComplete": True,
        "totalRows": "1",
        "schema": {
            "fields": [
                {"name": "row_count", "type": "INTEGER", "mode": "NULLABLE"},
                {"name": "model_sha256", "type": "STRING", "mode": "REPEATED"},
                {"name": "run_ids", "type": "STRING", "mode": "REPEATED"},
            ]
        },
        "rows": [{"f": [{"v": str(row_count)}, repeated(digests), repeated(run_ids)]}],
    }


@pytest.fixture
def bigquery(monkeypatch):
    """Google's token endpoint and BigQuery's jobs.query, answered and recorded."""
    key = service_account_key("gate@acme-ml.iam.gserviceaccount.com", "acme-ml")
    conn = {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(key)}}
    monkeypatch.setenv("AIRFLOW_CONN_GCP_RECO", json.dumps(conn))
    apis = GoogleApis()
    answers: list[tuple[int, dict]] = []

    def query(request):
        apis._record(request)
        status, body = answers.pop(0)
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, TOKEN_URI, callback=apis._token)
        mock.add_callback(responses.POST, BQ_QUERIES, callback=query)
        apis.answers = answers  # type: ignore[attr-defined]
        yield apis


def _bq_gate() -> ResultGate:
    return ResultGate(
        workflow="morning_ranking",
        table="bigquery://acme-ml/reco/predictions",
        min_rows=3,
        gcp_conn_id="gcp_reco",
        bigquery_location="asia-northeast1",
    )


def test_a_bigquery_partition_is_queried_with_the_connections_identity(bigquery, monkeypatch):
    recorded = []
    monkeypatch.setattr(workflow_dag, "record_result", lambda r, c: recorded.append(r) or [])
    bigquery.answers.append((200, _query_response(4, [MODEL_A], ["run-1"])))
    result = _result(BQ_PARTITION, 4)
    assert _bq_gate()(result, {"task": Task()}) == [] and recorded == [result]

    [call] = bigquery.of(r"/queries(\?|$)")
    assert call.url.split("?")[0].endswith("/projects/acme-ml/queries")
    assert call.authorization == "Bearer source-token-1"  # the connection's key, not ADC
    assert call.body["query"] == bigquery_partition_sql(BQ_PARTITION)[0]
    assert "FROM `acme-ml.reco.predictions` WHERE target_date = @target_date" in call.body["query"]
    assert call.body["useLegacySql"] is False and call.body["location"] == "asia-northeast1"
    [parameter] = call.body["queryParameters"]
    assert parameter["name"] == "target_date"
    assert parameter["parameterValue"] == {"value": DAY}


NOT_FOUND = {
    "error": {
        "code": 404,
        "message": "Not found: Table acme-ml:reco.predictions",
        "errors": [{"reason": "notFound", "message": "Not found: Table acme-ml:reco.predictions"}],
        "status": "NOT_FOUND",
    }
}


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        ((200, _query_response(0, [], [])), r"rows: expected at least 3, found 0"),
        ((200, _query_response(2, [MODEL_A], ["run-1"])), r"expected at least 3, found 2"),
        ((200, _query_response(4, [MODEL_B], ["run-1"])), rf"found '{MODEL_B}'"),
        ((200, _query_response(4, [MODEL_A], ["run-0", "run-1"])), r"found 'run-0', 'run-1'"),
        ((404, NOT_FOUND), r"partition: expected it to exist, found none"),
    ],
    ids=["empty", "too-small", "another-model", "another-run", "no-table"],
)
def test_a_bad_bigquery_partition_fails(bigquery, monkeypatch, answer, found):
    recorded = []
    monkeypatch.setattr(workflow_dag, "record_result", lambda r, c: recorded.append(r) or [])
    bigquery.answers.append(answer)
    with pytest.raises(DataQualityError) as failed:
        _bq_gate()(_result(BQ_PARTITION, 4 if "found 2" not in found else 2), {"task": Task()})
    message = str(failed.value)
    assert re.search(found, message), message
    table = "bigquery://acme-ml/reco/predictions"
    head = f"workflow 'morning_ranking': data-quality gate failed on partition {BQ_PARTITION}"
    assert message.startswith(f"{head} (table {table})"), message
    assert recorded == []


# -- a run whose report cannot be read (a host without the pod log, no log archive) ---------


def _unreadable(run_id: str = "kfp-run-1") -> RunResult:
    return RunResult(run_id, None, "predict", unavailable="no log archive on this host")


def _task_of(target_date: str = DAY, model: str = MODEL_A) -> Task:
    task = Task(model)
    task.parameters["target_date"] = target_date
    return task


def test_without_a_report_the_gate_reads_the_target_dates_partition_itself(gate):
    on_result, partition, recorded = gate
    _write(partition, [(MODEL_A, "kfp-run-1")] * 4)
    assert on_result(_unreadable(), {"task": _task_of()}) == []
    [result] = recorded
    assert result.fields == {
        "target_date": DAY,
        "partition": str(partition),
        "rows": 4,
        "model_sha256": MODEL_A,
        "written_run_id": "kfp-run-1",
        "read_from": "partition",
    }
    assert result.unavailable is None and result.run_id == "kfp-run-1"


@pytest.mark.parametrize(
    ("rows", "found"),
    [
        ([], r"rows: expected at least 3, found 0"),
        ([(MODEL_B, "kfp-run-1")] * 4, rf"model_sha256: expected {MODEL_A}, found '{MODEL_B}'"),
        ([(MODEL_A, "kfp-run-0")] * 4, r"run_id: expected 'kfp-run-1', found 'kfp-run-0'"),
    ],
    ids=["empty", "another-model", "another-run"],
)
def test_without_a_report_a_bad_partition_still_fails_the_gate(gate, rows, found):
    on_result, partition, recorded = gate
    _write(partition, rows)
    with pytest.raises(DataQualityError, match=found):
        on_result(_unreadable(), {"task": _task_of()})
    assert recorded == []


def test_without_a_report_nor_a_target_date_the_gate_says_what_it_lacks(gate):
    on_result, _, recorded = gate
    with pytest.raises(DataQualityError) as failed:
        on_result(_unreadable(), {"task": Task()})
    message = str(failed.value)
    assert "not available (no log archive on this host)" in message
    assert "target_date=None" in message
    assert recorded == []


@pytest.mark.parametrize(
    ("table", "partition"),
    [
        ("file:///data/warehouse/predictions", "/data/warehouse/predictions/2027-01-01.parquet"),
        ("bigquery://proj-1/ds/predictions", "proj-1.ds.predictions$20270101"),
    ],
)
def test_the_partition_of_a_date_is_where_the_predict_step_writes_it(table, partition):
    from prediction_app.assets import partition_of, partition_table_uri

    assert partition_of(table, DAY) == partition
    assert partition_table_uri(partition) == table

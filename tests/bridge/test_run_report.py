"""Result reports: the line format, where each backend finds a task's report, and what the
operator does with it (asset events with what the pipeline reported, or a clear failure).

The local backend runs the real ``reporting_pipeline`` fixture with kfp.local; Vertex is
the recording GAPIC client of ``test_vertex_backend`` answering task details the way
Vertex keeps output parameters (``execution.metadata["output:NAME"]``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors
from google.cloud import aiplatform_v1

from kfp_bridge import run_report
from kfp_bridge.backends._kfp_local_log import task_output
from kfp_bridge.backends.base import RunRequest
from kfp_bridge.backends.local import LocalBackend
from kfp_bridge.backends.vertex import VertexBackend
from kfp_bridge.operators.kfp import KubeflowPipelineRunOperator
from kfp_bridge.pipeline_spec import load_pipeline
from kfp_bridge.results import WrittenDataset
from prediction_app.assets import partition_table_uri, record_result, table_uri
from tests.bridge._helpers import (
    FIXTURES,
    PIPELINE_PYTHON,
    TaskInstance,
    TaskStateStore,
    local_connection_env,
    task_context,
    wait_terminal,
)
from tests.bridge.test_vertex_backend import RecordingPipelineServiceClient

PIPELINE = FIXTURES / "reporting_pipeline.yaml"
LOGICAL_DATE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


# -- the line --------------------------------------------------------------------------------


def test_a_report_is_found_wherever_the_prefix_sits_and_the_last_one_wins():
    log = "\n".join(
        [
            "    [KFP Executor 2026-11-27 06:00:01 INFO]: scoring",
            '    kfp-bridge-report: {"kind": "result", "rows": 1}',
            "\x1b[96m2026-11-27T06:00:02Z stdout F\x1b[0m "
            + run_report.report_line("result", "predict", rows=2, target_date="2026-11-27"),
            '    kfp-bridge-report: {"kind": "failure", "permanent": true}',
            "    [KFP Executor 2026-11-27 06:00:03 INFO]: Wrote executor output file",
        ]
    )
    result = run_report.last_report(log, "result")
    assert (result.step, result.fields["rows"], result.fields["target_date"]) == (
        "predict",
        2,
        "2026-11-27",
    )
    assert run_report.last_report(log, "failure").fields["permanent"] is True


@pytest.mark.parametrize(
    "line",
    [
        "kfp-bridge-report: not json",
        'kfp-bridge-report: ["kind", "result"]',
        'kfp-bridge-report: {"kind": "progress"}',
        'kfp-bridge-report: {"rows": 1}',
        "kfp-bridge-report: " + json.dumps({"kind": "result", "blob": "x" * 5000}),
        'report: {"kind": "result"}',
    ],
)
def test_anything_else_is_no_result_report(line):
    assert run_report.last_report(line, "result") is None


def test_kfp_local_task_output_is_split_by_task():
    log = (
        "06:00:00.1 - INFO - Executing task \x1b[96m'features'\x1b[0m\n"
        '    kfp-bridge-report: {"kind": "result", "step": "features"}\n'
        "06:00:01.1 - INFO - Executing task \x1b[96m'predict'\x1b[0m\n"
        '    kfp-bridge-report: {"kind": "result", "step": "predict"}\n'
        "06:00:02.1 - INFO - Pipeline 'daily-prediction' finished with status SUCCESS\n"
    )
    for task in ("features", "predict"):
        assert run_report.last_report("\n".join(task_output(log, task)), "result").step == task
    assert task_output(log, "missing") == []


# -- asset URIs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warehouse", "partition", "uri"),
    [
        (
            "bigquery://acme-reco/warehouse?location=asia-northeast1",
            "acme-reco.warehouse.predictions$20261127",
            "bigquery://acme-reco/warehouse/predictions",
        ),
        (
            "/srv/var/warehouse",
            "/srv/var/warehouse/predictions/2026-11-27.parquet",
            "file:///srv/var/warehouse/predictions",
        ),
        (
            "file:///srv/var/warehouse",
            "/srv/var/warehouse/predictions/2026-11-27.parquet",
            "file:///srv/var/warehouse/predictions",
        ),
    ],
)
def test_the_declared_table_and_the_reported_partition_name_the_same_asset(
    warehouse, partition, uri
):
    assert table_uri(warehouse, "predictions") == uri
    assert partition_table_uri(partition) == uri


@pytest.mark.parametrize(
    "bad", ["bigquery://only-project", "s3://bucket/warehouse", "var/warehouse"]
)
def test_warehouses_without_an_asset_uri_are_refused(bad):
    with pytest.raises(ValueError, match="warehouse"):
        table_uri(bad, "predictions")


# -- where the backends find reports ---------------------------------------------------------


def _request(name: str, tmp_path: Path, **parameters) -> RunRequest:
    compiled = load_pipeline(PIPELINE)
    values = {"target_date": "2026-11-27", "table_dir": str(tmp_path / "predictions")}
    return RunRequest(
        display_name=name,
        pipeline_spec=compiled.pipeline_spec,
        pipeline_path=str(PIPELINE),
        parameters=compiled.validate_parameters({**values, **parameters}),
    )


@pytest.fixture
def local(tmp_path) -> LocalBackend:
    return LocalBackend(tmp_path / "runs", python=str(PIPELINE_PYTHON))


def test_the_local_backend_reads_the_report_of_the_named_task(local, tmp_path):
    run_id = local.submit(_request("reporting", tmp_path, rows=7)).run_id
    assert wait_terminal(local, run_id).state.value == "SUCCEEDED"
    report = local.task_report(run_id, "write-table").fields
    assert report["rows"] == 7
    assert report["partition"] == str(tmp_path / "predictions" / "2026-11-27.parquet")
    assert local.task_report(run_id, "no-such-task") is None


def test_a_task_that_printed_no_report_gives_none(local, tmp_path):
    run_id = local.submit(_request("silent", tmp_path, report=False)).run_id
    assert wait_terminal(local, run_id).state.value == "SUCCEEDED"
    assert local.task_report(run_id, "write-table") is None


def test_the_kfp_backend_reads_the_report_from_the_task_pod_log(kfp_server, kfp_backend, tmp_path):
    request = _request("on-kfp", tmp_path)
    run_id = kfp_backend.submit(request).run_id
    while not kfp_backend.get_run(run_id).state.is_terminal:
        pass  # the stand-in moves one state per read
    assert kfp_backend.task_report(run_id, "write-table") is None  # the launcher's lines only
    line = run_report.report_line("result", "write-table", rows=11, target_date="2026-11-27")
    kfp_server.set_task_log(
        run_id,
        "write-table",
        f"I1127 06:00:01.0 20 launcher_v2.go:96] pod name: x\n{line}\n"
        "I1127 06:00:09.0 20 launcher_v2.go:178] succeeded\n",
    )
    assert kfp_backend.task_report(run_id, "write-table").fields["rows"] == 11
    logs = [r["path"] for r in kfp_server.requests() if r["path"].endswith("/log")]
    assert logs and all("/apis/v1alpha1/runs/" in p for p in logs)


def test_vertex_reads_the_report_from_the_task_output_parameter():
    gapic = RecordingPipelineServiceClient()
    backend = VertexBackend("proj", "asia-northeast1", client=gapic)
    report = {"kind": "result", "rows": 5, "target_date": "2026-11-27"}
    job = aiplatform_v1.PipelineJob(
        name=backend.job_name("job-1"),
        display_name="job",
        state=aiplatform_v1.PipelineState.PIPELINE_STATE_SUCCEEDED,
    )
    for name, value in (
        ("features", "p.d.user_features$20261127"),
        ("predict", json.dumps(report)),
    ):
        metadata = {"input:target_date": "2026-11-27", "output:Output": value}
        detail = aiplatform_v1.PipelineTaskDetail(
            task_name=name, execution=aiplatform_v1.Execution(metadata=metadata)
        )
        job.job_detail.task_details.append(detail)
    gapic.jobs[job.name] = job

    assert backend.task_report("job-1", "predict").fields == report
    assert backend.task_report("job-1", "features") is None  # its output is no report


# -- the operator ----------------------------------------------------------------------------


def _operator(
    conn_id: str, tmp_path: Path, outlets=(), **parameters
) -> KubeflowPipelineRunOperator:
    return KubeflowPipelineRunOperator(
        task_id="predict",
        pipeline_file=str(PIPELINE),
        parameters={
            "target_date": "2026-11-27",
            "table_dir": str(tmp_path / "predictions"),
            **parameters,
        },
        kfp_conn_id=conn_id,
        report_task="write-table",
        on_result=record_result,
        outlets=list(outlets),
        poll_interval=0.2,
        deferrable=False,
    )


@pytest.fixture
def local_conn(tmp_path, monkeypatch) -> str:
    for key, value in local_connection_env(tmp_path / "runs").items():
        monkeypatch.setenv(key, value)
    return "kfp_local"


def _context(op: KubeflowPipelineRunOperator, outlet_events=None) -> dict:
    context = task_context(TaskInstance(), TaskStateStore(), LOGICAL_DATE)
    context["task"] = op
    context["outlet_events"] = (
        outlet_events if outlet_events is not None else OutletEventAccessors()
    )
    return context


def test_a_successful_run_puts_what_the_task_reported_on_the_asset_event(local_conn, tmp_path):
    asset = Asset((tmp_path / "predictions").as_uri())
    op = _operator(local_conn, tmp_path, outlets=[asset], rows=4)
    events = OutletEventAccessors()
    result = op.execute(_context(op, events))

    extra = events[asset].extra
    assert extra == {
        "target_date": "2026-11-27",
        "partition": str(tmp_path / "predictions" / "2026-11-27.parquet"),
        "rows": 4,
        "model_sha256": op.run_result["model_sha256"],
        "run_id": result["run_id"],
        "run_url": result["run_url"],
    }
    assert events[asset].partition_keys == {"2026-11-27"}
    assert result["result"] == op.run_result  # the report's fields, for XCom readers
    # what on_result says the run wrote: the table, the partition and the rows, for lineage
    assert op.run_written == [WrittenDataset(asset.uri, extra["partition"], 4)]


def test_without_on_result_the_report_is_returned_and_no_event_recorded(local_conn, tmp_path):
    # The provider knows no field of the report: only the DAG's on_result makes events of it.
    asset = Asset((tmp_path / "predictions").as_uri())
    op = _operator(local_conn, tmp_path, outlets=[asset], rows=2)
    op.on_result = None
    events = OutletEventAccessors()
    result = op.execute(_context(op, events))
    assert (result["result"]["kind"], result["result"]["rows"]) == ("result", 2)
    assert events[asset].extra == {} and not events[asset].partition_keys
    assert op.run_written == []


def test_an_outlet_the_run_did_not_write_fails_without_retries(local_conn, tmp_path):
    elsewhere = Asset((tmp_path / "other" / "predictions").as_uri())
    op = _operator(local_conn, tmp_path, outlets=[elsewhere])
    events = OutletEventAccessors()
    with pytest.raises(AirflowFailException, match=r"declares the outlet .*other/predictions"):
        op.execute(_context(op, events))
    assert events[elsewhere].extra == {}


def test_a_succeeded_run_without_its_report_succeeds_and_says_why(local_conn, tmp_path, capfd):
    asset = Asset((tmp_path / "predictions").as_uri())
    op = _operator(local_conn, tmp_path, outlets=[asset], report=False)
    events = OutletEventAccessors()
    result = op.execute(_context(op, events))
    logged = "".join(capfd.readouterr())
    assert result["run_id"]
    assert op.run_result is None
    assert events[asset].extra == {} and not events[asset].partition_keys
    assert "the result report of task 'write-table' is not available through local" in logged
    assert "holds no result report" in logged and result["run_url"] in logged


def test_the_fixture_is_compiled_from_its_source():
    spec = yaml.safe_load(PIPELINE.read_text())
    assert "write-table" in spec["root"]["dag"]["tasks"]
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "target_date", "table_dir", "rows", "fail", "report"
    }  # fmt: skip

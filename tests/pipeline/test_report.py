"""The predict step's result report: what kfp-bridge reads to announce the partition."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp_prediction.report import PREFIX, emit, prediction_result, report_line
from kfp_prediction.steps import run_steps
from pipeline_support import TARGET_DATE, Model


def test_the_report_is_what_the_step_wrote(warehouse: Path, model: Model, capsys) -> None:
    result = run_steps(
        target_date=TARGET_DATE,
        warehouse=str(warehouse),
        model_uri=model.uri,
        model_sha256=model.sha256.upper(),  # the digest given; the report has the verified one
        run_id="run-7",
    )["predict"]
    report = prediction_result(result)
    written = pq.read_table(report["partition"])
    assert report == {
        "target_date": TARGET_DATE,
        "partition": str(warehouse / "predictions" / f"{TARGET_DATE}.parquet"),
        "rows": written.num_rows,
        "model_sha256": model.sha256,
        "written_run_id": "run-7",
    }
    assert set(written["model_sha256"].to_pylist()) == {report["model_sha256"]}
    assert set(written["run_id"].to_pylist()) == {report["written_run_id"]}

    value = emit("result", "predict", **report)
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(PREFIX)
    assert json.loads(line[len(PREFIX) :]) == json.loads(value) == {
        "kind": "result", "step": "predict", **report,
    }  # fmt: skip


def test_a_report_longer_than_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 4096"):
        report_line("result", "predict", partition="x" * 5000)

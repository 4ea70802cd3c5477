"""The compiled YAML run by kfp.local, loaded the way the Airflow local backend loads it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp_prediction.local_run import main, run_local
from kfp_prediction.summary import main as summary_main
from kfp_prediction.summary import summarize_partition
from kfp_prediction.warehouse.local import partition_path
from pipeline_support import TARGET_DATE, Model


def test_compiled_pipeline_runs_under_kfp_local(
    warehouse: Path, model: Model, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    written = run_local(
        TARGET_DATE,
        warehouse=str(warehouse),
        model_uri=model.uri,
        model_sha256=model.sha256,
        pipeline_root=tmp_path / "root",
    )
    path = partition_path(warehouse, dt.date.fromisoformat(TARGET_DATE))
    assert written == str(path)
    table = pq.ParquetFile(path).read()
    run_ids = set(table["run_id"].to_pylist())
    run_names = set(table["run_name"].to_pylist())
    assert len(run_ids) == 1 and run_ids != {""} and "{{" not in next(iter(run_ids))
    assert next(iter(run_names)).startswith("daily-prediction-")
    summary = summarize_partition(str(warehouse), TARGET_DATE)
    assert summary["rows"] == table.num_rows and summary["model_sha256"] == [model.sha256]
    assert sum(n for _, n in summary["top_contents"]) <= table.num_rows
    assert summary_main(["--warehouse", str(warehouse), "--target-date", TARGET_DATE]) == 0
    assert f"{table.num_rows:,} rows" in capsys.readouterr().out


def test_failing_run_names_the_problem_and_writes_nothing(
    warehouse: Path, model: Model, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "--target-date",
            TARGET_DATE,
            "--warehouse",
            str(warehouse),
            "--model-uri",
            model.uri,
            "--model-sha256",
            "0" * 64,
            "--pipeline-root",
            str(tmp_path / "root"),
        ]
    )
    assert code == 1
    out, err = capfd.readouterr()
    assert "ModelDigestMismatchError" in out + err and model.sha256 in out + err
    assert not (warehouse / "predictions").exists()


def test_sha256_file_is_the_default_digest(warehouse: Path, model: Model, tmp_path: Path) -> None:
    assert (
        main(
            [
                "--target-date",
                TARGET_DATE,
                "--warehouse",
                str(warehouse),
                "--model-uri",
                model.uri,
                "--pipeline-root",
                str(tmp_path / "root"),
            ]
        )
        == 0
    )
    assert partition_path(warehouse, dt.date.fromisoformat(TARGET_DATE)).exists()

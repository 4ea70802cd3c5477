"""The compiled YAML run by kfp.local, loaded the way the Airflow local backend loads it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kfp_prediction.dates import TargetWindow
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
    features = component_metrics(tmp_path / "root", "features")
    predict = component_metrics(tmp_path / "root", "predict")
    assert_metrics_match_partition({**features, **predict}, table, warehouse)
    assert features["features_rows"] == table.num_rows == features["users_registered"]
    assert features["seconds_query"] >= 0.0
    assert not list(warehouse.rglob("*.tmp"))


def component_metrics(pipeline_root: Path, step: str) -> dict[str, float]:
    """One step component's KFP Metrics, as kfp.local recorded them."""
    outputs = list(pipeline_root.rglob(f"{step}/executor_output.json"))
    assert len(outputs) == 1, outputs
    artifacts = json.loads(outputs[0].read_text())["artifacts"]["metrics"]["artifacts"]
    assert len(artifacts) == 1
    assert artifacts[0]["name"] == "metrics"
    return artifacts[0]["metadata"]


def assert_metrics_match_partition(
    metrics: dict[str, float], table: pa.Table, warehouse: Path
) -> None:
    """Row counts and score summary reported to KFP agree with the partition written."""
    scores = np.asarray(table["score"].to_numpy(), dtype=np.float64)
    users = pq.read_table(warehouse / "users").num_rows
    contents = pq.read_table(warehouse / "contents")
    chosen = table["content_id"].value_counts().to_pylist()
    assert metrics["rows_written"] == table.num_rows
    assert metrics["users_scored"] == table.num_rows == len(set(table["user_id"].to_pylist()))
    assert metrics["users_rows"] == users and metrics["contents_rows"] == contents.num_rows
    window = TargetWindow.build(TARGET_DATE, 28)
    for table_name in ("page_views", "purchases"):
        times = pq.read_table(warehouse / table_name, columns=["event_time"])["event_time"]
        in_window = pc.and_(
            pc.greater_equal(times, pa.scalar(window.start_utc, times.type)),
            pc.less(times, pa.scalar(window.end_utc, times.type)),
        )
        assert metrics[f"{table_name}_window_rows"] == pc.sum(in_window).as_py() > 0
    assert metrics["score_min"] == pytest.approx(scores.min())
    assert metrics["score_max"] == pytest.approx(scores.max())
    assert metrics["score_mean"] == pytest.approx(scores.mean())
    assert metrics["score_p50"] == pytest.approx(float(np.median(scores)))
    assert 0.0 < metrics["score_min"] <= metrics["score_p50"] <= metrics["score_max"] < 1.0
    assert metrics["contents_chosen"] == len(chosen)
    assert metrics["top_content_share"] == pytest.approx(
        max(c["counts"] for c in chosen) / table.num_rows
    )
    for phase in ("checks", "query", "score_and_write"):
        assert metrics[f"seconds_{phase}"] >= 0.0


def _cli(warehouse: Path, model: Model, tmp_path: Path, *extra: str) -> int:
    return main(
        [
            *("--target-date", TARGET_DATE, "--warehouse", str(warehouse)),
            *("--model-uri", model.uri, "--pipeline-root", str(tmp_path / "root")),
            *extra,
        ]
    )


def test_failing_run_names_the_problem_and_writes_nothing(
    warehouse: Path, model: Model, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    assert _cli(warehouse, model, tmp_path, "--model-sha256", "0" * 64) == 1
    out, err = capfd.readouterr()
    assert "ModelDigestMismatchError" in out + err and model.sha256 in out + err
    assert not (warehouse / "predictions").exists()


def test_sha256_file_is_the_default_digest(warehouse: Path, model: Model, tmp_path: Path) -> None:
    assert _cli(warehouse, model, tmp_path) == 0
    assert partition_path(warehouse, dt.date.fromisoformat(TARGET_DATE)).exists()

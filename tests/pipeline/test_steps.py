"""The prediction step end to end on a small local warehouse: outputs, bad input, data safety."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp_prediction.errors import (
    MissingSourceColumnError,
    ModelDigestMismatchError,
    ModelFeatureMismatchError,
    NoSourceDataError,
    TargetDateError,
    WarehouseUnreachableError,
)
from kfp_prediction.schema import PREDICTIONS_SCHEMA
from kfp_prediction.steps import predict_and_write
from kfp_prediction.warehouse.local import partition_path
from pipeline_support import TARGET_DATE, Model


def run(warehouse: Path, model: Model, target_date: str = TARGET_DATE, **kw) -> dict:
    args = {
        "model_uri": model.uri,
        "model_sha256": model.sha256,
        "lookback_days": 28,
        "run_id": "r-1",
        "run_name": "n-1",
    }
    args.update(kw)
    return predict_and_write(target_date, str(warehouse), **args)


def read(warehouse: Path, date: str = TARGET_DATE):
    return pq.ParquetFile(partition_path(warehouse, dt.date.fromisoformat(date))).read()


def registered_users(warehouse: Path, date: str) -> int:
    users = pq.read_table(warehouse / "users")
    end = dt.datetime.fromisoformat(f"{date}T00:00:00+09:00")
    return sum(1 for t in users["registered_at"].to_pylist() if t < end)


def test_one_row_per_user_with_provenance(warehouse: Path, model: Model) -> None:
    metrics = run(warehouse, model)
    table = read(warehouse)
    assert table.schema == PREDICTIONS_SCHEMA
    assert table.num_rows == registered_users(warehouse, TARGET_DATE) == metrics["rows_written"]
    assert len(set(table["user_id"].to_pylist())) == table.num_rows
    row = table.slice(0, 1).to_pylist()[0]
    assert row["target_date"] == dt.date(2026, 11, 27)
    assert row["model_sha256"] == model.sha256
    assert (row["run_id"], row["run_name"]) == ("r-1", "n-1")
    assert 0.0 <= row["score"] <= 1.0
    assert set(table["content_id"].to_pylist()) <= set(
        pq.read_table(warehouse / "contents")["content_id"].to_pylist()
    )
    assert metrics["users_scored"] == table.num_rows and 0 < metrics["score_mean"] < 1


def test_rerun_replaces_only_that_date(warehouse: Path, model: Model) -> None:
    run(warehouse, model, "2026-11-26")
    run(warehouse, model, "2026-11-27", run_id="first")
    other_before = partition_path(warehouse, dt.date(2026, 11, 26)).read_bytes()
    run(warehouse, model, "2026-11-27", run_id="second")
    assert set(read(warehouse, "2026-11-27")["run_id"].to_pylist()) == {"second"}
    assert partition_path(warehouse, dt.date(2026, 11, 26)).read_bytes() == other_before
    assert sorted(p.name for p in (warehouse / "predictions").iterdir()) == [
        "2026-11-26.parquet",
        "2026-11-27.parquet",
    ]


def _tamper_column(warehouse: Path, table: str, column: str) -> None:
    path = next((warehouse / table).glob("*.parquet"))
    data = pq.read_table(path)
    pq.write_table(data.drop([column]), path)


def _unknown_feature_model(tmp_path: Path) -> Model:
    import pandas as pd
    from kfp_prediction.demo_model import write_model
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"pv_count": [0.0, 1, 2, 3], "favourite_colour": [1.0, 0, 1, 0]})
    path = tmp_path / "odd.pkl"
    return Model(path, write_model(LogisticRegression().fit(x, [0, 1, 0, 1]), path))


BAD_INPUTS = {
    "missing target_date": (dict(target_date=""), TargetDateError, ["target_date"]),
    "malformed target_date": (
        dict(target_date="2026-11-31"),
        TargetDateError,
        ["target_date", "2026-11-31"],
    ),
    "no source data": (
        dict(target_date="2027-02-01"),
        NoSourceDataError,
        ["page_views", "2027-01-31"],
    ),
    "missing column": (
        "drop page_views.device",
        MissingSourceColumnError,
        ["page_views", "device"],
    ),
    "digest mismatch": (dict(model_sha256="f" * 64), ModelDigestMismatchError, ["f" * 64]),
    "model features": ("odd model", ModelFeatureMismatchError, ["favourite_colour"]),
    "unreachable warehouse": ("missing dir", WarehouseUnreachableError, ["does-not-exist"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_clear_error_nothing_written(
    case: str, warehouse: Path, model: Model, tmp_path: Path
) -> None:
    change, error, words = BAD_INPUTS[case]
    run(warehouse, model, "2026-11-27", run_id="good")  # an earlier good partition
    before = {p.name: p.read_bytes() for p in (warehouse / "predictions").iterdir()}
    kwargs = dict(change) if isinstance(change, dict) else {}
    target = kwargs.pop("target_date", TARGET_DATE)
    wh = warehouse
    if change == "drop page_views.device":
        _tamper_column(warehouse, "page_views", "device")
    elif change == "odd model":
        odd = _unknown_feature_model(tmp_path)
        kwargs.update(model_uri=odd.uri, model_sha256=odd.sha256)
    elif change == "missing dir":
        wh = tmp_path / "does-not-exist"
    with pytest.raises(error) as err:
        run(wh, model, target, **kwargs)
    for word in words:
        assert word in str(err.value)
    after = {p.name: p.read_bytes() for p in (warehouse / "predictions").iterdir()}
    assert after == before  # nothing written, nothing left behind
    if case == "digest mismatch":  # both digests are shown
        assert hashlib.sha256(model.path.read_bytes()).hexdigest() in str(err.value)


def test_failed_write_keeps_previous_partition(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(warehouse, model, run_id="good")
    before = partition_path(warehouse, dt.date(2026, 11, 27)).read_bytes()
    real_write = pq.write_table

    def write_half_then_fail(table, where, **kwargs):  # fault injection in pyarrow, not ours
        real_write(table.slice(0, table.num_rows // 2), where, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        run(warehouse, model, run_id="broken")
    assert partition_path(warehouse, dt.date(2026, 11, 27)).read_bytes() == before
    assert [p.name for p in (warehouse / "predictions").iterdir()] == ["2026-11-27.parquet"]


PARALLEL = """
import sys
from kfp_prediction.steps import predict_and_write
wh, uri, sha, date, run_id = sys.argv[1:]
predict_and_write(date, wh, uri, sha, 28, run_id, "parallel")
"""


def test_parallel_dates_and_same_date_all_succeed(warehouse: Path, model: Model) -> None:
    jobs = [
        ("2026-11-24", "a"),
        ("2026-11-25", "b"),
        ("2026-11-26", "c"),
        ("2026-11-27", "d"),
        ("2026-11-27", "e"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PARALLEL, str(warehouse), model.uri, model.sha256, date, run_id]
        )
        for date, run_id in jobs
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(jobs)
    for date, _ in jobs:
        table = read(warehouse, date)
        assert table.num_rows == registered_users(warehouse, date)
        assert len(set(table["user_id"].to_pylist())) == table.num_rows
    assert set(read(warehouse, "2026-11-27")["run_id"].to_pylist()) in ({"d"}, {"e"})
    assert sorted(p.name for p in (warehouse / "predictions").iterdir()) == [
        f"{d}.parquet" for d in ("2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")
    ]

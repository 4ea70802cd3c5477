"""The prediction step end to end on a small local warehouse: outputs, bad input, data safety."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp_prediction import steps
from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import (
    InvalidSourceDataError,
    MissingSourceColumnError,
    ModelDigestMismatchError,
    ModelFeatureMismatchError,
    NoSourceDataError,
    TargetDateError,
    WarehouseUnreachableError,
)
from kfp_prediction.schema import PREDICTIONS_SCHEMA
from kfp_prediction.steps import predict_and_write
from kfp_prediction.warehouse.local import LocalWarehouse, partition_path
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


def _rewrite_users(warehouse: Path, column: str, values: pa.Array) -> None:
    path = next((warehouse / "users").glob("*.parquet"))
    data = pq.read_table(path)
    pq.write_table(data.set_column(data.schema.get_field_index(column), column, values), path)


def _all_users_register_late(warehouse: Path) -> None:
    n = pq.read_table(warehouse / "users").num_rows
    late = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    _rewrite_users(warehouse, "registered_at", pa.array([late] * n, pa.timestamp("us", "UTC")))


def _null_user_id(warehouse: Path) -> None:
    ids = pq.read_table(warehouse / "users")["user_id"].to_pylist()
    _rewrite_users(warehouse, "user_id", pa.array([None, *ids[1:]], pa.int64()))


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
    "no registered users": (
        "users register late",
        NoSourceDataError,
        ["users", "registered before target_date 2026-11-27"],
    ),
    "null user_id": ("null user_id", InvalidSourceDataError, ["users", "NULL user_id"]),
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
    elif change == "users register late":
        _all_users_register_late(warehouse)
    elif change == "null user_id":
        _null_user_id(warehouse)
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


def _broken_run_keeps_previous_partition(
    warehouse: Path, model: Model, break_run: Callable[[], None], error: type, match: str
) -> None:
    """A good run, then ``break_run()`` and a run that fails: the good partition stays as it
    was, no temporary file is left, and no fetch or score thread outlives the failure."""
    run(warehouse, model, run_id="good")
    before = partition_path(warehouse, dt.date(2026, 11, 27)).read_bytes()
    threads_before = threading.active_count()
    break_run()
    with pytest.raises(error, match=match):
        run(warehouse, model, run_id="broken")
    assert partition_path(warehouse, dt.date(2026, 11, 27)).read_bytes() == before
    assert [p.name for p in (warehouse / "predictions").iterdir()] == ["2026-11-27.parquet"]
    assert threading.active_count() == threads_before


def test_failed_write_keeps_previous_partition(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = pq.ParquetWriter.write_table

    def write_half_then_fail(self, table, *args, **kwargs):  # fault injection in pyarrow
        real_write(self, table.slice(0, table.num_rows // 2), *args, **kwargs)
        raise OSError("No space left on device")

    def break_run() -> None:
        monkeypatch.setattr(pq.ParquetWriter, "write_table", write_half_then_fail)

    _broken_run_keeps_previous_partition(warehouse, model, break_run, OSError, "No space left")


def test_failure_in_a_later_batch_keeps_previous_partition(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_score, calls = steps.score_users, []

    def fail_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("scoring batch 3 failed")
        return real_score(*args, **kwargs)

    def break_run() -> None:
        monkeypatch.setattr(steps, "BATCH_USERS", 7)
        monkeypatch.setattr(steps, "score_users", fail_on_third_batch)

    _broken_run_keeps_previous_partition(warehouse, model, break_run, MemoryError, "batch 3")
    assert len(calls) == 3


def test_batches_stream_to_the_same_partition_as_one_batch(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(warehouse, model)
    one_batch = read(warehouse).sort_by("user_id")
    monkeypatch.setattr(steps, "BATCH_USERS", 7)  # many batches through the threads
    streamed = run(warehouse, model)
    table = read(warehouse)
    assert table.num_rows == one_batch.num_rows > 7 * 3
    assert pq.ParquetFile(partition_path(warehouse, dt.date(2026, 11, 27))).num_row_groups > 3
    for column in ("user_id", "content_id", "score"):
        assert table.sort_by("user_id")[column].equals(one_batch[column])
    summary = ("rows_written", "page_views_window_rows", "score_mean", "score_p50")
    assert {k: streamed[k] for k in summary} == pytest.approx({k: whole[k] for k in summary})


PARALLEL = """
import sys
from kfp_prediction import steps
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


def test_feature_batches_survive_other_queries_on_the_warehouse(warehouse: Path) -> None:
    """DuckDB silently ends a batch reader when its connection runs another query."""
    wh = LocalWarehouse(warehouse)
    window = TargetWindow.build(TARGET_DATE, 28)
    expected = wh.user_features(window).num_rows
    reader = wh.user_feature_batches(window, rows_per_batch=7)
    rows = reader.read_next_batch().num_rows
    for batch in reader:
        assert wh.count_rows("users") > 0  # another query on the warehouse between batches
        rows += batch.num_rows
    assert rows == expected > 7 * 3

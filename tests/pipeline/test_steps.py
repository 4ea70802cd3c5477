"""Both steps end to end on a small local warehouse: outputs, bad input, data safety.

Each data-safety property is checked for the features partition and the predictions
partition alike: a failure at any step leaves both previous partitions as they were, a rerun
replaces exactly that date, parallel dates keep all their rows, no temporary file is left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp_prediction import predict_step, scoring
from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import (
    InvalidSourceDataError,
    MinRowsError,
    MissingSourceColumnError,
    ModelContractError,
    ModelDigestMismatchError,
    ModelFeatureMismatchError,
    NoSourceDataError,
    TargetDateError,
    TooFewRowsError,
    WarehouseUnreachableError,
)
from kfp_prediction.feature_step import materialize_features
from kfp_prediction.predict_step import predict
from kfp_prediction.schema import FEATURE_COLUMNS, FEATURES_TABLE, predictions_schema
from kfp_prediction.steps import run_steps
from kfp_prediction.warehouse.local import LocalWarehouse, partition_path
from pipeline_support import TARGET_DATE, Model


def run(warehouse: Path, model: Model, target_date: str = TARGET_DATE, **kw) -> dict:
    """Both steps; returns the predict step's metrics (with the features step's, prefixed)."""
    args = {
        "model_uri": model.uri,
        "model_sha256": model.sha256,
        "lookback_days": 28,
        "run_id": "r-1",
        "run_name": "n-1",
    }
    args.update(kw)
    result = run_steps(target_date=target_date, warehouse=str(warehouse), **args)
    features = {f"features.{k}": v for k, v in result["features"].items()}
    return {**result["predict"], **features}


def partitions(warehouse: Path) -> dict[str, bytes]:
    """Every file of the features and predictions tables, temporary ones included."""
    return {
        f"{table}/{p.name}": p.read_bytes()
        for table in (FEATURES_TABLE, "predictions")
        if (warehouse / table).is_dir()
        for p in sorted((warehouse / table).iterdir())
    }


def read(warehouse: Path, date: str = TARGET_DATE):
    return pq.ParquetFile(partition_path(warehouse, dt.date.fromisoformat(date))).read()


def registered_users(warehouse: Path, date: str) -> int:
    users = pq.read_table(warehouse / "users")
    end = dt.datetime.fromisoformat(f"{date}T00:00:00+09:00")
    return sum(1 for t in users["registered_at"].to_pylist() if t < end)


def test_one_row_per_user_with_provenance(warehouse: Path, model: Model) -> None:
    metrics = run(warehouse, model)
    table = read(warehouse)
    assert table.schema == predictions_schema()
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
    features = pq.read_table(metrics["features.features"])
    assert metrics["features.features"] == str(
        partition_path(warehouse, dt.date(2026, 11, 27), FEATURES_TABLE)
    )
    assert features.schema.names == list(FEATURE_COLUMNS)
    assert features.num_rows == table.num_rows == metrics["features.features_rows"]
    assert set(features["target_date"].to_pylist()) == {dt.date(2026, 11, 27)}
    assert sorted(features["user_id"].to_pylist()) == sorted(table["user_id"].to_pylist())


def test_rerun_replaces_only_that_date(warehouse: Path, model: Model) -> None:
    run(warehouse, model, "2026-11-26")
    run(warehouse, model, "2026-11-27", run_id="first")
    before = partitions(warehouse)
    features_path = partition_path(warehouse, dt.date(2026, 11, 27), FEATURES_TABLE)
    features_before = pq.read_table(features_path).sort_by("user_id")
    run(warehouse, model, "2026-11-27", run_id="second")
    after = partitions(warehouse)
    assert set(read(warehouse, "2026-11-27")["run_id"].to_pylist()) == {"second"}
    for table in (FEATURES_TABLE, "predictions"):  # the other date is untouched
        assert after[f"{table}/2026-11-26.parquet"] == before[f"{table}/2026-11-26.parquet"]
    assert pq.read_table(features_path).sort_by("user_id").equals(features_before)
    assert sorted(after) == sorted(
        f"{table}/{date}.parquet"
        for table in (FEATURES_TABLE, "predictions")
        for date in ("2026-11-26", "2026-11-27")
    )


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


def _model_of(tmp_path: Path, name: str, classes: list) -> Model:
    import pandas as pd
    from kfp_prediction.demo_model import write_model
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"pv_count": [0.0, 1, 2, 3, 4, 5], name: [1.0, 0, 1, 0, 1, 0]})
    path = tmp_path / "odd.pkl"
    return Model(
        path, write_model(LogisticRegression().fit(x, classes * (6 // len(classes))), path)
    )


FEATURES, PREDICT = "features", "predict"
# case: (change, error, words in the message, the step that refuses)
BAD_INPUTS = {
    "missing target_date": (dict(target_date=""), TargetDateError, ["target_date"], FEATURES),
    "malformed target_date": (
        dict(target_date="2026-11-31"),
        TargetDateError,
        ["target_date", "2026-11-31"],
        FEATURES,
    ),
    "no source data": (
        dict(target_date="2027-02-01"),
        NoSourceDataError,
        ["page_views", "2027-01-31"],
        FEATURES,
    ),
    "no registered users": (
        "users register late",
        NoSourceDataError,
        ["users", "registered before target_date 2026-11-27"],
        FEATURES,
    ),
    "null user_id": ("null user_id", InvalidSourceDataError, ["users", "NULL user_id"], FEATURES),
    "missing column": (
        "drop page_views.device",
        MissingSourceColumnError,
        ["page_views", "device"],
        FEATURES,
    ),
    "unreachable warehouse": (
        "missing dir",
        WarehouseUnreachableError,
        ["does-not-exist"],
        FEATURES,
    ),
    "digest mismatch": (dict(model_sha256="f" * 64), ModelDigestMismatchError, ["f" * 64], PREDICT),
    "model features": (
        ("model", "favourite_colour", [0, 1]),
        ModelFeatureMismatchError,
        ["favourite_colour"],
        PREDICT,
    ),
    "model classes": (
        ("model", "age_band_level", ["a", "b", "c"]),
        ModelContractError,
        ["binary classifier", "one class per content"],
        PREDICT,
    ),
    "features of another date": (
        "other features",
        InvalidSourceDataError,
        ["not the features partition of target_date 2026-11-27", "2026-11-26.parquet"],
        PREDICT,
    ),
    "negative min_rows": (dict(min_rows=-1), MinRowsError, ["min_rows", "-1"], PREDICT),
    "min_rows not an integer": (dict(min_rows=True), MinRowsError, ["min_rows", "True"], PREDICT),
}


def _sorted_features(warehouse: Path) -> pa.Table:
    return pq.read_table(partition_path(warehouse, dt.date(2026, 11, 27), FEATURES_TABLE)).sort_by(
        "user_id"
    )


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_clear_error_nothing_written(
    case: str, warehouse: Path, model: Model, tmp_path: Path
) -> None:
    change, error, words, step = BAD_INPUTS[case]
    run(warehouse, model, "2026-11-26", run_id="good")
    run(warehouse, model, "2026-11-27", run_id="good")  # earlier good partitions
    before, features_before = partitions(warehouse), _sorted_features(warehouse)
    kwargs = dict(change) if isinstance(change, dict) else {}
    target = kwargs.pop("target_date", TARGET_DATE)
    wh = warehouse
    if change == "drop page_views.device":
        _tamper_column(warehouse, "page_views", "device")
    elif change == "users register late":
        _all_users_register_late(warehouse)
    elif change == "null user_id":
        _null_user_id(warehouse)
    elif isinstance(change, tuple):
        odd = _model_of(tmp_path, *change[1:])
        kwargs.update(model_uri=odd.uri, model_sha256=odd.sha256)
    elif change == "missing dir":
        wh = tmp_path / "does-not-exist"
    with pytest.raises(error) as err:
        if change == "other features":  # the predict step alone, handed the wrong partition
            other = partition_path(warehouse, dt.date(2026, 11, 26), FEATURES_TABLE)
            predict(TARGET_DATE, str(wh), str(other), model.uri, model.sha256)
        else:
            run(wh, model, target, **kwargs)
    for word in words:
        assert word in str(err.value)
    after = partitions(warehouse)
    assert sorted(after) == sorted(before)  # nothing new, no temporary file left behind
    assert after["predictions/2026-11-27.parquet"] == before["predictions/2026-11-27.parquet"]
    if step == FEATURES:  # refused before the feature query: the features file is the same
        assert after == before
    else:  # the features step ran again on the same sources: the same rows
        assert _sorted_features(warehouse).equals(features_before)
    if case == "digest mismatch":  # both digests are shown
        assert hashlib.sha256(model.path.read_bytes()).hexdigest() in str(err.value)


def test_run_below_the_row_floor_keeps_the_previous_partition(
    warehouse: Path, model: Model
) -> None:
    """A re-run of a date on short sources (fewer rows than the workflow's min_rows) fails
    naming the partition, the rows and the floor; the good partition stays byte for byte."""
    run(warehouse, model, run_id="good")
    users = registered_users(warehouse, TARGET_DATE)
    before = partitions(warehouse)
    with pytest.raises(TooFewRowsError) as err:
        run(warehouse, model, run_id="short", min_rows=users + 1)
    # The features step refuses first (one features row per registered user, the same unit).
    final = partition_path(warehouse, dt.date(2026, 11, 27), FEATURES_TABLE)
    assert str(err.value) == (
        f"features partition {final}: {users} row(s), below the floor "
        f"min_rows={users + 1}; not published, the previous partition is kept"
    )
    assert err.value.permanent  # another try reads the same sources: no retry
    assert partitions(warehouse) == before  # features and predictions, byte for byte
    assert set(read(warehouse)["run_id"].to_pylist()) == {"good"}


def test_short_sources_keep_the_previous_features_partition(warehouse: Path, model: Model) -> None:
    """The reviewer's case: a good run, ``users`` cut to a tenth, a re-run with the good run's
    count as floor. Both the predictions and the features partition (which other models
    reuse) stay byte for byte; no temporary file is left."""
    run(warehouse, model, run_id="good")
    users = registered_users(warehouse, TARGET_DATE)
    before = partitions(warehouse)
    path = next((warehouse / "users").glob("*.parquet"))
    data = pq.read_table(path)
    pq.write_table(data.slice(0, data.num_rows // 10), path)
    with pytest.raises(TooFewRowsError) as err:
        run(warehouse, model, run_id="short", min_rows=users)
    assert partitions(warehouse) == before
    final = partition_path(warehouse, dt.date(2026, 11, 27), FEATURES_TABLE)
    assert f"features partition {final}: {users // 10} row(s)" in str(err.value)


def test_features_step_checks_the_rows_it_wrote_before_the_rename(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor is also checked on the rows the query wrote, before the rename: sources
    that shrink between the count and the query still leave the partition as it was."""
    materialize_features(TARGET_DATE, str(warehouse), 28, "good")
    before = partitions(warehouse)
    monkeypatch.setattr(LocalWarehouse, "registered_users", lambda self, end: (10**9, 0))
    with pytest.raises(TooFewRowsError, match=r"features partition .* below the floor"):
        materialize_features(TARGET_DATE, str(warehouse), 28, "short", min_rows=10**9)
    assert partitions(warehouse) == before


def test_features_step_refuses_a_bad_min_rows_before_reading(tmp_path: Path) -> None:
    with pytest.raises(MinRowsError, match="min_rows"):
        materialize_features(TARGET_DATE, str(tmp_path / "nowhere"), 28, min_rows=-1)


@pytest.mark.parametrize("above", [0, 1], ids=["at the floor", "above the floor"])
def test_run_at_or_above_the_row_floor_publishes(warehouse: Path, model: Model, above: int) -> None:
    run(warehouse, model, run_id="good")
    users = registered_users(warehouse, TARGET_DATE)
    metrics = run(warehouse, model, run_id="next", min_rows=users - above)
    assert metrics["rows_written"] == users
    table = read(warehouse)
    assert table.num_rows == users and set(table["run_id"].to_pylist()) == {"next"}


def test_empty_result_keeps_the_previous_partition_at_the_default_floor(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """min_rows defaults to 1: an empty result is refused as before (no source rows)."""
    run(warehouse, model, run_id="good")
    before = partitions(warehouse)
    empty = LocalWarehouse.feature_batches

    def no_users(self, reference, rows_per_batch):
        reader = empty(self, reference, rows_per_batch)
        return pa.RecordBatchReader.from_batches(reader.schema, iter(()))

    monkeypatch.setattr(LocalWarehouse, "feature_batches", no_users)
    with pytest.raises(NoSourceDataError, match="has no rows"):
        run(warehouse, model, run_id="empty")
    assert partitions(warehouse) == before


def _broken_run_keeps_previous_partitions(
    warehouse: Path, model: Model, break_run: Callable[[], None], error: type, match: str
) -> None:
    """A good run, then ``break_run()`` and a run that fails: both partitions keep their
    rows, no temporary file is left, and no read or score thread outlives the failure."""
    run(warehouse, model, run_id="good")
    before, features_before = partitions(warehouse), _sorted_features(warehouse)
    threads_before = threading.active_count()
    break_run()
    with pytest.raises(error, match=match):
        run(warehouse, model, run_id="broken")
    after = partitions(warehouse)
    assert sorted(after) == ["predictions/2026-11-27.parquet", "user_features/2026-11-27.parquet"]
    assert after["predictions/2026-11-27.parquet"] == before["predictions/2026-11-27.parquet"]
    assert _sorted_features(warehouse).equals(features_before)
    assert threading.active_count() == threads_before


def test_failed_predictions_write_keeps_previous_partitions(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = pq.ParquetWriter.write_table

    def write_half_then_fail(self, table, *args, **kwargs):  # fault injection in pyarrow
        real_write(self, table.slice(0, table.num_rows // 2), *args, **kwargs)
        raise OSError("No space left on device")

    def break_run() -> None:
        monkeypatch.setattr(pq.ParquetWriter, "write_table", write_half_then_fail)

    _broken_run_keeps_previous_partitions(warehouse, model, break_run, OSError, "No space left")


def test_feature_query_failing_half_way_keeps_previous_partitions(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB raises while it is writing the features file (a row past the first ones)."""
    from kfp_prediction.warehouse import local

    real_sql = local.duckdb_user_features_sql

    def failing_sql(window: TargetWindow) -> str:
        return (
            "SELECT *, CASE WHEN user_id > 300 THEN error('disk failed while writing') "
            f"ELSE 0 END AS boom FROM ({real_sql(window)})"
        )

    def break_run() -> None:
        monkeypatch.setattr(local, "duckdb_user_features_sql", failing_sql)

    _broken_run_keeps_previous_partitions(
        warehouse, model, break_run, duckdb.Error, "disk failed while writing"
    )


def test_failure_in_a_later_batch_keeps_previous_partitions(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_score, calls = scoring.ScoringModel.score, []

    def fail_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("scoring batch 3 failed")
        return real_score(*args, **kwargs)

    def break_run() -> None:
        monkeypatch.setattr(predict_step, "BATCH_USERS", 7)
        monkeypatch.setattr(scoring.ScoringModel, "score", fail_on_third_batch)

    _broken_run_keeps_previous_partitions(warehouse, model, break_run, MemoryError, "batch 3")
    # batches after the third may have started on the other scoring threads, no more
    assert 3 <= len(calls) <= 3 + predict_step.SCORE_THREADS


def test_batches_stream_to_the_same_partition_as_one_batch(
    warehouse: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(warehouse, model)
    one_batch = read(warehouse).sort_by("user_id")
    monkeypatch.setattr(predict_step, "BATCH_USERS", 7)  # many batches through the threads
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
from kfp_prediction.steps import run_steps
wh, uri, sha, date, run_id = sys.argv[1:]
run_steps(run_id, "parallel", target_date=date, warehouse=wh, model_uri=uri, model_sha256=sha)
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
        features = pq.read_table(
            partition_path(warehouse, dt.date.fromisoformat(date), FEATURES_TABLE)
        )
        assert sorted(features["user_id"].to_pylist()) == sorted(table["user_id"].to_pylist())
    assert set(read(warehouse, "2026-11-27")["run_id"].to_pylist()) in ({"d"}, {"e"})
    dates = ("2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")
    assert sorted(partitions(warehouse)) == sorted(
        f"{table}/{d}.parquet" for table in (FEATURES_TABLE, "predictions") for d in dates
    )


def test_features_read_survives_a_concurrent_rerun_of_the_date(warehouse: Path) -> None:
    """The predict step keeps reading the file it opened while another run of the same date
    renames a new features file over it."""
    first = materialize_features(TARGET_DATE, str(warehouse), 28)
    expected = first["features_rows"]
    reader = LocalWarehouse(warehouse).feature_batches(first["features"], rows_per_batch=7)
    rows = reader.read_next_batch().num_rows
    again = materialize_features(TARGET_DATE, str(warehouse), 28)
    assert again["features"] == first["features"]
    for batch in reader:
        rows += batch.num_rows
    assert rows == expected > 7 * 3


def test_content_model_runs_through_both_steps(warehouse: Path, tmp_path: Path) -> None:
    """A model with one class per content scores every content at once; its classes are the
    content ids written, and its best class's probability is the score."""
    import pandas as pd
    from kfp_prediction.demo_model import write_model
    from kfp_prediction.scoring import USER_FEATURES, user_matrix
    from sklearn.ensemble import RandomForestClassifier

    wh = LocalWarehouse(warehouse)
    users = wh.user_features(TargetWindow.build(TARGET_DATE, 28))
    x = pd.DataFrame(user_matrix(users, USER_FEATURES, float), columns=list(USER_FEATURES))
    labels = ["push_sale", "coupon_bags", "newsletter_weekly"]
    y = [labels[int(v) % 3] for v in x["pv_count"]]
    path = tmp_path / "content.pkl"
    content_model = Model(
        path, write_model(RandomForestClassifier(5, random_state=0).fit(x, y), path)
    )
    metrics = run(warehouse, content_model)
    table = read(warehouse).sort_by("user_id")
    assert table.num_rows == metrics["rows_written"] == users.num_rows
    assert set(table["content_id"].to_pylist()) <= set(labels)
    by_user = users.sort_by("user_id")
    loaded = pickle.loads(path.read_bytes())
    expected = loaded.predict_proba(
        pd.DataFrame(user_matrix(by_user, USER_FEATURES, float), columns=list(USER_FEATURES))
    )
    assert table["score"].to_pylist() == pytest.approx(expected.max(axis=1).tolist())
    assert table["content_id"].to_pylist() == list(loaded.classes_[expected.argmax(axis=1)])


def test_spill_folders_of_killed_steps_are_removed_and_live_ones_kept(
    warehouse: Path, tmp_path: Path
) -> None:
    """DuckDB removes its temp_directory when its session closes, so a step killed mid-query
    leaves its ``kfp-prediction-duckdb-<pid>`` folder (and spill files) behind; the next step
    removes those of processes that are gone and leaves a running step's alone."""
    temp = tmp_path / "tmp"
    gone = subprocess.Popen(["true"])
    gone.wait()
    (temp / f"kfp-prediction-duckdb-{gone.pid}").mkdir(parents=True)
    (temp / f"kfp-prediction-duckdb-{gone.pid}" / "duckdb_temp_block-1.block").write_bytes(b"x")
    live = temp / f"kfp-prediction-duckdb-{os.getppid()}"
    live.mkdir()
    code = (
        "import sys; from kfp_prediction.feature_step import materialize_features; "
        "print(materialize_features(sys.argv[1], sys.argv[2], 28)['features_rows'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, TARGET_DATE, str(warehouse)],
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(done.stdout.split()[-1]) > 0
    assert list(temp.iterdir()) == [live]

"""Warehouse locations: scheme selection and local path resolution."""

from __future__ import annotations

import datetime as dt
import fcntl
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp_prediction import liveness
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.schema import predictions_schema
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.local import LocalWarehouse, partition_path


def test_file_uri_and_plain_path_are_local(tmp_path: Path) -> None:
    for location in (str(tmp_path), f"file://{tmp_path}"):
        wh = open_warehouse(location)
        assert isinstance(wh, LocalWarehouse) and wh.root == tmp_path


def test_relative_path_uses_kfp_bridge_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_BRIDGE_HOME", str(tmp_path))
    assert open_warehouse("var/warehouse").root == tmp_path / "var" / "warehouse"


def test_missing_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(NoSourceDataError, match="page_views"):
        LocalWarehouse(tmp_path).columns("page_views")


def test_file_instead_of_directory_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WarehouseUnreachableError, match="not a directory"):
        open_warehouse(str(tmp_path / "file")).check_reachable()


def _one_row(target: dt.date) -> pa.Table:
    row = {
        "target_date": target,
        "user_id": 1,
        "content_id": "c1",
        "score": 0.5,
        "model_sha256": "0" * 64,
        "run_id": "r",
        "run_name": "n",
        "created_at": dt.datetime(2026, 11, 26, 21, tzinfo=dt.UTC),
    }
    return pa.Table.from_pylist([row], schema=predictions_schema())


def test_the_next_writer_removes_a_killed_runs_temp_file_but_not_a_live_writers(
    tmp_path: Path,
) -> None:
    """A hard-killed run leaves ``.<date>.parquet.*.tmp``; the next write of that date removes
    it at once (its writer's lock died with it), never one a live writer holds, nor another
    date's."""
    wh = LocalWarehouse(tmp_path)
    target = dt.date(2026, 11, 27)
    final = partition_path(tmp_path, target)
    final.parent.mkdir(parents=True)
    killed = final.parent / f".{final.name}.killed1.tmp"  # a moment ago: age does not matter
    live = final.parent / f".{final.name}.writing.tmp"
    other_date = final.parent / ".2026-11-26.parquet.killed2.tmp"
    for path in (killed, live, other_date):
        path.write_bytes(b"partial")
    with open(live, "rb") as writer:  # a live writer holds its file's lock
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert wh.write_predictions(target, [_one_row(target)]) == str(final)
    assert not killed.exists()
    assert live.exists() and other_date.exists()
    assert pq.read_table(final).num_rows == 1
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(
        [final.name, live.name, other_date.name]
    )


def test_a_run_reported_failed_never_replaces_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local backend's run directory says FAILED: the old partition stays, no temp left."""
    wh = LocalWarehouse(tmp_path / "wh")
    target = dt.date(2026, 11, 27)
    wh.write_predictions(target, [_one_row(target)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text('{"state": "FAILED"}')
    monkeypatch.setenv(liveness.RUN_DIR_ENV, str(run_dir))
    bigger = pa.concat_tables([_one_row(target)] * 5)
    with pytest.raises(liveness.RunNotLiveError, match="the run is FAILED"):
        wh.write_predictions(target, [bigger])
    final = partition_path(tmp_path / "wh", target)
    assert pq.read_table(final).num_rows == 1
    assert [p.name for p in final.parent.iterdir()] == [final.name]

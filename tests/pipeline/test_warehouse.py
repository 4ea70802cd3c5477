"""Warehouse locations: scheme selection and local path resolution."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.schema import PREDICTIONS_SCHEMA
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.local import STALE_TEMP_SECONDS, LocalWarehouse, partition_path


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


def test_write_removes_only_stale_temp_files_of_its_partition(tmp_path: Path) -> None:
    """A hard-killed run leaves ``.<date>.parquet.*.tmp``; the next write of that date
    removes it once it is old, but never a fresh one (a concurrent writer's) or another date's."""
    wh = LocalWarehouse(tmp_path)
    target = dt.date(2026, 11, 27)
    final = partition_path(tmp_path, target)
    final.parent.mkdir(parents=True)
    old = time.time() - STALE_TEMP_SECONDS - 60
    stale = final.parent / f".{final.name}.killed1.tmp"
    fresh = final.parent / f".{final.name}.writing.tmp"
    other_date = final.parent / ".2026-11-26.parquet.killed2.tmp"
    for path in (stale, fresh, other_date):
        path.write_bytes(b"partial")
    for path in (stale, other_date):
        os.utime(path, (old, old))
    rows = pa.Table.from_pylist(
        [
            {
                "target_date": target,
                "user_id": 1,
                "content_id": "c1",
                "score": 0.5,
                "model_sha256": "0" * 64,
                "run_id": "r",
                "run_name": "n",
                "created_at": dt.datetime(2026, 11, 26, 21, tzinfo=dt.UTC),
            }
        ],
        schema=PREDICTIONS_SCHEMA,
    )
    assert wh.write_predictions(target, [rows]) == str(final)
    assert not stale.exists()
    assert fresh.exists() and other_date.exists()
    assert pq.read_table(final).num_rows == 1
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(
        [final.name, fresh.name, other_date.name]
    )

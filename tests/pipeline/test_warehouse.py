"""Warehouse locations: scheme selection and local path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.warehouse import open_warehouse
from kfp_prediction.warehouse.local import LocalWarehouse


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

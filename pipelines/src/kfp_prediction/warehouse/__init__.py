"""Open a warehouse by its location: a directory / ``file://`` URI, or ``bigquery://P/D``."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kfp_prediction.errors import WarehouseUnreachableError
from kfp_prediction.warehouse.base import Warehouse

HOME_ENV = "KFP_BRIDGE_HOME"


def resolve_local_path(value: str) -> Path:
    """A local path or ``file://`` URI; relative paths are taken from $KFP_BRIDGE_HOME or cwd."""
    if value.startswith("file://"):
        parsed = urlparse(value)
        value = parsed.netloc + parsed.path
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(os.environ.get(HOME_ENV) or os.getcwd()) / path
    return path


def open_warehouse(location: str) -> Warehouse:
    """Pick the implementation from the location's scheme."""
    if not isinstance(location, str) or not location.strip():
        raise WarehouseUnreachableError("warehouse location is empty")
    parsed = urlparse(location)
    if parsed.scheme == "bigquery":
        dataset = parsed.path.strip("/")
        if not parsed.netloc or not dataset or "/" in dataset:
            raise WarehouseUnreachableError(
                f"warehouse location {location!r} must look like bigquery://PROJECT/DATASET"
            )
        from kfp_prediction.warehouse.bigquery import BigQueryWarehouse

        region = parse_qs(parsed.query).get("location", [None])[0]
        return BigQueryWarehouse(parsed.netloc, dataset, location=region)
    if parsed.scheme in ("", "file"):
        from kfp_prediction.warehouse.local import LocalWarehouse

        return LocalWarehouse(resolve_local_path(location))
    raise WarehouseUnreachableError(
        f"warehouse location {location!r} has an unsupported scheme {parsed.scheme!r} "
        "(use a directory, file://PATH or bigquery://PROJECT/DATASET)"
    )


__all__ = ["Warehouse", "open_warehouse", "resolve_local_path"]

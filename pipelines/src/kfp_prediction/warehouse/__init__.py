"""Open a warehouse by its location: a directory / ``file://`` URI, or ``bigquery://P/D?...``."""

from __future__ import annotations

from urllib.parse import urlparse

from kfp_prediction.errors import WarehouseUnreachableError
from kfp_prediction.paths import resolve_local_path
from kfp_prediction.schema import PREDICTIONS_TABLE, check_predictions_table
from kfp_prediction.warehouse.base import Warehouse


def open_warehouse(location: str, *, predictions_table: str = PREDICTIONS_TABLE) -> Warehouse:
    """Pick the implementation from the location's scheme.

    ``predictions_table`` is the output table the warehouse writes (and its own features
    table); it is checked first, so a bad name fails before anything is read or written.
    """
    check_predictions_table(predictions_table)
    if not isinstance(location, str) or not location.strip():
        raise WarehouseUnreachableError("warehouse location is empty")
    parsed = urlparse(location)
    if parsed.scheme == "bigquery":
        dataset = parsed.path.strip("/")
        if not parsed.netloc or not dataset or "/" in dataset:
            raise WarehouseUnreachableError(
                f"warehouse location {location!r} must look like bigquery://PROJECT/DATASET"
            )
        from kfp_prediction.warehouse.bigquery import (
            BigQuerySettings,
            BigQueryWarehouse,
            check_names,
        )

        check_names(parsed.netloc, dataset)  # before the settings, the client, any I/O
        settings = BigQuerySettings.from_query(parsed.query, location)
        return BigQueryWarehouse(
            parsed.netloc, dataset, settings=settings, predictions_table=predictions_table
        )
    if parsed.scheme in ("", "file"):
        from kfp_prediction.warehouse.local import LocalWarehouse

        return LocalWarehouse(resolve_local_path(location), predictions_table=predictions_table)
    raise WarehouseUnreachableError(
        f"warehouse location {location!r} has an unsupported scheme {parsed.scheme!r} "
        "(use a directory, file://PATH or bigquery://PROJECT/DATASET)"
    )


__all__ = ["Warehouse", "open_warehouse"]

"""The features step: check the sources, then materialize the target date's features.

Runs without scikit-learn and with little memory: the feature query runs inside the
warehouse (DuckDB writes a Parquet file, BigQuery a query job's destination partition) and
only the partition's reference leaves the step. Every check runs before the query, so bad
input leaves the previous features partition, and the predictions, untouched.
"""

from __future__ import annotations

import logging
from typing import Any

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import (
    InvalidSourceDataError,
    LateSourceDataError,
    MissingSourceColumnError,
    NoSourceDataError,
)
from kfp_prediction.metrics import Clock
from kfp_prediction.parameters import check_min_rows
from kfp_prediction.schema import PREDICTIONS_TABLE, SOURCE_COLUMNS
from kfp_prediction.warehouse import Warehouse, open_warehouse
from kfp_prediction.warehouse.base import check_row_floor

log = logging.getLogger(__name__)


def check_sources(warehouse: Warehouse, window: TargetWindow) -> dict[str, float]:
    """Columns present, users to score, data for the day before the target date; row counts.

    The day before the target date is checked for any row, not counted (``has_rows``).
    """
    warehouse.check_reachable()
    for table, required in SOURCE_COLUMNS.items():
        present = warehouse.columns(table)  # one lookup per table (an API call on BigQuery)
        missing = [c for c in required if c not in present]
        if missing:
            raise MissingSourceColumnError(
                f"source table {table} is missing column(s) {', '.join(missing)} "
                f"in {warehouse.location}"
            )
    counts: dict[str, float] = {}
    for table in ("users", "contents"):
        counts[f"{table}_rows"] = warehouse.count_rows(table)
        if not counts[f"{table}_rows"]:
            raise NoSourceDataError(f"source table {table} has no rows in {warehouse.location}")
    if not warehouse.has_rows("page_views", window.last_day_start_utc, window.end_utc):
        raise LateSourceDataError(
            f"source table page_views has no rows for {window.last_day:%Y-%m-%d} (JST), the "
            f"last day before target_date {window.target_date:%Y-%m-%d}, in {warehouse.location}"
            " (late data? retryable)"
        )
    registered, null_ids = warehouse.registered_users(window.end_utc)
    if null_ids:
        raise InvalidSourceDataError(
            f"source table users has {null_ids} row(s) with a NULL user_id in {warehouse.location}"
        )
    if not registered:
        raise NoSourceDataError(
            "source table users has no user registered before target_date "
            f"{window.target_date:%Y-%m-%d} in {warehouse.location}"
        )
    counts["users_registered"] = registered
    return counts


def materialize_features(
    target_date: str,
    warehouse: str,
    lookback_days: int,
    run_id: str = "",
    *,
    predictions_table: str = PREDICTIONS_TABLE,
    min_rows: int = 1,
) -> dict[str, Any]:
    """Replace the target date's features partition; returns metrics and ``features``.

    The partition is of ``predictions_table``'s own features table (``schema.features_table``),
    so workflows with different outputs in one warehouse never overwrite each other's.

    ``min_rows`` is the workflow's row floor, the predict step's too: the features hold one
    row per registered user and the predictions one per features row, so one floor fits
    both. Fewer users than that raise ``TooFewRowsError`` and the previous features partition
    stays (other models reuse it), checked on the source count before the query and, where
    the warehouse can (local), on the rows written before they are published.

    ``run_id`` is not used for the data: it is an input so that the step's cache key (the
    component and its inputs) differs on every run, and a rerun after late source data
    recomputes even where caching is switched on (pipelines/README.md, "Caching").
    """
    clock = Clock()
    window = TargetWindow.build(target_date, lookback_days)
    check_min_rows(min_rows)
    wh = open_warehouse(warehouse, predictions_table=predictions_table)
    metrics: dict[str, Any] = dict(check_sources(wh, window))
    check_row_floor(
        wh.features_partition(window.target_date),
        int(metrics["users_registered"]),
        min_rows,
        "features",
    )
    clock.lap(metrics, "checks")
    reference, rows = wh.materialize_features(window, min_rows=min_rows)
    clock.lap(metrics, "query")
    metrics.update(features=reference, features_rows=rows)
    log.info("features for %s (run %s): %d users in %s", target_date, run_id, rows, reference)
    return metrics

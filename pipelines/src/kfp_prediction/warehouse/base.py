"""The warehouse interface the pipeline steps use; one implementation per location scheme."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import TooFewRowsError
from kfp_prediction.schema import (
    FEATURES_TABLE,
    PREDICTIONS_TABLE,
    check_predictions_table,
    features_table,
)

if TYPE_CHECKING:
    import pyarrow as pa


class Warehouse(ABC):
    """Reads source tables, keeps one features and one predictions partition per target date.

    ``materialize_features`` and ``write_predictions`` are all-or-nothing per partition: either
    the new rows replace that date's partition completely, or the previous partition stays.
    Both go to the tables of one output: ``predictions_table`` and its own
    ``features_table`` (``schema.features_table``), so workflows sharing a warehouse with
    different outputs never touch each other's partitions.
    """

    location: str
    predictions_table: str = PREDICTIONS_TABLE
    features_table: str = FEATURES_TABLE

    def _set_output(self, predictions_table: str) -> None:
        """Check the output table's name and derive its features table (before any I/O)."""
        self.predictions_table = check_predictions_table(predictions_table)
        self.features_table = features_table(predictions_table)

    @abstractmethod
    def check_reachable(self) -> None:
        """Raise ``WarehouseUnreachableError`` naming the location if it cannot be used."""

    @abstractmethod
    def columns(self, table: str) -> set[str]:
        """Column names of a source table (``NoSourceDataError`` if the table is absent)."""

    @abstractmethod
    def count_rows(
        self, table: str, start_utc: dt.datetime | None = None, end_utc: dt.datetime | None = None
    ) -> int:
        """Rows of ``table``; with bounds, rows whose ``event_time`` is in ``[start, end)``."""

    @abstractmethod
    def has_rows(self, table: str, start_utc: dt.datetime, end_utc: dt.datetime) -> bool:
        """Whether any row's ``event_time`` is in ``[start, end)``: stops at the first one.

        The late-data check needs only this; a count scans the whole column (~0.3 s at 20M
        page views, seconds at 200M), where the first match is found in milliseconds.
        """

    @abstractmethod
    def registered_users(self, end_utc: dt.datetime) -> tuple[int, int]:
        """Users registered before ``end_utc``, and how many of those have a NULL user_id."""

    @abstractmethod
    def user_features(self, window: TargetWindow) -> pa.Table:
        """The feature query's whole result as one table (training, the benchmark floor)."""

    @abstractmethod
    def features_partition(self, target_date: dt.date) -> str:
        """Reference of the target date's features partition (a path or a table$YYYYMMDD)."""

    @abstractmethod
    def materialize_features(self, window: TargetWindow, min_rows: int = 0) -> tuple[str, int]:
        """Run the feature query into the target date's features partition, replacing it.

        The query runs inside the warehouse (nothing is fetched); returns the partition's
        reference and its row count. Fewer than ``min_rows`` rows raise ``TooFewRowsError``
        and the previous partition stays (see each implementation for how exactly).
        """

    @abstractmethod
    def feature_batches(self, reference: str, rows_per_batch: int) -> pa.RecordBatchReader:
        """Stream one features partition in record batches (``NoSourceDataError`` if absent)."""

    @abstractmethod
    def contents(self) -> pa.Table:
        """The candidate contents with their attributes, ordered by ``content_id``."""

    @abstractmethod
    def write_predictions(
        self, target_date: dt.date, parts: Iterable[pa.Table], min_rows: int = 0
    ) -> str:
        """Replace the target date's partition with the rows of ``parts``; return where.

        ``parts`` may be a stream: it is consumed while writing, and if it raises, the previous
        partition stays as it was. So it does when ``parts`` holds fewer than ``min_rows``
        rows (``check_row_floor``): the count is checked before anything is published.
        """


def check_row_floor(partition: str, rows: int, min_rows: int, kind: str = "predictions") -> None:
    """Refuse to publish ``partition`` with fewer than ``min_rows`` rows (a re-run or backfill
    on short sources must not replace a good partition with a few rows). ``kind`` names the
    table in the message: ``predictions`` or ``features``."""
    if rows < min_rows:
        raise TooFewRowsError(
            f"{kind} partition {partition}: {rows} row(s), below the floor "
            f"min_rows={min_rows}; not published, the previous partition is kept"
        )

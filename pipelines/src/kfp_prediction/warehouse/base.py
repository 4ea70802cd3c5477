"""The warehouse interface the prediction steps use; one implementation per location scheme."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable

import pyarrow as pa

from kfp_prediction.dates import TargetWindow


class Warehouse(ABC):
    """Reads source tables and writes one predictions partition per target date.

    Implementations must make ``write_predictions`` all-or-nothing per partition: either the
    new rows replace that date's partition completely, or the previous partition stays.
    """

    location: str

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
    def user_feature_batches(
        self, window: TargetWindow, rows_per_batch: int = 200_000
    ) -> pa.RecordBatchReader:
        """Run the feature query (``kfp_prediction.features``): one row per user, in batches.

        Returns once the query has run; reading the batches only transfers the result.
        """

    def user_features(self, window: TargetWindow) -> pa.Table:
        """The whole feature query result as one table."""
        return self.user_feature_batches(window).read_all()

    @abstractmethod
    def contents(self) -> pa.Table:
        """The candidate contents with their attributes, ordered by ``content_id``."""

    @abstractmethod
    def write_predictions(self, target_date: dt.date, parts: Iterable[pa.Table]) -> str:
        """Replace the target date's partition with the rows of ``parts``; return where.

        ``parts`` may be a stream: it is consumed while writing, and if it raises, the previous
        partition stays as it was.
        """

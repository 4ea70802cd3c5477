"""Local warehouse: DuckDB over Parquet files in a directory (the embedded default).

Layout under the warehouse root::

    users/*.parquet  page_views/*.parquet  purchases/*.parquet  contents/*.parquet
    predictions/YYYY-MM-DD.parquet      one file per target date (JST), all columns inside

DuckDB runs in memory and only reads the source files, so any number of runs can query at
once. Each predictions partition is one Parquet file, written to a temporary name in the same
directory and moved into place with an atomic ``os.replace``: readers see the old or the new
file, never a partial one, a failed run leaves the old one, and parallel dates never touch
the same file.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.features import duckdb_user_features_sql
from kfp_prediction.schema import PREDICTIONS_SCHEMA, PREDICTIONS_TABLE, SOURCE_TABLES
from kfp_prediction.warehouse.base import Warehouse

# A temporary partition file older than this is left over from a killed run: a live writer
# finishes a 1M-user partition in about a second, and renames or deletes its file when done.
STALE_TEMP_SECONDS = 3600.0


def partition_path(root: str | Path, target_date: dt.date) -> Path:
    """Where the predictions for one target date live.

    A plain ``YYYY-MM-DD.parquet`` name rather than a hive ``target_date=...`` directory:
    the file already holds ``target_date``, and hive paths make pyarrow/DuckDB infer a second,
    conflicting ``target_date`` column.
    """
    return Path(root) / PREDICTIONS_TABLE / f"{target_date:%Y-%m-%d}.parquet"


class LocalWarehouse(Warehouse):
    """DuckDB/Parquet warehouse rooted at a directory."""

    def __init__(
        self, root: str | Path, *, threads: int | None = None, memory_limit: str = "1GB"
    ) -> None:
        self.root = Path(root)
        self.memory_limit = memory_limit
        self.location = str(self.root)
        self._threads = threads
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- reading --------------------------------------------------------------------------
    def check_reachable(self) -> None:
        if not self.root.is_dir():
            raise WarehouseUnreachableError(
                f"warehouse location {self.location!r} is not a directory (local warehouse)"
            )

    def _files(self, table: str) -> list[str]:
        files = sorted(str(p) for p in (self.root / table).glob("*.parquet"))
        if not files:
            raise NoSourceDataError(
                f"source table {table} not found: no Parquet files in {self.root / table}"
            )
        return files

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self.check_reachable()
            con = duckdb.connect(":memory:")
            _set_session(con)
            # Bound DuckDB's buffer pool so a 1M-user run stays well under 2 GiB per step.
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            con.execute("SET preserve_insertion_order = false")
            if self._threads:
                con.execute(f"SET threads = {int(self._threads)}")
            for table in SOURCE_TABLES:
                if (self.root / table).is_dir():
                    files = ", ".join("'" + f.replace("'", "''") + "'" for f in self._files(table))
                    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}])")
            self._con = con
        return self._con

    def columns(self, table: str) -> set[str]:
        self.check_reachable()
        schema = pq.read_schema(self._files(table)[0])
        return set(schema.names)

    def count_rows(
        self, table: str, start_utc: dt.datetime | None = None, end_utc: dt.datetime | None = None
    ) -> int:
        self._files(table)
        con = self._connection()
        if start_utc is None or end_utc is None:
            return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        sql = f"SELECT COUNT(*) FROM {table} WHERE event_time >= ? AND event_time < ?"
        return int(con.execute(sql, [start_utc, end_utc]).fetchone()[0])

    def user_feature_batches(
        self, window: TargetWindow, rows_per_batch: int = 200_000
    ) -> pa.RecordBatchReader:
        # A cursor of its own: a batch reader is cut short, silently, when any other query
        # runs on the connection it came from (duckdb 1.4), such as a later count or check.
        cursor = self._connection().cursor()
        _set_session(cursor)
        return cursor.execute(duckdb_user_features_sql(window)).fetch_record_batch(rows_per_batch)

    def user_features(self, window: TargetWindow) -> pa.Table:
        # DuckDB's own whole-result Arrow export: one call instead of batches re-joined.
        con = self._connection()
        return con.execute(duckdb_user_features_sql(window)).fetch_arrow_table()

    def contents(self) -> pa.Table:
        con = self._connection()
        sql = (
            "SELECT content_id, channel, category, discount_rate FROM contents ORDER BY content_id"
        )
        return con.execute(sql).fetch_arrow_table()

    # -- writing --------------------------------------------------------------------------
    def write_predictions(self, target_date: dt.date, parts: Iterable[pa.Table]) -> str:
        final = partition_path(self.root, target_date)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(final)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            os.fchmod(fd, 0o644)  # mkstemp creates 0600; readers in other processes need read
            with os.fdopen(fd, "wb") as handle:
                with pq.ParquetWriter(handle, PREDICTIONS_SCHEMA, compression="zstd") as writer:
                    for part in parts:
                        writer.write_table(part)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return str(final)


def _set_session(con: duckdb.DuckDBPyConnection) -> None:
    """Per-connection settings (cursors do not inherit them, unlike memory and threads)."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # logs, not a terminal


def remove_stale_temp_files(final: Path, max_age_seconds: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete ``.<partition>.*.tmp`` files of this partition left by a killed run.

    Only files older than ``max_age_seconds`` (by modification time) go: a younger one may be
    another process's write in progress (two runs of the same date), which must not be pulled
    from under it. Other partitions' files are never touched.
    """
    removed = []
    cutoff = time.time() - max_age_seconds
    for path in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            continue
    return removed

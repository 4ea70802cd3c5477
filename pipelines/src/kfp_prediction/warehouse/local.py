"""Local warehouse: DuckDB over Parquet files in a directory (the embedded default).

Layout under the warehouse root::

    users/*.parquet  page_views/*.parquet  purchases/*.parquet  contents/*.parquet
    user_features/YYYY-MM-DD.parquet    one file per target date: the features step's output
    predictions/YYYY-MM-DD.parquet      one file per target date (JST), all columns inside
    T/YYYY-MM-DD.parquet, T_user_features/YYYY-MM-DD.parquet
                                        the same for a workflow whose output table is T

DuckDB runs in memory and only reads the source files, so any number of runs can query at
once. Each features or predictions partition is one Parquet file, written to a temporary name
in the same directory and moved into place with an atomic ``os.replace``: readers see the old
or the new file, never a partial one, a failed run leaves the old one, and parallel dates never
touch the same file.

pyarrow is imported by the methods that hand Arrow data over, not by this module: the
features step runs DuckDB alone (its query writes Parquet itself) and so never pays for
pyarrow and numpy (~0.13 s of every features step).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kfp_prediction.dates import TargetWindow
from kfp_prediction.errors import NoSourceDataError, WarehouseUnreachableError
from kfp_prediction.features import REGISTERED_USERS_SQL, duckdb_user_features_sql
from kfp_prediction.liveness import publishing
from kfp_prediction.schema import (
    PREDICTIONS_TABLE,
    SOURCE_TABLES,
    predictions_schema,
)
from kfp_prediction.warehouse.base import Warehouse, check_row_floor

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


# DuckDB's buffer pool: what the features query may hold before it spills. Sized for the
# features step's 2G limit (DEFAULT_STEP_OPTIONS): peak RSS 1.6-1.7 GiB at 10M users, where
# 1.6 GB is no faster and 1.0-1.2 GB spill more (36-41 s against 27.5 s). On time-ordered
# page views the aggregate outgrows even this pool: with two threads DuckDB keeps a hash
# table per thread, each with nearly every user (benchmarks/bench_scale.py; measurements in
# pipelines/README.md).
MEMORY_LIMIT = "1400MB"


def partition_path(root: str | Path, target_date: dt.date, table: str = PREDICTIONS_TABLE) -> Path:
    """Where one target date's partition of ``table`` (predictions by default) lives.

    A plain ``YYYY-MM-DD.parquet`` name rather than a hive ``target_date=...`` directory:
    the file already holds ``target_date``, and hive paths make pyarrow/DuckDB infer a second,
    conflicting ``target_date`` column.
    """
    return Path(root) / table / f"{target_date:%Y-%m-%d}.parquet"


class LocalWarehouse(Warehouse):
    """DuckDB/Parquet warehouse rooted at a directory."""

    def __init__(
        self,
        root: str | Path,
        *,
        threads: int | None = None,
        memory_limit: str = MEMORY_LIMIT,
        predictions_table: str = PREDICTIONS_TABLE,
    ) -> None:
        self._set_output(predictions_table)
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
        """The DuckDB session over the source files; the predict step never opens one."""
        if self._con is None:
            import duckdb  # here: the predict step reads Parquet with pyarrow alone

            self.check_reachable()
            con = duckdb.connect(":memory:")
            _set_session(con)
            # Bound DuckDB's buffer pool (MEMORY_LIMIT) so a step stays under 2 GiB at 10M
            # users; what does not fit spills to a directory of this process's own.
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            spill = _spill_directory()
            con.execute(f"SET temp_directory = '{_quote(str(spill))}'")
            con.execute("SET preserve_insertion_order = false")
            if self._threads:
                con.execute(f"SET threads = {int(self._threads)}")
            for table in SOURCE_TABLES:
                if (self.root / table).is_dir():
                    files = ", ".join(f"'{_quote(f)}'" for f in self._files(table))
                    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}])")
            self._con = con
        return self._con

    def columns(self, table: str) -> set[str]:
        self.check_reachable()
        self._files(table)
        cursor = self._connection().execute(f"SELECT * FROM {table} LIMIT 0")
        return {column[0] for column in cursor.description}

    def count_rows(
        self, table: str, start_utc: dt.datetime | None = None, end_utc: dt.datetime | None = None
    ) -> int:
        self._files(table)
        con = self._connection()
        if start_utc is None or end_utc is None:
            return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        sql = f"SELECT COUNT(*) FROM {table} WHERE {_in_span(start_utc, end_utc)}"
        return int(con.execute(sql).fetchone()[0])

    def has_rows(self, table: str, start_utc: dt.datetime, end_utc: dt.datetime) -> bool:
        self._files(table)
        sql = f"SELECT 1 FROM {table} WHERE {_in_span(start_utc, end_utc)} LIMIT 1"
        return self._connection().execute(sql).fetchone() is not None

    def registered_users(self, end_utc: dt.datetime) -> tuple[int, int]:
        self._files("users")
        sql = REGISTERED_USERS_SQL.format(end=_timestamptz(end_utc), table="users")
        row = self._connection().execute(sql).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def user_features(self, window: TargetWindow) -> pa.Table:
        con = self._connection()
        return con.execute(duckdb_user_features_sql(window)).fetch_arrow_table()

    def contents(self) -> pa.Table:
        """A few rows, read file by file with ``ParquetFile``: the predict step opens no DuckDB
        session, and ``pq.read_table`` would import ``pyarrow.dataset`` (~0.25 s) for them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ["content_id", "channel", "category", "discount_rate"]
        parts = [pq.ParquetFile(f).read(columns=columns) for f in self._files("contents")]
        return pa.concat_tables(parts).sort_by("content_id")

    # -- features -------------------------------------------------------------------------
    def features_partition(self, target_date: dt.date) -> str:
        return str(partition_path(self.root, target_date, self.features_table))

    def materialize_features(self, window: TargetWindow, min_rows: int = 0) -> tuple[str, int]:
        """DuckDB writes the query result straight into a Parquet file, renamed into place
        only if it holds at least ``min_rows`` rows (else removed: the old file stays)."""
        con = self._connection()
        query = duckdb_user_features_sql(window)
        rows = 0

        def copy(tmp: Path) -> None:
            nonlocal rows
            # USE_TMP_FILE false: the file is already a temporary one; DuckDB's own
            # "tmp_<name>" would be left behind when the query fails half way. LZ4_RAW, not
            # ZSTD: the partition is a hand-over read once by the predict step; at 1M users
            # it writes ~0.07 s and reads ~0.02 s faster for a file 20% larger.
            options = "FORMAT parquet, COMPRESSION lz4_raw, USE_TMP_FILE false"
            sql = f"COPY ({query}) TO '{_quote(str(tmp))}' ({options})"
            rows = int(con.execute(sql).fetchone()[0])
            check_row_floor(str(final), rows, min_rows, "features")

        final = partition_path(self.root, window.target_date, self.features_table)
        return str(replace_file(final, copy)), rows

    def feature_batches(self, reference: str, rows_per_batch: int) -> pa.RecordBatchReader:
        """Read the partition file in batches; the open file survives a concurrent replace."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(reference)
        except FileNotFoundError:
            raise NoSourceDataError(
                f"features partition {reference} not found: run the features step first"
            ) from None
        return pa.RecordBatchReader.from_batches(
            parquet.schema_arrow, parquet.iter_batches(batch_size=rows_per_batch)
        )

    # -- writing --------------------------------------------------------------------------
    def write_predictions(
        self, target_date: dt.date, parts: Iterable[pa.Table], min_rows: int = 0
    ) -> str:
        """Into a temporary file; below ``min_rows`` it is removed before the rename."""
        import pyarrow.parquet as pq

        final = partition_path(self.root, target_date, self.predictions_table)

        def write(tmp: Path) -> None:
            rows = 0
            with pq.ParquetWriter(tmp, predictions_schema(), compression="zstd") as writer:
                for part in parts:
                    writer.write_table(part)
                    rows += part.num_rows
            check_row_floor(str(final), rows, min_rows)

        return str(replace_file(final, write))


def replace_file(final: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary file beside ``final``, fsync it and rename it over ``final``.

    If ``write`` raises, the temporary file is removed and ``final`` is as it was. The
    writer holds an exclusive ``flock`` on its temporary file until it is renamed or
    removed, so the next writer of the partition can tell a killed run's leftovers (no
    lock: the kernel dropped it with the process) from a live writer's file and removes
    only those. The rename happens only while the run is live (``liveness.publishing``).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(final)
    fd, tmp = _locked_temp_file(final)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp creates 0600; readers in other processes need read
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        with publishing(f"partition {final}"):
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # releases the lock
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def _locked_temp_file(final: Path) -> tuple[int, Path]:
    """A new temporary file beside ``final`` and an fd holding its ``flock``.

    The lock says "a writer is alive" to ``remove_stale_temp_files``; a file another writer
    removed in the instant before it was locked is simply made again.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


_SPILL_PREFIX = "kfp-prediction-duckdb-"


def _spill_directory() -> Path:
    """This process's DuckDB spill folder, after removing those of processes that are gone.

    DuckDB creates the folder with the session and removes it when the session closes; a step
    killed mid-query (a task's on_kill, an OOM kill) leaves it behind, with any spill files.
    """
    temp = Path(tempfile.gettempdir())
    for folder in temp.glob(f"{_SPILL_PREFIX}*"):
        pid = folder.name.removeprefix(_SPILL_PREFIX)
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return temp / f"{_SPILL_PREFIX}{os.getpid()}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _timestamptz(value: dt.datetime) -> str:
    """An instant as a DuckDB literal. Not a bound parameter: DuckDB's Python client imports
    pandas on the first one (~0.3 s of the features step's start)."""
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return f"TIMESTAMPTZ '{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}+00'"


def _in_span(start_utc: dt.datetime, end_utc: dt.datetime) -> str:
    return f"event_time >= {_timestamptz(start_utc)} AND event_time < {_timestamptz(end_utc)}"


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _set_session(con: duckdb.DuckDBPyConnection) -> None:
    """Per-connection settings (cursors do not inherit them, unlike memory and threads)."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # logs, not a terminal


def remove_stale_temp_files(final: Path) -> list[Path]:
    """Delete ``.<partition>.*.tmp`` files of this partition that no live writer holds.

    Each writer holds an exclusive ``flock`` on its temporary file while it writes
    (``replace_file``); the kernel releases it when the writer exits, however it dies. A
    file whose lock can be taken is a killed run's leftover; one that cannot is another
    process's write in progress (two runs of the same date) and is left alone. Other
    partitions' files are never touched.
    """
    removed = []
    for path in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        try:
            with open(path, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer's
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            continue
    return removed

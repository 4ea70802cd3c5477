"""The data-quality gate's facts: what the predictions partition holds, read where it landed.

The predict step reports the partition it replaced (``kfp_prediction.report``); the gate
(:class:`prediction_app.workflow_dag.ResultGate`) does not take the report's word for what
is in it. It reads the partition itself, before the asset event is recorded:

- a local warehouse partition ``/ABS/DIR/TABLE/YYYY-MM-DD.parquet``: the Parquet footer's
  row count and the distinct ``model_sha256`` and ``run_id`` values (pyarrow);
- a BigQuery partition ``PROJECT.DATASET.TABLE$YYYYMMDD``: one query through the Google
  provider's ``BigQueryHook`` (``COUNT(*)`` and the distinct values, on the partition's
  ``target_date``), with the connection's identity.

So a partition that is empty, far too small, written by another model or by another run
(a concurrent run of the same date replaced it after this one) fails the gate. By then it
has replaced the date's previous partition: keeping a short run from doing so is the
pipeline's ``min_rows`` floor (the workflow's ``output.checks.min_rows``), checked in the
features and predict steps before they publish; the gate verifies what landed.

Heavy imports (pyarrow, the Google provider) happen when a partition is read, in the task,
never when the DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The columns of the predictions table the gate reads (kfp_prediction.schema).
DIGEST_COLUMN = "model_sha256"
RUN_ID_COLUMN = "run_id"
# At most this many distinct values are read back: one is expected, a few name the culprits.
MAX_DISTINCT = 5
_BIGQUERY_PARTITION = re.compile(
    r"^(?P<project>[a-z][a-z0-9.:-]*[a-z0-9])\.(?P<dataset>\w+)\.(?P<table>\w+)\$(?P<day>\d{8})$"
)


@dataclass(frozen=True)
class PartitionFacts:
    """What one partition holds: rows and the distinct model digests and run ids in it."""

    partition: str
    rows: int
    model_sha256: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    exists: bool = True


@dataclass(frozen=True)
class Expected:
    """What the gate requires of the partition."""

    min_rows: int
    model_sha256: str | None
    run_id: str | None
    reported_rows: int | None = None


def problems(facts: PartitionFacts, expected: Expected) -> list[str]:
    """Each way ``facts`` break ``expected``, as ``what: expected ..., found ...``."""
    found: list[str] = []
    if not facts.exists:
        return [f"partition: expected it to exist, found none at {facts.partition}"]
    if facts.rows < expected.min_rows:
        found.append(f"rows: expected at least {expected.min_rows}, found {facts.rows}")
    if expected.reported_rows is not None and facts.rows != expected.reported_rows:
        found.append(f"rows: the run reported {expected.reported_rows}, found {facts.rows}")
    if not facts.rows:
        return found  # an empty partition has no digest or run id to compare
    digests = [d.lower() for d in facts.model_sha256]
    if expected.model_sha256 and digests != [expected.model_sha256.lower()]:
        found.append(
            f"model_sha256: expected {expected.model_sha256.lower()}, "
            f"found {_listed(facts.model_sha256)}"
        )
    if expected.run_id is not None and list(facts.run_ids) != [expected.run_id]:
        found.append(f"run_id: expected {expected.run_id!r}, found {_listed(facts.run_ids)}")
    return found


def _listed(values: Sequence[str]) -> str:
    if not values:
        return "none"
    more = f" (at most {MAX_DISTINCT} shown)" if len(values) >= MAX_DISTINCT else ""
    return ", ".join(repr(v) for v in values) + more


def read_partition(
    partition: str, *, gcp_conn_id: str = "google_cloud_default", location: str | None = None
) -> PartitionFacts:
    """The facts of a reported partition, local or BigQuery; ``ValueError`` for any other."""
    if _BIGQUERY_PARTITION.match(partition):
        return read_bigquery_partition(partition, gcp_conn_id=gcp_conn_id, location=location)
    path = Path(partition)
    if path.is_absolute() and path.suffix == ".parquet":
        return read_local_partition(path)
    raise ValueError(
        f"partition {partition!r} is neither PROJECT.DATASET.TABLE$YYYYMMDD nor "
        "/ABS/DIR/TABLE/YYYY-MM-DD.parquet"
    )


def read_local_partition(path: str | Path) -> PartitionFacts:
    """Row count from the Parquet footer; the distinct digests and run ids from their
    columns (read as dictionaries: the writer stores each as one repeated value)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return PartitionFacts(str(path), rows=0, exists=False)
    parquet = pq.ParquetFile(path)
    columns = (DIGEST_COLUMN, RUN_ID_COLUMN)
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ValueError(f"partition {path} has no column(s) {', '.join(missing)}")
    table = parquet.read(columns=list(columns))
    distinct = {
        c: tuple(sorted(str(v) for v in pc.unique(table[c]).to_pylist() if v is not None))
        for c in columns
    }
    return PartitionFacts(
        str(path),
        rows=parquet.metadata.num_rows,
        model_sha256=distinct[DIGEST_COLUMN][:MAX_DISTINCT],
        run_ids=distinct[RUN_ID_COLUMN][:MAX_DISTINCT],
    )


def bigquery_partition_sql(partition: str) -> tuple[str, dt.date]:
    """The query on one ``PROJECT.DATASET.TABLE$YYYYMMDD`` and its ``@target_date``."""
    match = _BIGQUERY_PARTITION.match(partition)
    if not match:
        raise ValueError(f"partition {partition!r} is not PROJECT.DATASET.TABLE$YYYYMMDD")
    day = dt.datetime.strptime(match["day"], "%Y%m%d").date()
    table = f"{match['project']}.{match['dataset']}.{match['table']}"
    sql = (
        f"SELECT COUNT(*) AS row_count, {_distinct(DIGEST_COLUMN, 'model_sha256')}, "
        f"{_distinct(RUN_ID_COLUMN, 'run_ids')} FROM `{table}` WHERE target_date = @target_date"
    )
    return sql, day


def _distinct(column: str, alias: str) -> str:
    return (
        f"ARRAY_AGG(DISTINCT {column} IGNORE NULLS ORDER BY {column} LIMIT {MAX_DISTINCT}) "
        f"AS {alias}"
    )


def read_bigquery_partition(
    partition: str, *, gcp_conn_id: str = "google_cloud_default", location: str | None = None
) -> PartitionFacts:
    """One query through ``BigQueryHook`` (the connection's identity and project)."""
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    sql, day = bigquery_partition_sql(partition)
    project = partition.split(".", 1)[0]
    hook = BigQueryHook(gcp_conn_id=gcp_conn_id, use_legacy_sql=False, location=location)
    client = hook.get_client(project_id=project, location=location)
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("target_date", "DATE", day)],
        use_legacy_sql=False,
    )
    try:
        [row] = list(client.query_and_wait(sql, job_config=config, location=location))
    except NotFound:  # no such table (or dataset): nothing landed
        return PartitionFacts(partition, rows=0, exists=False)
    rows = int(row["row_count"] or 0)
    return PartitionFacts(
        partition,
        rows=rows,
        model_sha256=tuple(row["model_sha256"] or ()),
        run_ids=tuple(row["run_ids"] or ()),
        exists=True,  # an absent partition of a partitioned table is zero rows
    )

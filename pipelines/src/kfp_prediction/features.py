"""The feature query, written once in BigQuery dialect, for one window and one engine.

``bigquery_user_features_sql`` renders ``sql/user_features.sql`` with tables qualified as
``project.dataset.table``; ``duckdb_user_features_sql`` is its sqlglot transpilation for the
local warehouse. Each warehouse runs the query into the target date's partition of the
features table (``schema.FEATURES_TABLE``); scoring reads that partition (``scoring``).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from importlib.resources import files

from kfp_prediction.dates import TargetWindow


@cache
def _template() -> str:
    return (files("kfp_prediction") / "sql" / "user_features.sql").read_text()


def _timestamp_literal(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}+00'"


def qualify_tables(sql: str, table_prefix: str) -> str:
    """Qualify every table that is not a CTE with ``project.dataset`` (BigQuery dialect)."""
    import sqlglot  # here: only the steps that run the query pay for importing it
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="bigquery")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    catalog, _, dataset = table_prefix.rpartition(".")
    for table in tree.find_all(exp.Table):
        if table.name not in ctes and not table.args.get("db"):
            table.set("db", exp.to_identifier(dataset))
            if catalog:
                table.set("catalog", exp.to_identifier(catalog))
    return tree.sql(dialect="bigquery", pretty=True)


def bigquery_user_features_sql(window: TargetWindow, table_prefix: str = "") -> str:
    """The query in BigQuery dialect; ``table_prefix`` like ``project.dataset`` qualifies tables."""
    sql = _template().format(
        target_date=f"DATE '{window.target_date:%Y-%m-%d}'",
        window_start=_timestamp_literal(window.start_utc),
        window_end=_timestamp_literal(window.end_utc),
        lookback_days=float(window.lookback_days),
    )
    return qualify_tables(sql, table_prefix) if table_prefix else sql


def duckdb_user_features_sql(window: TargetWindow) -> str:
    """The same query transpiled to DuckDB (tables are views over the Parquet files)."""
    import sqlglot

    return sqlglot.transpile(
        bigquery_user_features_sql(window), read="bigquery", write="duckdb", pretty=True
    )[0]


# Users the run scores (registered before the target date) and how many of them lack an id;
# one text for both engines (only CASE and SUM), with the window end as parameter.
REGISTERED_USERS_SQL = (
    "SELECT SUM(CASE WHEN registered_at < {end} THEN 1 ELSE 0 END) AS registered, "
    "SUM(CASE WHEN registered_at < {end} AND user_id IS NULL THEN 1 ELSE 0 END) AS null_ids "
    "FROM {table}"
)

"""The feature query (written once, BigQuery dialect) and the per-(user, content) matrix.

``user_features_sql`` renders ``sql/user_features.sql`` for one window and one engine:
BigQuery gets it as written, with tables qualified as ``project.dataset.table``; DuckDB gets
the sqlglot transpilation. ``build_candidates`` turns one row per user into one row per
(user, content) pair, the shape the model scores.

Users and contents are Arrow tables, as both engines return them: the prediction step takes
the query result in record batches and scores each as it arrives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cache
from importlib.resources import files

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from kfp_prediction.dates import TargetWindow
from kfp_prediction.schema import AGE_BANDS, CATEGORIES, CHANNELS, MEMBER_RANKS

# Model inputs, in this order. A model whose feature_names_in_ asks for anything else is refused.
MODEL_FEATURES: tuple[str, ...] = (
    "member_rank_level",
    "age_band_level",
    "tenure_days",
    "pv_count",
    "pv_app_share",
    "days_since_last_view",
    "purchase_count",
    "purchase_amount",
    "days_since_last_purchase",
    "category_view_share",
    "category_purchase_count",
    "discount_rate",
    "channel_coupon",
    "channel_newsletter",
    "channel_push",
    "push_x_app_share",
    "coupon_x_view_share",
)


@cache
def _template() -> str:
    return (files("kfp_prediction") / "sql" / "user_features.sql").read_text()


def _timestamp_literal(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}+00'"


def bigquery_user_features_sql(window: TargetWindow, table_prefix: str = "") -> str:
    """The query in BigQuery dialect; ``table_prefix`` like ``project.dataset`` qualifies tables."""
    sql = _template().format(
        window_start=_timestamp_literal(window.start_utc),
        window_end=_timestamp_literal(window.end_utc),
        lookback_days=float(window.lookback_days),
    )
    if not table_prefix:
        return sql
    tree = sqlglot.parse_one(sql, read="bigquery")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    catalog, _, dataset = table_prefix.rpartition(".")
    for table in tree.find_all(exp.Table):
        if table.name not in ctes and not table.args.get("db"):
            table.set("db", exp.to_identifier(dataset))
            if catalog:
                table.set("catalog", exp.to_identifier(catalog))
    return tree.sql(dialect="bigquery", pretty=True)


def duckdb_user_features_sql(window: TargetWindow) -> str:
    """The same query transpiled to DuckDB (tables are views over the Parquet files)."""
    return sqlglot.transpile(
        bigquery_user_features_sql(window), read="bigquery", write="duckdb", pretty=True
    )[0]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float32; a NULL becomes NaN (the feature query COALESCEs its own)."""
    return table.column(name).to_numpy().astype(np.float32, copy=False)


def _levels(values: pa.ChunkedArray, order: tuple[str, ...]) -> np.ndarray:
    """Ordinal level of each value in ``order``; -1 for NULL or a value not in it."""
    index = pc.fill_null(pc.index_in(values, value_set=pa.array(order)), -1)
    return index.to_numpy().astype(np.float32)


def candidate_columns(
    users: pa.Table, contents: pa.Table, feature_names: Sequence[str] = MODEL_FEATURES
) -> dict[str, np.ndarray]:
    """Each feature as a float32 array that broadcasts to shape (users, contents).

    User features have shape (U, 1), content attributes (1, C), pair features (U, C): the
    (user, content) grid without materialising U x C copies of every column.
    """
    n_users, n_contents = len(users), len(contents)

    def user(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(n_users, 1)

    def content(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(1, n_contents)

    pv_count = _floats(users, "pv_count")
    category_index = {c: i for i, c in enumerate(CATEGORIES)}
    content_cat = [category_index.get(c) for c in contents.column("category").to_pylist()]

    def per_category(prefix: str, total: np.ndarray) -> np.ndarray:
        """Each content's category column of the user (the total for "all" contents)."""
        return np.column_stack(
            [
                total if i is None else _floats(users, f"{prefix}_{CATEGORIES[i]}")
                for i in content_cat
            ]
        ).astype(np.float32, copy=False)

    app_share = user(_floats(users, "pv_app") / np.maximum(pv_count, 1.0))
    channels = contents.column("channel").to_pylist()
    channel = {c: content(np.array([ch == c for ch in channels])) for c in CHANNELS}
    view_share = per_category("pv", pv_count) / np.maximum(pv_count, 1.0)[:, None]
    columns = {
        "member_rank_level": lambda: user(_levels(users.column("member_rank"), MEMBER_RANKS)),
        "age_band_level": lambda: user(_levels(users.column("age_band"), AGE_BANDS)),
        "tenure_days": lambda: user(_floats(users, "tenure_days")),
        "pv_count": lambda: user(pv_count),
        "pv_app_share": lambda: app_share,
        "days_since_last_view": lambda: user(_floats(users, "days_since_last_view")),
        "purchase_count": lambda: user(_floats(users, "purchase_count")),
        "purchase_amount": lambda: user(_floats(users, "purchase_amount")),
        "days_since_last_purchase": lambda: user(_floats(users, "days_since_last_purchase")),
        "category_view_share": lambda: view_share,
        "category_purchase_count": lambda: per_category("buy", _floats(users, "purchase_count")),
        "discount_rate": lambda: content(_floats(contents, "discount_rate")),
        **{f"channel_{c}": (lambda c=c: channel[c]) for c in CHANNELS},
        # Interactions, so a linear model can tell which channel suits which user.
        "push_x_app_share": lambda: channel["push"] * app_share,
        "coupon_x_view_share": lambda: channel["coupon"] * view_share,
    }
    return {name: columns[name]() for name in feature_names}


def build_candidates(
    users: pa.Table, contents: pa.Table, feature_names: Sequence[str] = MODEL_FEATURES
) -> pd.DataFrame:
    """One row per (user, content): user features beside the content's attributes.

    Row order is user-major: rows ``i*C .. i*C+C-1`` belong to user row ``i``, where C is
    ``len(contents)``. At 1M users x C contents this is the largest object of the run, so it
    is filled column by column into one float32 block in the model's feature order and
    wrapped (not copied) in a DataFrame, which keeps the feature names the model checks.
    """
    n_users, n_contents = len(users), len(contents)
    columns = candidate_columns(users, contents, feature_names)
    matrix = np.empty((n_users, n_contents, len(feature_names)), dtype=np.float32)
    for j, name in enumerate(feature_names):
        matrix[:, :, j] = columns[name]
    return pd.DataFrame(
        matrix.reshape(n_users * n_contents, len(feature_names)),
        columns=list(feature_names),
        copy=False,
    )

"""The feature query (written once, BigQuery dialect) and the per-(user, content) matrix.

``user_features_sql`` renders ``sql/user_features.sql`` for one window and one engine:
BigQuery gets it as written, with tables qualified as ``project.dataset.table``; DuckDB gets
the sqlglot transpilation. ``build_candidates`` turns one row per user into one row per
(user, content) pair, the shape the model scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cache
from importlib.resources import files

import numpy as np
import pandas as pd
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


def _levels(values: pd.Series, order: tuple[str, ...]) -> np.ndarray:
    mapping = {name: float(i) for i, name in enumerate(order)}
    return values.map(mapping).fillna(-1.0).to_numpy(np.float32)


def candidate_columns(
    users: pd.DataFrame, contents: pd.DataFrame, feature_names: Sequence[str] = MODEL_FEATURES
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

    pv_count = users["pv_count"].to_numpy(np.float32)
    category_index = {c: i for i, c in enumerate(CATEGORIES)}
    content_cat = [category_index.get(c) for c in contents["category"]]

    def per_category(prefix: str, total: np.ndarray) -> np.ndarray:
        """Each content's category column of the user (the total for "all" contents)."""
        return np.column_stack(
            [
                total if i is None else users[f"{prefix}_{CATEGORIES[i]}"].to_numpy(np.float32)
                for i in content_cat
            ]
        ).astype(np.float32, copy=False)

    app_share = user(users["pv_app"].to_numpy(np.float32) / np.maximum(pv_count, 1.0))
    channel = {c: content(contents["channel"].to_numpy() == c) for c in CHANNELS}
    view_share = per_category("pv", pv_count) / np.maximum(pv_count, 1.0)[:, None]
    columns = {
        "member_rank_level": lambda: user(_levels(users["member_rank"], MEMBER_RANKS)),
        "age_band_level": lambda: user(_levels(users["age_band"], AGE_BANDS)),
        "tenure_days": lambda: user(users["tenure_days"]),
        "pv_count": lambda: user(pv_count),
        "pv_app_share": lambda: app_share,
        "days_since_last_view": lambda: user(users["days_since_last_view"]),
        "purchase_count": lambda: user(users["purchase_count"]),
        "purchase_amount": lambda: user(users["purchase_amount"]),
        "days_since_last_purchase": lambda: user(users["days_since_last_purchase"]),
        "category_view_share": lambda: view_share,
        "category_purchase_count": lambda: per_category(
            "buy", users["purchase_count"].to_numpy(np.float32)
        ),
        "discount_rate": lambda: content(contents["discount_rate"]),
        **{f"channel_{c}": (lambda c=c: channel[c]) for c in CHANNELS},
        # Interactions, so a linear model can tell which channel suits which user.
        "push_x_app_share": lambda: channel["push"] * app_share,
        "coupon_x_view_share": lambda: channel["coupon"] * view_share,
    }
    return {name: columns[name]() for name in feature_names}


def build_candidates(
    users: pd.DataFrame, contents: pd.DataFrame, feature_names: Sequence[str] = MODEL_FEATURES
) -> pd.DataFrame:
    """One row per (user, content): user features beside the content's attributes.

    Row order is user-major: rows ``i*C .. i*C+C-1`` belong to ``users.iloc[i]``, where C is
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

"""Source tables, the columns the feature query reads, the features and predictions tables."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from kfp_prediction.errors import PredictionsTableError

if TYPE_CHECKING:
    import pyarrow as pa

CATEGORIES = ("tops", "bottoms", "outerwear", "shoes", "bags", "accessories")
MEMBER_RANKS = ("regular", "silver", "gold", "platinum")
AGE_BANDS = ("10s", "20s", "30s", "40s", "50s", "60s+")
CHANNELS = ("coupon", "newsletter", "push")

# Columns each source table must have (the feature query reads exactly these).
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "registered_at", "member_rank", "prefecture", "age_band"),
    "page_views": ("user_id", "item_id", "category", "device", "event_time"),
    "purchases": ("user_id", "category", "amount", "event_time"),
    "contents": ("content_id", "channel", "category", "discount_rate"),
}
SOURCE_TABLES = tuple(SOURCE_COLUMNS)

# The features step's output: one row per user and target date (sql/user_features.sql),
# day-partitioned on target_date; the predict step reads one partition of it.
FEATURES_TABLE = "user_features"
FEATURE_COLUMNS: tuple[str, ...] = (
    "target_date",
    "user_id",
    "member_rank",
    "age_band",
    "tenure_days",
    "pv_count",
    "pv_app",
    *(f"pv_{c}" for c in CATEGORIES),
    "days_since_last_view",
    "purchase_count",
    "purchase_amount",
    *(f"buy_{c}" for c in CATEGORIES),
    "days_since_last_purchase",
)

PREDICTIONS_TABLE = "predictions"
# An output table name: one lower-case identifier, the same on a file system (a directory of
# the local warehouse) and in BigQuery (a table of the dataset); no quoting, no path.
PREDICTIONS_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")
FEATURES_SUFFIX = "_" + FEATURES_TABLE


def check_predictions_table(name: object) -> str:
    """``name`` if the pipeline may write its predictions there, else ``PredictionsTableError``.

    Several workflows share one warehouse, each with its own output table; a name that is a
    source table or a features table would overwrite another workflow's input.
    """
    if not isinstance(name, str) or not PREDICTIONS_TABLE_NAME.fullmatch(name):
        raise PredictionsTableError(
            f"predictions_table {name!r} is not a table name: use lower-case letters, digits "
            "and underscores, starting with a letter, at most 128 characters"
        )
    if name in SOURCE_TABLES or name == FEATURES_TABLE or name.endswith(FEATURES_SUFFIX):
        raise PredictionsTableError(
            f"predictions_table {name!r} is reserved: it is a source table "
            f"({', '.join(SOURCE_TABLES)}) or a features table (*{FEATURES_SUFFIX})"
        )
    return name


def features_table(predictions_table: str = PREDICTIONS_TABLE) -> str:
    """The features table of one output: its own, so two workflows never share a partition.

    ``predictions`` keeps the historical ``user_features``; any other output ``T`` gets
    ``T_user_features`` (no output may end in ``_user_features``, so no two collide).
    """
    check_predictions_table(predictions_table)
    if predictions_table == PREDICTIONS_TABLE:
        return FEATURES_TABLE
    return predictions_table + FEATURES_SUFFIX


@cache
def predictions_schema() -> pa.Schema:
    """The predictions table's Arrow schema (a function: the features step never imports
    pyarrow, ~0.13 s with numpy, so this module must not)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("target_date", pa.date32()),
            ("user_id", pa.int64()),
            ("content_id", pa.string()),
            ("score", pa.float64()),
            ("model_sha256", pa.string()),
            ("run_id", pa.string()),
            ("run_name", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
        ]
    )

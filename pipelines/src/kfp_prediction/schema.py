"""Source tables, the columns the feature query reads, the features and predictions tables."""

from __future__ import annotations

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
PREDICTIONS_SCHEMA = pa.schema(
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

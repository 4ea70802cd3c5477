"""Target-date window (JST) and the feature query, run for real through DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from kfp_prediction.dates import JST, TargetWindow, parse_target_date
from kfp_prediction.errors import PredictionInputError, TargetDateError
from kfp_prediction.features import (
    MODEL_FEATURES,
    bigquery_user_features_sql,
    build_candidates,
    duckdb_user_features_sql,
)
from kfp_prediction.schema import CATEGORIES
from kfp_prediction.warehouse.local import LocalWarehouse
from sqlglot import exp

UTC_TS = pa.timestamp("us", tz="UTC")


def jst(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=JST)


def write(root: Path, table: str, data: dict) -> None:
    (root / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), root / table / "part-0.parquet")


@pytest.fixture
def boundary_warehouse(tmp_path: Path) -> LocalWarehouse:
    """Users 1..5, each with one page view and one purchase at a chosen instant."""
    events = {
        1: jst(2026, 11, 26, 23, 59, 59),  # last second before the target date: in
        2: jst(2026, 11, 27, 0, 0, 0),  # first second of the target date: out
        3: jst(2026, 10, 30, 0, 0, 0),  # first second of the 28-day window: in
        4: jst(2026, 10, 29, 23, 59, 59),  # last second before the window: out
    }
    users = [1, 2, 3, 4, 5]  # user 5 has no activity at all
    write(
        tmp_path,
        "users",
        {
            "user_id": pa.array(users, pa.int64()),
            "registered_at": pa.array([dt.datetime(2025, 1, 1, tzinfo=dt.UTC)] * 5, UTC_TS),
            "member_rank": ["gold"] * 5,
            "prefecture": ["Tokyo"] * 5,
            "age_band": ["30s"] * 5,
        },
    )
    times = pa.array([events[u].astimezone(dt.UTC) for u in events], UTC_TS)
    write(
        tmp_path,
        "page_views",
        {
            "user_id": pa.array(list(events), pa.int64()),
            "item_id": pa.array([10] * 4, pa.int64()),
            "category": ["tops"] * 4,
            "device": ["app"] * 4,
            "event_time": times,
        },
    )
    write(
        tmp_path,
        "purchases",
        {
            "user_id": pa.array(list(events), pa.int64()),
            "category": ["tops"] * 4,
            "amount": pa.array([1000] * 4, pa.int64()),
            "event_time": times,
        },
    )
    write(
        tmp_path,
        "contents",
        {
            "content_id": ["coupon_tops"],
            "channel": ["coupon"],
            "category": ["tops"],
            "discount_rate": [0.1],
        },
    )
    return LocalWarehouse(tmp_path)


def test_window_is_jst_day_boundaries_in_utc() -> None:
    window = TargetWindow.build("2026-11-27", 28)
    assert window.end_utc == dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC)
    assert window.start_utc == dt.datetime(2026, 10, 29, 15, 0, tzinfo=dt.UTC)
    assert window.last_day == dt.date(2026, 11, 26)


def test_jst_boundary_exactly(boundary_warehouse: LocalWarehouse) -> None:
    users = boundary_warehouse.user_features(TargetWindow.build("2026-11-27", 28))
    by_user = users.set_index("user_id")
    assert by_user["pv_count"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    assert by_user["purchase_count"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    assert by_user["pv_tops"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    # one second before the end of the window
    assert by_user.loc[1, "days_since_last_view"] == pytest.approx(1 / 86400)


def test_users_without_activity_get_a_row(boundary_warehouse: LocalWarehouse) -> None:
    users = boundary_warehouse.user_features(TargetWindow.build("2026-11-27", 28))
    assert sorted(users["user_id"]) == [1, 2, 3, 4, 5]
    quiet = users.set_index("user_id").loc[5]
    assert quiet["pv_count"] == 0 and quiet["purchase_count"] == 0
    assert quiet["days_since_last_view"] == 28.0


@pytest.mark.parametrize(
    "value", [None, "", "2026/11/27", "20261127", "2026-11-31", "2026-11-27T00:00:00", 20261127]
)
def test_bad_target_date_is_named(value: object) -> None:
    with pytest.raises(TargetDateError, match="target_date"):
        parse_target_date(value)


@pytest.mark.parametrize("days", [0, -1, 400, True])
def test_bad_lookback_days(days: int) -> None:
    with pytest.raises(PredictionInputError, match="lookback_days"):
        TargetWindow.build("2026-11-27", days)


def _select_names(sql: str, dialect: str) -> list[str]:
    return [e.alias_or_name for e in sqlglot.parse_one(sql, read=dialect).selects]


def test_one_query_two_dialects() -> None:
    window = TargetWindow.build("2026-11-27", 28)
    bq = bigquery_user_features_sql(window, "my-project.shop")
    duck = duckdb_user_features_sql(window)
    assert _select_names(bq, "bigquery") == _select_names(duck, "duckdb")
    tree = sqlglot.parse_one(bq, read="bigquery")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    names = {
        ".".join(p for p in (t.catalog, t.db, t.name) if p)
        for t in tree.find_all(exp.Table)
        if t.name not in ctes
    }
    assert names == {
        "my-project.shop.users",
        "my-project.shop.page_views",
        "my-project.shop.purchases",
    }
    assert "2026-11-26 15:00:00+00" in bq and "2026-10-29 15:00:00+00" in bq
    assert "COUNTIF(" in bq and "COUNT_IF(" in duck


def test_query_covers_every_category() -> None:
    sql = bigquery_user_features_sql(TargetWindow.build("2026-11-27", 28))
    for category in CATEGORIES:
        assert f"pv_{category}" in sql and f"buy_{category}" in sql


def test_candidates_are_user_major(boundary_warehouse: LocalWarehouse) -> None:
    users = boundary_warehouse.user_features(TargetWindow.build("2026-11-27", 28))
    contents = boundary_warehouse.contents()
    matrix = build_candidates(users, contents)
    assert list(matrix.columns) == list(MODEL_FEATURES)
    assert len(matrix) == len(users) * len(contents)
    active = users.index[users["user_id"] == 1][0]
    assert matrix.loc[active, "category_view_share"] == 1.0
    assert matrix.loc[active, "channel_coupon"] == 1.0

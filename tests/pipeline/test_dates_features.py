"""Target-date window (JST) and the feature query, run for real through DuckDB."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from kfp_prediction.dates import JST, TargetWindow, parse_target_date
from kfp_prediction.errors import PredictionInputError, TargetDateError
from kfp_prediction.features import bigquery_user_features_sql, duckdb_user_features_sql
from kfp_prediction.model import load_verified_model
from kfp_prediction.schema import CATEGORIES, FEATURE_COLUMNS
from kfp_prediction.scoring import MODEL_FEATURES, ScoringModel
from kfp_prediction.warehouse.local import LocalWarehouse
from pipeline_support import Model, build_candidates
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
    users = boundary_warehouse.user_features(TargetWindow.build("2026-11-27", 28)).to_pandas()
    by_user = users.set_index("user_id")
    assert by_user["pv_count"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    assert by_user["purchase_count"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    assert by_user["pv_tops"].to_dict() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0}
    # one second before the end of the window
    assert by_user.loc[1, "days_since_last_view"] == pytest.approx(1 / 86400)


def test_users_without_activity_get_a_row(boundary_warehouse: LocalWarehouse) -> None:
    users = boundary_warehouse.user_features(TargetWindow.build("2026-11-27", 28)).to_pandas()
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
    # Conditional counts are COUNT(IF(...)), uncast: DuckDB's COUNT_IF would keep a 16-byte
    # sum state per user and count, the page-view aggregate's memory at 10M users.
    for sql, dialect in ((bq, "bigquery"), (duck, "duckdb")):
        tree = sqlglot.parse_one(sql, read=dialect)
        assert not list(tree.find_all(exp.CountIf)), dialect
        counts = list(tree.find_all(exp.Count))
        conditional = [c for c in counts if isinstance(c.this, (exp.If, exp.Case))]
        assert len(conditional) == 1 + 2 * len(CATEGORIES), dialect  # app, each category twice
        assert not [c for c in counts if isinstance(c.parent, exp.Cast)], dialect


def test_feature_counts_are_int64_on_duckdb(boundary_warehouse: LocalWarehouse) -> None:
    """Every count reaches the features partition as INT64 (HUGEINT would arrive as double)."""
    reference, _ = boundary_warehouse.materialize_features(TargetWindow.build("2026-11-27", 28))
    schema = pq.read_schema(reference)
    counts = [
        name
        for name in FEATURE_COLUMNS
        if name.startswith(("pv_", "buy_")) or name.endswith("_count")
    ]
    assert len(counts) == 2 + 1 + 2 * len(CATEGORIES)
    assert {name: str(schema.field(name).type) for name in counts} == dict.fromkeys(counts, "int64")


def test_query_covers_every_category() -> None:
    sql = bigquery_user_features_sql(TargetWindow.build("2026-11-27", 28))
    for category in CATEGORIES:
        assert f"pv_{category}" in sql and f"buy_{category}" in sql
    assert _select_names(sql, "bigquery") == list(FEATURE_COLUMNS)  # the features table


GRID_END = dt.datetime(2026, 11, 26, 15, tzinfo=dt.UTC)  # 2026-11-27 00:00 JST


@pytest.fixture
def grid_warehouse(tmp_path: Path) -> LocalWarehouse:
    """Three different users, one with an unknown registration time, and three contents."""
    registered = [dt.datetime(2025, 11, 26, 15, tzinfo=dt.UTC)] * 3 + [None]
    write(
        tmp_path,
        "users",
        {
            "user_id": pa.array([1, 2, 3, 4], pa.int64()),
            "registered_at": pa.array(registered, UTC_TS),
            "member_rank": ["gold", "regular", "platinum", "gold"],
            "prefecture": ["Tokyo"] * 4,
            "age_band": ["30s", "20s", "40s", "30s"],
        },
    )
    view_times = [GRID_END - dt.timedelta(days=d) for d in (1, 2, 3, 5, 6, 7, 8)]
    write(
        tmp_path,
        "page_views",
        {  # user 1: three app views of tops; user 2: four web views of bags; user 3: none
            "user_id": pa.array([1, 1, 1, 2, 2, 2, 2], pa.int64()),
            "item_id": pa.array([10] * 7, pa.int64()),
            "category": ["tops"] * 3 + ["bags"] * 4,
            "device": ["app"] * 3 + ["web"] * 4,
            "event_time": pa.array(view_times, UTC_TS),
        },
    )
    write(
        tmp_path,
        "purchases",
        {
            "user_id": pa.array([1], pa.int64()),
            "category": ["tops"],
            "amount": pa.array([5000], pa.int64()),
            "event_time": pa.array([GRID_END - dt.timedelta(days=4)], UTC_TS),
        },
    )
    write(
        tmp_path,
        "contents",
        {
            "content_id": ["coupon_tops", "newsletter_weekly", "push_bags"],
            "channel": ["coupon", "newsletter", "push"],
            "category": ["tops", "all", "bags"],
            "discount_rate": [0.2, 0.1, 0.4],
        },
    )
    return LocalWarehouse(tmp_path)


def test_candidates_are_user_major(grid_warehouse: LocalWarehouse) -> None:
    users = grid_warehouse.user_features(TargetWindow.build("2026-11-27", 28))
    contents = grid_warehouse.contents()
    n_users, n_contents = len(users), len(contents)
    assert (n_users, n_contents) == (3, 3)
    matrix = build_candidates(users, contents)
    users, contents = users.to_pandas(), contents.to_pandas()
    assert list(matrix.columns) == list(MODEL_FEATURES)
    assert len(matrix) == n_users * n_contents
    # row i*C + k is (users.iloc[i], contents.iloc[k]): user columns repeat, content columns tile
    for i in range(n_users):
        for k in range(n_contents):
            row = matrix.iloc[i * n_contents + k]
            assert row["tenure_days"] == pytest.approx(users["tenure_days"].iloc[i])
            assert row["pv_count"] == users["pv_count"].iloc[i]
            assert row["discount_rate"] == pytest.approx(contents["discount_rate"].iloc[k])
            channel = contents["channel"].iloc[k]
            assert row[f"channel_{channel}"] == 1.0


def user_one_rows_by_hand() -> pd.DataFrame:
    """User 1's three candidate rows, computed from the grid fixture by hand."""
    base = {
        "member_rank_level": 2.0,  # gold
        "age_band_level": 2.0,  # 30s
        "tenure_days": 365.0,
        "pv_count": 3.0,
        "pv_app_share": 1.0,
        "days_since_last_view": 1.0,
        "purchase_count": 1.0,
        "purchase_amount": 5000.0,
        "days_since_last_purchase": 4.0,
    }
    per_content = [  # coupon_tops, newsletter_weekly (all), push_bags
        {"category_view_share": 1.0, "category_purchase_count": 1.0, "discount_rate": 0.2,
         "channel_coupon": 1.0, "channel_newsletter": 0.0, "channel_push": 0.0,
         "push_x_app_share": 0.0, "coupon_x_view_share": 1.0},
        {"category_view_share": 1.0, "category_purchase_count": 1.0, "discount_rate": 0.1,
         "channel_coupon": 0.0, "channel_newsletter": 1.0, "channel_push": 0.0,
         "push_x_app_share": 0.0, "coupon_x_view_share": 0.0},
        {"category_view_share": 0.0, "category_purchase_count": 0.0, "discount_rate": 0.4,
         "channel_coupon": 0.0, "channel_newsletter": 0.0, "channel_push": 1.0,
         "push_x_app_share": 1.0, "coupon_x_view_share": 0.0},
    ]  # fmt: skip
    return pd.DataFrame([{**base, **c} for c in per_content], columns=list(MODEL_FEATURES))


@pytest.mark.parametrize("scorer", ["linear", "predict_proba"])
def test_each_user_gets_their_best_content(
    grid_warehouse: LocalWarehouse,
    model: Model,
    scorer: str,
) -> None:
    trained, _ = load_verified_model(model.uri, model.sha256)
    users = grid_warehouse.user_features(TargetWindow.build("2026-11-27", 28))
    contents = grid_warehouse.contents()
    scoring = ScoringModel.check(trained, contents)
    names = list(scoring.feature_names)
    assert scoring.linear is not None  # the demo model takes the numpy path
    if scorer == "predict_proba":
        scoring = dataclasses.replace(scoring, linear=None)
    best, score = scoring.score(users, contents)

    by_hand = user_one_rows_by_hand()
    i = int(np.flatnonzero(users.column("user_id").to_numpy() == 1)[0])
    rows = build_candidates(users, contents, names).iloc[i * 3 : i * 3 + 3]
    np.testing.assert_allclose(rows.to_numpy(), by_hand[names].to_numpy(), rtol=1e-5)
    proba = trained.predict_proba(by_hand[names])[:, 1]
    assert best[i] == proba.argmax() and score[i] == pytest.approx(proba.max(), rel=1e-5)
    # every user against the model's scores of that user's rows alone (no reshape involved)
    for j in range(len(users)):
        alone = trained.predict_proba(build_candidates(users.slice(j, 1), contents, names))[:, 1]
        assert best[j] == alone.argmax() and score[j] == pytest.approx(alone.max(), rel=1e-5)
    # the app/tops user gets the tops coupon, the web/bags user the bags push
    content_ids = contents.column("content_id").to_numpy(zero_copy_only=False)
    by_user = dict(zip(users.column("user_id").to_pylist(), content_ids[best], strict=True))
    assert by_user[1] == "coupon_tops" and by_user[2] == "push_bags"


def test_user_without_registration_time_gets_no_row(grid_warehouse: LocalWarehouse) -> None:
    """NULL registered_at: not "registered before the target date", on either engine.

    The query handles the NULL in its WHERE clause, not through GREATEST (NULL-propagating
    on BigQuery, NULL-ignoring on DuckDB), so both engines compute the same rows.
    """
    window = TargetWindow.build("2026-11-27", 28)
    users = grid_warehouse.user_features(window).to_pandas()
    assert sorted(users["user_id"]) == [1, 2, 3]
    assert users["tenure_days"].notna().all()
    assert users.set_index("user_id")["tenure_days"].to_dict() == pytest.approx(
        {1: 365.0, 2: 365.0, 3: 365.0}
    )
    bq = sqlglot.parse_one(bigquery_user_features_sql(window), read="bigquery")
    assert not list(bq.find_all(exp.Greatest)) and not list(bq.find_all(exp.Least))
    where = bq.args["where"].this
    assert isinstance(where, exp.And) and isinstance(where.this, exp.Not)
    assert where.this.this.sql("bigquery") == "u.registered_at IS NULL"
    duck = duckdb_user_features_sql(window)
    duck_tree = sqlglot.parse_one(duck, read="duckdb")
    assert not list(duck_tree.find_all(exp.Greatest)) and "EPOCH_US(u.registered_at)" in duck

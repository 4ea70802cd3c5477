"""Deterministic demo data for the local warehouse (an e-commerce fashion site).

    python -m kfp_prediction.demo_data --warehouse var/warehouse --size demo
    python -m kfp_prediction.demo_data --warehouse var/bench --size bench   # 1M users, 20M views
    python -m kfp_prediction.demo_data --warehouse var/scale --users 10000000 \
        --page-views 200000000 --engine duckdb                   # the same shape, in SQL

Events cover the ``--days`` JST days ending with ``--end-date`` (inclusive, default: today in
JST), so target dates up to end-date + 1 have data. The same seed, sizes and end date give
the same tables. Existing source tables in the warehouse are replaced; predictions are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfp_prediction.dates import JST
from kfp_prediction.paths import resolve_local_path
from kfp_prediction.schema import AGE_BANDS, CATEGORIES, MEMBER_RANKS

SIZES = {"demo": (10_000, 200_000), "bench": (1_000_000, 20_000_000)}
PREFECTURES = (
    "Tokyo",
    "Kanagawa",
    "Osaka",
    "Aichi",
    "Saitama",
    "Chiba",
    "Hyogo",
    "Fukuoka",
    "Hokkaido",
    "Kyoto",
)
CHUNK_ROWS = 4_000_000
US = 1_000_000
UTC_TS = pa.timestamp("us", tz="UTC")

CONTENTS = pa.table(
    {
        "content_id": [f"coupon_{c}" for c in CATEGORIES] + ["newsletter_weekly", "push_sale"],
        "channel": ["coupon"] * len(CATEGORIES) + ["newsletter", "push"],
        "category": [*CATEGORIES, "all", "all"],
        "discount_rate": [0.10, 0.15, 0.20, 0.10, 0.05, 0.30, 0.0, 0.10],
    }
)


@dataclass(frozen=True)
class DemoSpec:
    users: int
    page_views: int
    days: int
    end_date: dt.date
    seed: int = 20261127

    @property
    def start_us(self) -> int:
        start = dt.datetime.combine(
            self.end_date - dt.timedelta(days=self.days - 1), dt.time(), tzinfo=JST
        )
        return int(start.timestamp()) * US

    @property
    def end_us(self) -> int:
        end = dt.datetime.combine(self.end_date + dt.timedelta(days=1), dt.time(), tzinfo=JST)
        return int(end.timestamp()) * US


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), pa.int64()).cast(UTC_TS)


def _pick(rng: np.random.Generator, names: tuple[str, ...], n: int, p=None) -> pa.Array:
    codes = rng.choice(len(names), size=n, p=p).astype(np.int32)
    return pa.DictionaryArray.from_arrays(codes, list(names)).cast(pa.string())


def _replace_table(root: Path, table: str) -> Path:
    path = root / table
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path / "part-0.parquet"


def generate(root: str | Path, spec: DemoSpec) -> dict[str, int]:
    """Write users, page_views, purchases and contents under ``root``; return row counts."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n = spec.users
    # Hidden per-user tastes that make the features (and the demo model) meaningful.
    preferred = rng.integers(0, len(CATEGORIES), n)
    activity = rng.lognormal(0.0, 1.0, n) * (rng.random(n) > 0.2)  # 20% inactive users
    app_affinity = rng.beta(2, 2, n)
    registered = spec.start_us - (rng.random(n) * 3 * 365 * 86400 * US).astype(np.int64)
    recent = rng.random(n) < 0.02  # a few sign up during the data period
    registered[recent] = spec.start_us + (
        rng.random(recent.sum()) * (spec.end_us - spec.start_us)
    ).astype(np.int64)
    users = pa.table(
        {
            "user_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "registered_at": _ts(registered),
            "member_rank": _pick(rng, MEMBER_RANKS, n, [0.6, 0.25, 0.12, 0.03]),
            "prefecture": _pick(rng, PREFECTURES, n),
            "age_band": _pick(rng, AGE_BANDS, n, [0.08, 0.3, 0.28, 0.18, 0.1, 0.06]),
        }
    )
    pq.write_table(users, _replace_table(root, "users"))

    weights = activity / activity.sum()
    cdf = np.cumsum(weights)
    span = spec.end_us - spec.start_us

    def events(path: Path, total: int, extra) -> None:
        writer = None
        try:
            for start in range(0, total, CHUNK_ROWS):
                m = min(CHUNK_ROWS, total - start)
                idx = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1]), n - 1)
                own = rng.random(m) < 0.6
                cat = np.where(own, preferred[idx], rng.integers(0, len(CATEGORIES), m))
                cols = {
                    "user_id": pa.array(idx.astype(np.int64) + 1),
                    **extra(idx, m),
                    "category": pa.DictionaryArray.from_arrays(
                        cat.astype(np.int32), list(CATEGORIES)
                    ).cast(pa.string()),
                    "event_time": _ts(
                        np.maximum(
                            spec.start_us + (rng.random(m) * span).astype(np.int64), registered[idx]
                        )
                    ),
                }
                chunk = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(path, chunk.schema, compression="zstd")
                writer.write_table(chunk, row_group_size=1_000_000)
        finally:
            if writer is not None:
                writer.close()

    events(
        _replace_table(root, "page_views"),
        spec.page_views,
        lambda idx, m: {
            "item_id": pa.array(rng.integers(1, 500_000, m, dtype=np.int64)),
            "device": pa.DictionaryArray.from_arrays(
                (rng.random(m) < app_affinity[idx]).astype(np.int32), ["web", "app"]
            ).cast(pa.string()),
        },
    )
    purchases = max(spec.page_views // 40, 1)
    events(
        _replace_table(root, "purchases"),
        purchases,
        lambda idx, m: {"amount": pa.array(rng.integers(20, 400, m, dtype=np.int64) * 50)},
    )
    pq.write_table(CONTENTS, _replace_table(root, "contents"))
    return {
        "users": n,
        "page_views": spec.page_views,
        "purchases": purchases,
        "contents": CONTENTS.num_rows,
    }


# The same shape generated by DuckDB SQL, for sizes where numpy row by row takes too long
# (``--engine duckdb``; benchmarks/bench_scale.py makes 10M users, ~200M page views with it).
# Each value comes from a hash of (row, event, field, seed): deterministic for a seed, and
# every row is independent, so DuckDB generates and writes in parallel. Distributions follow
# ``generate``: 20% inactive users, log-normal activity, a preferred category for 60% of the
# events, per-user app affinity (the mean of two uniforms instead of a beta(2, 2)). Event
# tables are written in event-time order, as a warehouse appends them: each user's events are
# spread over the whole file, not clustered, which is what the feature query's aggregation
# meets in production (clustered rows made it ~1.6x faster at 1M users).
_SQL_USERS = """
CREATE TEMP TABLE gen_users AS
WITH base AS (
  SELECT i AS user_id,
    u01(i, 0, 1) AS r_rank, u01(i, 0, 2) AS r_pref, u01(i, 0, 3) AS r_age,
    CAST(floor(u01(i, 0, 4) * 6) AS INTEGER) AS preferred,
    CASE WHEN u01(i, 0, 5) > 0.2
      THEN exp(sqrt(-2 * ln(greatest(u01(i, 0, 6), 1e-300))) * cos(2 * pi() * u01(i, 0, 7)))
      ELSE 0 END AS activity,
    (u01(i, 0, 8) + u01(i, 0, 9)) / 2 AS app_affinity,
    CASE WHEN u01(i, 0, 10) < 0.02
      THEN {start_us} + CAST(floor(u01(i, 0, 11) * {span_us}) AS BIGINT)
      ELSE {start_us} - CAST(floor(u01(i, 0, 12) * {three_years_us}) AS BIGINT) END AS registered_us
  FROM range(1, {users} + 1) AS t(i)
)
SELECT *,
  CAST(floor(activity * {views_per_user} / {mean_activity} + u01(user_id, 0, 13)) AS BIGINT)
    AS n_views,
  CAST(floor(activity * {buys_per_user} / {mean_activity} + u01(user_id, 0, 14)) AS BIGINT)
    AS n_buys
FROM base
"""
EVENT_TABLES = ("page_views", "purchases")
_SQL_TABLES = {
    "users": """
SELECT user_id, make_timestamp(registered_us)::TIMESTAMPTZ AS registered_at,
  CASE WHEN r_rank < 0.6 THEN 'regular' WHEN r_rank < 0.85 THEN 'silver'
       WHEN r_rank < 0.97 THEN 'gold' ELSE 'platinum' END AS member_rank,
  {prefectures}[1 + CAST(floor(r_pref * {n_prefectures}) AS INTEGER)] AS prefecture,
  CASE WHEN r_age < 0.08 THEN '10s' WHEN r_age < 0.38 THEN '20s' WHEN r_age < 0.66 THEN '30s'
       WHEN r_age < 0.84 THEN '40s' WHEN r_age < 0.94 THEN '50s' ELSE '60s+' END AS age_band
FROM gen_users
""",
    "page_views": """
SELECT user_id,
  1 + CAST(floor(u01(user_id, k, 21) * 499999) AS BIGINT) AS item_id,
  {categories}[1 + CASE WHEN u01(user_id, k, 22) < 0.6 THEN preferred
                        ELSE CAST(floor(u01(user_id, k, 23) * 6) AS INTEGER) END] AS category,
  CASE WHEN u01(user_id, k, 24) < app_affinity THEN 'app' ELSE 'web' END AS device,
  make_timestamp(greatest({start_us} + CAST(floor(u01(user_id, k, 25) * {span_us}) AS BIGINT),
                          registered_us))::TIMESTAMPTZ AS event_time
FROM (SELECT *, unnest(range(n_views)) AS k FROM gen_users WHERE n_views > 0)
""",
    "purchases": """
SELECT user_id,
  {categories}[1 + CASE WHEN u01(user_id, -k - 1, 22) < 0.6 THEN preferred
                        ELSE CAST(floor(u01(user_id, -k - 1, 23) * 6) AS INTEGER) END] AS category,
  (20 + CAST(floor(u01(user_id, -k - 1, 26) * 380) AS BIGINT)) * 50 AS amount,
  make_timestamp(greatest({start_us} + CAST(floor(u01(user_id, -k - 1, 25) * {span_us}) AS BIGINT),
                          registered_us))::TIMESTAMPTZ AS event_time
FROM (SELECT *, unnest(range(n_buys)) AS k FROM gen_users WHERE n_buys > 0)
""",
}


def generate_with_duckdb(root: str | Path, spec: DemoSpec, memory_limit: str = "4GB") -> dict:
    """``generate``'s tables, made by DuckDB SQL in parallel; returns row counts."""
    import duckdb

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"CREATE MACRO u01(a, b, c) AS hash(a, b, c, {int(spec.seed)}) / 18446744073709551616.0"
    )
    n = spec.users
    values = {
        "users": n,
        "start_us": spec.start_us,
        "span_us": spec.end_us - spec.start_us,
        "three_years_us": 3 * 365 * 86400 * US,
        "views_per_user": spec.page_views / n,
        "buys_per_user": max(spec.page_views // 40, 1) / n,
        "mean_activity": 0.8 * float(np.exp(0.5)),  # E[lognormal(0, 1)] of the 80% active
        "categories": "[" + ", ".join(f"'{c}'" for c in CATEGORIES) + "]",
        "prefectures": "[" + ", ".join(f"'{p}'" for p in PREFECTURES) + "]",
        "n_prefectures": len(PREFECTURES),
    }
    spill = root / ".generate-spill"  # the event-time sort of ~200M rows spills to disk
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute(_SQL_USERS.format(**values))
    counts = {}
    try:
        for table, sql in _SQL_TABLES.items():
            path = _replace_table(root, table)
            order = "ORDER BY event_time" if table in EVENT_TABLES else ""
            copy = f"COPY ({sql.format(**values)}{order}) TO '{path}' "
            copy += "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"
            counts[table] = int(con.execute(copy).fetchone()[0])
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    pq.write_table(CONTENTS, _replace_table(root, "contents"))
    counts["contents"] = CONTENTS.num_rows
    return counts


def today_jst() -> dt.date:
    return dt.datetime.now(JST).date()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default="var/warehouse", help="local warehouse directory")
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--users", type=int, help="override the number of users")
    parser.add_argument("--page-views", type=int, help="override the number of page views")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument(
        "--end-date",
        type=dt.date.fromisoformat,
        default=None,
        help="last JST day with events (default: today in JST)",
    )
    parser.add_argument("--seed", type=int, default=DemoSpec.seed)
    parser.add_argument(
        "--engine",
        choices=("numpy", "duckdb"),
        default="numpy",
        help="numpy: the exact demo data; duckdb: the same shape in parallel SQL (large sizes)",
    )
    args = parser.parse_args(argv)
    users, views = SIZES[args.size]
    spec = DemoSpec(
        users=args.users or users,
        page_views=args.page_views or views,
        days=args.days,
        end_date=args.end_date or today_jst(),
        seed=args.seed,
    )
    root = resolve_local_path(args.warehouse)
    counts = (generate_with_duckdb if args.engine == "duckdb" else generate)(root, spec)
    print(
        f"demo data in {root} (JST days {spec.end_date - dt.timedelta(days=spec.days - 1)}"
        f" .. {spec.end_date}): " + ", ".join(f"{k}={v}" for k, v in counts.items())
    )


if __name__ == "__main__":
    main()

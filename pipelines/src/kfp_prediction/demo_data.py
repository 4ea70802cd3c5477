"""Deterministic demo data for the local warehouse (an e-commerce fashion site).

    python -m kfp_prediction.demo_data --warehouse var/warehouse --size demo
    python -m kfp_prediction.demo_data --warehouse var/bench --size bench   # 1M users, 20M views

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
    counts = generate(root, spec)
    print(
        f"demo data in {root} (JST days {spec.end_date - dt.timedelta(days=spec.days - 1)}"
        f" .. {spec.end_date}): " + ", ".join(f"{k}={v}" for k, v in counts.items())
    )


if __name__ == "__main__":
    main()

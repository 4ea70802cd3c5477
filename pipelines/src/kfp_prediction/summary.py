"""Summarise one predictions partition of the local warehouse (for demos and e2e checks).

    python -m kfp_prediction.summary --target-date 2026-11-27 [--warehouse var/warehouse]
        [--table predictions] [--json]

Reads ``<warehouse>/<table>/YYYY-MM-DD.parquet`` with pyarrow only, so
any environment with pyarrow can use ``summarize_partition``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfp_prediction.errors import PredictionsTableError
from kfp_prediction.paths import resolve_local_path
from kfp_prediction.schema import PREDICTIONS_TABLE, check_predictions_table
from kfp_prediction.warehouse.local import partition_path


def summarize_partition(
    warehouse: str, target_date: str, top: int = 5, table: str = PREDICTIONS_TABLE
) -> dict[str, Any]:
    """Row count, distinct users, most chosen contents, score range, model and run ids."""
    day = dt.date.fromisoformat(target_date)
    path = partition_path(resolve_local_path(warehouse), day, check_predictions_table(table))
    if not path.exists():
        raise FileNotFoundError(f"no {table} for target_date {target_date} at {path}")
    name, table = table, pq.read_table(path)
    counts = pc.value_counts(table["content_id"]).to_pylist()
    counts.sort(key=lambda item: (-item["counts"], item["values"]))
    score = table["score"]
    empty = table.num_rows == 0
    return {
        "target_date": target_date,
        "table": name,
        "path": str(path),
        "rows": table.num_rows,
        "users": pc.count_distinct(table["user_id"]).as_py(),
        "top_contents": [(item["values"], item["counts"]) for item in counts[:top]],
        "score_min": None if empty else pc.min(score).as_py(),
        "score_mean": None if empty else pc.mean(score).as_py(),
        "score_max": None if empty else pc.max(score).as_py(),
        "model_sha256": sorted(pc.unique(table["model_sha256"]).to_pylist()),
        "run_ids": sorted(pc.unique(table["run_id"]).to_pylist()),
        "run_names": sorted(pc.unique(table["run_name"]).to_pylist()),
        "created_at": None if empty else str(pc.max(table["created_at"]).as_py()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-date", required=True)
    parser.add_argument("--warehouse", default="var/warehouse")
    parser.add_argument("--table", default=PREDICTIONS_TABLE, help="output table")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        summary = summarize_partition(args.warehouse, args.target_date, table=args.table)
    except (FileNotFoundError, PredictionsTableError) as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{summary['table']} for {summary['target_date']}: {summary['rows']:,} rows, "
        f"{summary['users']:,} users ({summary['path']})"
    )
    print(
        f"  score min/mean/max: {summary['score_min']:.3f} / {summary['score_mean']:.3f} / "
        f"{summary['score_max']:.3f}"
    )
    for content, count in summary["top_contents"]:
        print(f"  {content:<24}{count:>10,}")
    print(
        f"  model sha256 {', '.join(summary['model_sha256'])}; run {', '.join(summary['run_ids'])}"
        f" ({', '.join(summary['run_names'])})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

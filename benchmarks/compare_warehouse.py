"""Warehouse chores of ``benchmarks/compare.py``, run with the pipeline environment.

    .venv-pipeline/bin/python benchmarks/compare_warehouse.py withhold DAY WAREHOUSE...
    .venv-pipeline/bin/python benchmarks/compare_warehouse.py restore WAREHOUSE...
    .venv-pipeline/bin/python benchmarks/compare_warehouse.py partitions WAREHOUSE

``withhold`` is the injected failure: the page views of JST day DAY have not arrived yet
(late data), so a run for DAY + 1 fails in its features step's source check; ``restore``
brings them back. ``partitions`` prints, as JSON, each predictions partition with its rows,
its ``target_date`` values and the runs that wrote it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kfp_prediction.dates import JST

HELD = "page_views.withheld"


def withhold(day: dt.date, warehouse: Path) -> int:
    """Move the page views aside and write them back without JST day ``day``."""
    source, held = warehouse / "page_views", warehouse / HELD
    if held.exists():
        raise SystemExit(f"{held} exists: restore first")
    source.rename(held)
    source.mkdir()
    start = dt.datetime.combine(day, dt.time(), tzinfo=JST)
    kept = 0
    for path in sorted(held.glob("*.parquet")):
        table = pq.read_table(path)
        times = table["event_time"]
        late = pc.and_(
            pc.greater_equal(times, pa.scalar(start, type=times.type)),
            pc.less(times, pa.scalar(start + dt.timedelta(days=1), type=times.type)),
        )
        remaining = table.filter(pc.invert(late))
        pq.write_table(remaining, source / path.name)
        kept += remaining.num_rows
    return kept


def restore(warehouse: Path) -> None:
    held = warehouse / HELD
    if held.exists():
        shutil.rmtree(warehouse / "page_views")
        held.rename(warehouse / "page_views")


def partitions(warehouse: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((warehouse / "predictions").glob("*.parquet")):
        table = pq.read_table(path, columns=["target_date", "run_id"])
        found[path.stem] = {
            "rows": table.num_rows,
            "target_dates": sorted({d.isoformat() for d in table["target_date"].to_pylist()}),
            "run_ids": sorted(set(table["run_id"].to_pylist())),
        }
    return found


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "withhold":
        day = dt.date.fromisoformat(args[0])
        print(json.dumps({w: withhold(day, Path(w)) for w in args[1:]}))
    elif command == "restore":
        for w in args:
            restore(Path(w))
    elif command == "partitions":
        print(json.dumps(partitions(Path(args[0]))))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

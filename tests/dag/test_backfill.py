"""Backfills with the real ``airflow backfill create``: which runs, which JST target dates.

``--from-date``/``--to-date`` are instants (a bare date means 00:00 UTC), and a
run's target date is the JST date of its logical date. Asking for whole JST
days A..B therefore gives exactly one run per target date A..B, while bare
dates shift the range by one day. The README documents the JST form.
"""

from __future__ import annotations

import json
import re

from prediction_app.target_date import jst_ds

LOGICAL_DATE = re.compile(r"^\|\s*(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[+-]\d\d:\d\d)\s*\|", re.M)


def _dry_run(airflow_env, start: str, end: str) -> list[str]:
    proc = airflow_env.run(
        "backfill", "create", "--dag-id", "daily_prediction",
        "--from-date", start, "--to-date", end, "--dry-run",
    )  # fmt: skip
    return [jst_ds(m) for m in LOGICAL_DATE.findall(proc.stdout)]


def test_bare_dates_are_utc_and_shift_the_target_dates(airflow_env):
    # 2026-11-01 00:00 UTC .. 2026-11-03 00:00 UTC holds the runs of Nov 2 and Nov 3 JST.
    assert _dry_run(airflow_env, "2026-11-01", "2026-11-03") == ["2026-11-02", "2026-11-03"]


def test_backfill_of_jst_days_creates_one_run_per_target_date(airflow_env):
    start, end = "2026-10-30T00:00:00+09:00", "2026-11-01T23:59:59+09:00"
    expected = ["2026-10-30", "2026-10-31", "2026-11-01"]  # across a month boundary
    assert _dry_run(airflow_env, start, end) == expected

    airflow_env.run(
        "backfill", "create", "--dag-id", "daily_prediction",
        "--from-date", start, "--to-date", end, "--max-active-runs", "3",
    )  # fmt: skip
    runs = json.loads(
        airflow_env.run(
            "dags", "list-runs", "daily_prediction", "--output", "json",
            "--start-date", "2026-10-01", "--end-date", "2026-11-30",
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    backfill_runs = [r for r in runs if r["run_id"].startswith("backfill__")]
    assert sorted(jst_ds(r["logical_date"]) for r in backfill_runs) == expected
    assert all(r["logical_date"].endswith(("21:00:00+00:00", "21:00:00Z")) for r in backfill_runs)

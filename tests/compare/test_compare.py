"""``benchmarks/compare.py`` at the demo data size: the table's key facts hold.

It runs both KFP-only variants with kfp.local and the real DAG through real Airflow over
three target dates (a few minutes), so it runs once per session and each test reads the
facts it wrote. Needs Debian's ``faketime``: missing, the tests are skipped, and fail under CI
(``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
D0, D1, D2, D3 = "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("faketime") is None:
        if os.environ.get("CI"):
            pytest.fail("faketime is missing (apt-get install -y faketime; .ci/run does)")
        pytest.skip("faketime is not installed (apt-get install -y faketime)")
    work = tmp_path_factory.mktemp("compare")
    facts = work / "facts.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--first-date", D1,
         "--work-dir", str(work / "run"), "--json", str(facts)],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(facts.read_text())
    data["table"] = result.stdout
    return data


def runs(facts: dict, way: str) -> dict[str, dict]:
    return {r["label"]: r for r in facts["ways"][way]["runs"]}


def test_naive_three_runs_wrote_one_partition_the_compile_day(compared):
    naive = runs(compared, "naive")
    assert compared["naive_compiled_dates"] == [D0]
    assert [naive[d]["wrote"] for d in ("D1", "D2", "D3")] == [[D0], [D0], [D0]]
    assert compared["ways"]["naive"]["partitions_after_d3"] == [D0]
    assert all(naive[d]["state"] == "SUCCEEDED" for d in naive)  # the missing data went unnoticed


def test_ours_wrote_each_jst_date_and_the_rerun_filled_the_gap(compared):
    ours = runs(compared, "ours")
    assert [ours[d]["wrote"] for d in ("D1", "D2", "D3")] == [[D1], [], [D3]]
    assert ours["D2"]["state"] == "failed" and ours["D2"]["attempts"] == 4  # 3 retries
    assert ours["rerun D2"]["wrote"] == [D2]
    partitions = compared["ways"]["ours"]["partitions"]
    assert sorted(partitions) == [D1, D2, D3]
    for date, partition in partitions.items():
        assert partition["target_dates"] == [date] and partition["rows"] > 0
        assert len(partition["run_ids"]) == 1  # replaced, never appended


def test_placeholder_variant_wrote_run_dates_but_cannot_rerun_a_past_one(compared):
    placeholder = runs(compared, "placeholder")
    assert [placeholder[d]["wrote"] for d in ("D1", "D2", "D3")] == [[D1], [], [D3]]
    assert placeholder["D2"]["attempts"] == 4  # set_retry(3) inside one run
    # The rerun on D3 takes its date from its create time: D3 again, D2 stays missing.
    assert placeholder["rerun D2"]["wrote"] == [D3]
    assert sorted(compared["ways"]["placeholder"]["partitions"]) == [D1, D3]


def test_ours_one_slack_message_per_failed_try_naming_the_component(compared):
    messages = compared["ways"]["ours"]["slack"]
    tries = [m for m in messages if m["kind"] == "failed try"]
    assert [m["run"] for m in tries] == ["D2"] * 4
    assert [m["first_line"].rsplit("(", 1)[1] for m in tries] == [
        "try 1 of 4)", "try 2 of 4)", "try 3 of 4)", "try 4 of 4)",
    ]  # fmt: skip
    for m in tries:
        assert m["names_failed_component"] and m["names_target_date"] and m["run_link"]
    assert [m["kind"] for m in messages if m not in tries] == ["run summary"]
    assert all(m["run"] == "D2" for m in messages)  # nothing on success


def test_kfp_only_one_slack_message_per_pipeline_exit(compared):
    for way in ("naive", "placeholder"):
        facts = compared["ways"][way]
        assert facts["slack_count"] == len(facts["runs"]) == 4
        assert [m["run"] for m in facts["slack"]] == ["D1", "D2", "D3", "rerun D2"]
    (failure,) = [m for m in compared["ways"]["placeholder"]["slack"] if m["failure"]]
    assert failure["run"] == "D2" and failure["names_target_date"]
    assert not failure["names_failed_component"] and not failure["names_try"]
    assert not failure["run_link"]
    assert not any(m["failure"] for m in compared["ways"]["naive"]["slack"])


def test_the_webhook_secret_shows_in_kfp_only_runs_only(compared):
    assert compared["ways"]["ours"]["secret_files"] == []
    for way in ("naive", "placeholder"):
        assert compared["ways"][way]["secret_files"]


def test_backfill_dry_run_plans_the_three_dates(compared):
    assert compared["backfill"]["dry_run_target_dates"] == [D1, D2, D3]


def test_the_table_has_one_column_per_way_and_says_how_the_clock_was_set(compared):
    table = compared["table"]
    header = table.splitlines()[0]
    for title in ("KFP-only, naive", "KFP-only, placeholder", "ours (Airflow + kfp-bridge)"):
        assert title in header
    assert "faketime" in table and "fed explicitly" in table
    assert f"Produced {compared['produced_at']}" in table
    for row in ("partitions after D1..D3", "Slack messages", "backfill D1..D3", "rerun one date"):
        assert f"| {row}" in table

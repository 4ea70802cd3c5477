"""Target-date arithmetic: the JST date of a logical date (pure functions)."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from prediction_app.target_date import (
    MACROS,
    jst_ds,
    jst_ds_nodash,
    kfp_run_key,
    local_ds,
    local_ds_nodash,
    target_date,
)

UTC = dt.UTC


@pytest.mark.parametrize(
    ("logical_date", "expected"),
    [
        # The 06:00 JST run of D has logical date D-1 21:00 UTC.
        (pendulum.datetime(2026, 11, 26, 21, tz="UTC"), "2026-11-27"),
        (pendulum.datetime(2026, 11, 30, 21, tz="UTC"), "2026-12-01"),  # month boundary
        (pendulum.datetime(2026, 12, 31, 21, tz="UTC"), "2027-01-01"),  # year boundary
        (pendulum.datetime(2028, 2, 28, 21, tz="UTC"), "2028-02-29"),  # leap day
        (dt.datetime(2026, 11, 26, 14, 59, 59, tzinfo=UTC), "2026-11-26"),  # 23:59:59 JST
        (dt.datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC), "2026-11-27"),  # 00:00:00 JST
        (pendulum.datetime(2026, 11, 27, 6, tz="Asia/Tokyo"), "2026-11-27"),
        ("2026-12-31T21:00:00+00:00", "2027-01-01"),
        (dt.datetime(2026, 12, 31, 21, 0), "2027-01-01"),  # naive counts as UTC
    ],
)
def test_jst_ds(logical_date, expected):
    assert jst_ds(logical_date) == expected
    assert jst_ds_nodash(logical_date) == expected.replace("-", "")


def test_local_ds_other_zone():
    moment = pendulum.datetime(2026, 11, 26, 21, tz="UTC")
    assert local_ds(moment, "UTC") == "2026-11-26"
    assert local_ds(moment, "America/Los_Angeles") == "2026-11-26"
    assert local_ds_nodash(moment, "Asia/Tokyo") == "20261127"


def test_rejects_dates_without_time_zone_meaning():
    with pytest.raises(TypeError, match="logical date"):
        jst_ds(dt.date(2026, 11, 27))
    with pytest.raises(ValueError, match="no logical date"):
        jst_ds(None)


def test_target_date_of_a_run_falls_back_to_run_after():
    class Run:
        logical_date = None
        run_after = pendulum.datetime(2026, 12, 31, 21, tz="UTC")

    assert target_date(Run()) == "2027-01-01"
    # the JSON form a deadline callback gets, and what a timetable has
    assert target_date({"logical_date": "2026-11-26T21:00:00Z", "run_after": None}) == "2026-11-27"
    assert target_date({"logical_date": None, "run_after": "2026-11-26T15:00:00Z"}) == "2026-11-27"
    with pytest.raises(ValueError, match="neither a logical date nor a run_after"):
        target_date({})


@pytest.mark.parametrize(
    ("dag_run", "key"),
    [
        # the 06:00 JST run of 2026-12-04 has logical date 2026-12-03 21:00 UTC
        ({"logical_date": "2026-12-03T21:00:00+00:00", "run_type": "scheduled"}, "2026-12-04"),
        ({"logical_date": "2026-10-30T21:00:00+00:00", "run_type": "backfill"}, "2026-10-31"),
        (
            {"logical_date": "2026-12-04T05:30:05+00:00", "run_type": "manual"},
            "2026-12-04__manual-143005",
        ),
        (
            {"logical_date": "2026-12-04T05:30:05.250000+00:00", "run_type": "manual"},
            "2026-12-04__manual-143005250000",
        ),
    ],
)
def test_kfp_run_key_says_the_target_date(dag_run, key):
    assert kfp_run_key(dag_run) == key
    assert MACROS["kfp_run_key"] is kfp_run_key


def test_kfp_run_key_is_unique_and_deterministic_per_run():
    """Two manual runs for one target date differ; the same run always gets the same key."""
    after = pendulum.datetime(2026, 12, 4, 1, tz="UTC")
    a = {"logical_date": None, "run_after": after, "run_type": "manual", "run_id": "manual__a"}
    b = {**a, "run_id": "manual__b"}
    assert kfp_run_key(a) == kfp_run_key(dict(a)) != kfp_run_key(b)
    assert kfp_run_key(a).startswith("2026-12-04__manual-") and len(kfp_run_key(a)) <= 35
    scheduled = {
        "logical_date": pendulum.datetime(2026, 12, 3, 21, tz="UTC"),
        "run_type": "scheduled",
    }
    assert kfp_run_key(scheduled) != kfp_run_key({**scheduled, "run_type": "manual"})

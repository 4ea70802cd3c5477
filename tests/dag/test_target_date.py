"""Target-date arithmetic: the JST date of a logical date (pure functions)."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from prediction_app.target_date import (
    jst_ds,
    jst_ds_nodash,
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

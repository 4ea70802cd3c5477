"""The stand-in's readings of upstream code that no client call shows directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kfp_bridge.testing.kfp_api import cron, listing, wire


def test_kfp_cron_has_a_seconds_field_and_five_fields_drop_the_weekday():
    """robfig/cron v1.2.0 ``cron.Parse`` (go.mod of kubeflow/pipelines)."""
    start = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
    assert cron.parse("0 0 21 * * *").next(start) == datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    # "0 6 * * *" is second 0, minute 6, every hour: not 06:00 daily
    assert cron.parse("0 6 * * *").next(start) == datetime(2026, 11, 26, 20, 6, tzinfo=UTC)
    assert cron.parse("@every 90m").next(start) == datetime(2026, 11, 26, 21, 30, tzinfo=UTC)
    with pytest.raises(cron.CronError, match="Expected 5 to 6 fields"):
        cron.parse("CRON_TZ=Asia/Tokyo 0 0 6 * * *")
    with pytest.raises(cron.CronError, match="above maximum"):
        cron.parse("0 60 * * * *")


def test_filter_second_decode():
    """server/list_request_util.go parseAPIFilter: url.QueryUnescape on the decoded value."""
    assert listing.query_unescape("daily+hourly") == "daily hourly"
    assert listing.query_unescape("a%2Bb") == "a+b"
    assert listing.query_unescape("日次 run") == "日次 run"
    with pytest.raises(listing.ListError, match='invalid URL escape "%"'):
        listing.query_unescape("100%")


def test_wire_leaves_zero_values_out_and_refuses_unknown_fields():
    run = wire.decode(
        "V2beta1Run",
        {
            "display_name": "x",
            "description": "",
            "state": "RUNTIME_STATE_UNSPECIFIED",
            "finished_at": "1970-01-01T00:00:00Z",
            "state_history": [],
        },
    )
    assert wire.encode(run, "V2beta1Run") == {
        "display_name": "x",
        "finished_at": "1970-01-01T00:00:00Z",  # a set Timestamp message is kept
    }
    with pytest.raises(wire.WireError, match='unknown field "colour"'):
        wire.decode("V2beta1Experiment", {"display_name": "x", "colour": "red"})
    with pytest.raises(wire.WireError, match="enum"):
        wire.decode("V2beta1Run", {"state": "DONE"})

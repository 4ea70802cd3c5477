"""Target date and lookback window, in Asia/Tokyo business days.

The run for target date D uses events in ``[D - lookback_days, D)`` JST: an event at
23:59:59 JST on D-1 is in, one at 00:00:00 JST on D is out. Event times are stored in UTC,
so the window is computed here once as two UTC instants and handed to the SQL as literals.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from kfp_prediction.errors import LookbackDaysError, TargetDateError

JST = ZoneInfo("Asia/Tokyo")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_LOOKBACK_DAYS = 366


def parse_target_date(value: object) -> dt.date:
    """Parse ``target_date`` strictly as YYYY-MM-DD (no times, no time zones)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TargetDateError("target_date is required (YYYY-MM-DD, the JST business date)")
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise TargetDateError(f"target_date must be YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise TargetDateError(f"target_date {value!r} is not a calendar date: {exc}") from None


@dataclass(frozen=True)
class TargetWindow:
    """The JST target date and its lookback window as UTC instants (start inclusive)."""

    target_date: dt.date
    lookback_days: int

    @classmethod
    def build(cls, target_date: object, lookback_days: int) -> TargetWindow:
        date = parse_target_date(target_date)
        if isinstance(lookback_days, bool) or not isinstance(lookback_days, int):
            raise LookbackDaysError(f"lookback_days must be an integer, got {lookback_days!r}")
        if not 1 <= lookback_days <= MAX_LOOKBACK_DAYS:
            raise LookbackDaysError(
                f"lookback_days must be between 1 and {MAX_LOOKBACK_DAYS}, got {lookback_days}"
            )
        return cls(date, lookback_days)

    @property
    def end_utc(self) -> dt.datetime:
        """Start of the target date in JST, as UTC (exclusive end of the window)."""
        start_jst = dt.datetime.combine(self.target_date, dt.time(), tzinfo=JST)
        return start_jst.astimezone(dt.UTC)

    @property
    def start_utc(self) -> dt.datetime:
        return self.end_utc - dt.timedelta(days=self.lookback_days)

    @property
    def last_day_start_utc(self) -> dt.datetime:
        """Start of the JST day before the target date (the freshest day the run needs)."""
        return self.end_utc - dt.timedelta(days=1)

    @property
    def last_day(self) -> dt.date:
        return self.target_date - dt.timedelta(days=1)


def jst_date_of_run_time(scheduled_time_utc: str, create_time_utc: str = "") -> str:
    """The JST date of a run's scheduled time, else of its create time (KFP-only variant).

    The values are what KFP substitutes for ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``
    and ``dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER``: RFC 3339 UTC such as
    ``2026-11-26T21:00:00Z`` on backend 2.17.0, an empty string on 2.16, the placeholder itself
    (unresolved) on older backends. Only a time with a zone is accepted: a bare date or a local
    time would silently be read in the wrong zone.
    """
    seen = []
    for value in (scheduled_time_utc, create_time_utc):
        text = (value or "").strip()
        seen.append(text)
        try:
            instant = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            continue
        if instant.tzinfo is not None:
            return instant.astimezone(JST).date().isoformat()
    raise TargetDateError(
        f"no run time to take the target date from: schedule time {seen[0]!r}, create time "
        f"{seen[1]!r} (KFP resolves these placeholders from backend 2.17.0 on; 2.16 leaves "
        "them empty, older backends pass them through unresolved)"
    )

"""Recurring-run cron specs as the real KFP reads them: ``robfig/cron`` v1.2.0 ``cron.Parse``.

The API server validates ``trigger.cron_schedule.cron`` with ``cron.Parse``
(``backend/src/apiserver/server/api_converter.go`` ``toModelJob``) and the
ScheduledWorkflow controller computes the next run with the same parser
(``backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go``), in the
controller's time zone (``CRON_SCHEDULE_TIMEZONE``, ``util/const.go`` ``GetLocation``).
``go.mod`` pins ``github.com/robfig/cron v1.2.0`` at HEAD and at 2.5.0.

v1.2.0's default parser is ``Second | Minute | Hour | Dom | Month | DowOptional |
Descriptor`` (``parser.go``): six fields with a leading **seconds** field; five
fields are accepted too, but then the *day-of-week* field is the one left out,
so ``"0 6 * * *"`` means second 0, minute 6 of every hour. There is no
``TZ=``/``CRON_TZ=`` prefix in v1.2.0. Descriptors: ``@yearly``, ``@annually``,
``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``, ``@every <Go duration>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_BOUNDS = {
    "second": (0, 59, None),
    "minute": (0, 59, None),
    "hour": (0, 23, None),
    "dom": (1, 31, None),
    "month": (
        1,
        12,
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    ),
    "dow": (0, 6, ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
}
_ORDER = ("second", "minute", "hour", "dom", "month", "dow")
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


class CronError(ValueError):
    """What ``cron.Parse`` answers for a spec it refuses."""


@dataclass(frozen=True)
class Schedule:
    fields: dict[str, frozenset[int]] | None = None
    star: frozenset[str] = frozenset()
    every: timedelta | None = None

    def next(self, after: datetime) -> datetime:
        """The first activation strictly after ``after`` (in ``after``'s time zone)."""
        if self.every is not None:
            return after.replace(microsecond=0) + self.every
        assert self.fields is not None
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + 5
        f = self.fields
        while t.year <= limit:
            if t.month not in f["month"]:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(
                    day=1
                )
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in f["hour"]:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in f["minute"]:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in f["second"]:
                t += timedelta(seconds=1)
                continue
            return t
        raise CronError("no activation within five years")

    def _day_matches(self, t: datetime) -> bool:
        """robfig's ``dayMatches``: AND when either day field is ``*``, else OR."""
        dom = t.day in self.fields["dom"]
        dow = (t.isoweekday() % 7) in self.fields["dow"]
        if "dom" in self.star or "dow" in self.star:
            return dom and dow
        return dom or dow


def parse(spec: str) -> Schedule:
    """``cron.Parse`` of robfig/cron v1.2.0, with its error texts."""
    if not spec:
        raise CronError("Empty spec string")
    if spec.startswith("@"):
        if spec.startswith("@every "):
            return Schedule(every=_every(spec))
        if spec not in _DESCRIPTORS:
            raise CronError(f"Unrecognized descriptor: {spec}")
        spec = _DESCRIPTORS[spec]
    parts = spec.split()
    if not 5 <= len(parts) <= 6:
        raise CronError(f"Expected 5 to 6 fields, found {len(parts)}: {spec}")
    if len(parts) == 5:
        parts.append("*")  # DowOptional: the *last* field defaults, not the first
    fields: dict[str, frozenset[int]] = {}
    star = set()
    for name, text in zip(_ORDER, parts, strict=True):
        values, is_star = _field(text, *_BOUNDS[name])
        fields[name] = values
        if is_star:
            star.add(name)
    return Schedule(fields=fields, star=frozenset(star))


def _every(spec: str) -> timedelta:
    text = spec[len("@every ") :]
    if not _GO_DURATION.match(text):
        raise CronError(f'Failed to parse duration {spec}: time: invalid duration "{text}"')
    seconds = sum(
        float(n) * _GO_UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    )
    return timedelta(seconds=max(1, int(seconds)))  # Every(): at least 1 s, whole seconds


def _field(text: str, low: int, high: int, names: list[str] | None) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    is_star = False
    for expr in filter(None, text.split(",")):
        range_step = expr.split("/")
        low_high = range_step[0].split("-")
        if low_high[0] in ("*", "?"):
            start, end = low, high
            is_star = True
        else:
            start = _int_or_name(low_high[0], names)
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                end = _int_or_name(low_high[1], names)
            else:
                raise CronError(f"Too many hyphens: {expr}")
        if len(range_step) == 1:
            step = 1
        elif len(range_step) == 2:
            step = _int(range_step[1])
            if len(low_high) == 1 and low_high[0] not in ("*", "?"):
                end = high  # "N/step" means "N-max/step"
        else:
            raise CronError(f"Too many slashes: {expr}")
        if start < low:
            raise CronError(f"Beginning of range ({start}) below minimum ({low}): {expr}")
        if end > high:
            raise CronError(f"End of range ({end}) above maximum ({high}): {expr}")
        if start > end:
            raise CronError(f"Beginning of range ({start}) beyond end of range ({end}): {expr}")
        if step == 0:
            raise CronError(f"Step of range should be a positive number: {expr}")
        values.update(range(start, end + 1, step))
    return frozenset(values), is_star


def _int_or_name(expr: str, names: list[str] | None) -> int:
    if names and expr.lower() in names:
        return names.index(expr.lower()) + (1 if len(names) == 12 else 0)
    return _int(expr)


def _int(expr: str) -> int:
    try:
        num = int(expr)
    except ValueError as err:
        raise CronError(
            f'Failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": invalid syntax'
        ) from err
    if num < 0:
        raise CronError(f"Negative number ({num}) not allowed: {expr}")
    return num

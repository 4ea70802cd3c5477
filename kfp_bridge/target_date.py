"""Target dates: which business day a run is for, in the business's time zone.

A run scheduled at D 06:00 Asia/Tokyo has a logical date of D-1 21:00 UTC, so
Airflow's ``{{ ds }}`` (a UTC date) says D-1. The prediction is for D: the JST
date of the logical date. These helpers are evaluated at run time from
templates (plugin macros, DAG filters) and by the Slack notifier; nothing here
is evaluated when a DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt

import pendulum

BUSINESS_TZ = "Asia/Tokyo"


def _as_aware(value: dt.datetime | dt.date | str) -> pendulum.DateTime:
    """Accept what templates hand over: aware datetimes, ISO strings; naive means UTC."""
    if isinstance(value, str):
        parsed = pendulum.parse(value, tz="UTC")
        if not isinstance(parsed, pendulum.DateTime):
            raise ValueError(f"not a date-time: {value!r}")
        return parsed
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return pendulum.instance(value, tz="UTC")
        return pendulum.instance(value)
    if isinstance(value, dt.date):
        raise TypeError(
            f"a date ({value.isoformat()}) has no time zone; pass the logical date (a datetime)"
        )
    raise TypeError(f"expected a datetime or ISO string, got {type(value).__name__}")


def local_ds(value: dt.datetime | str, tz: str = BUSINESS_TZ) -> str:
    """Date (YYYY-MM-DD) of ``value`` in time zone ``tz``."""
    if value is None:
        raise ValueError("no logical date: this run has none (trigger it with a logical date)")
    return _as_aware(value).in_timezone(tz).to_date_string()


def local_ds_nodash(value: dt.datetime | str, tz: str = BUSINESS_TZ) -> str:
    """Date (YYYYMMDD) of ``value`` in time zone ``tz``."""
    return local_ds(value, tz).replace("-", "")


def jst_ds(value: dt.datetime | str) -> str:
    """Target date (YYYY-MM-DD, Asia/Tokyo) of a logical date."""
    return local_ds(value, BUSINESS_TZ)


def jst_ds_nodash(value: dt.datetime | str) -> str:
    """Target date (YYYYMMDD, Asia/Tokyo) of a logical date, e.g. for ``table$YYYYMMDD``."""
    return local_ds_nodash(value, BUSINESS_TZ)


def target_date_of(context: dict) -> str | None:
    """Target date of the run in an Airflow context, or None when it has no date.

    Uses the logical date, and for runs without one (manual runs in Airflow 3)
    the run's ``run_after``, as the DAG's template does.
    """
    value = context.get("logical_date")
    if value is None:
        dag_run = context.get("dag_run")
        value = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
    return jst_ds(value) if value is not None else None


# Everything a template may call, by name (plugin macros and DAG filters use this).
MACROS = {
    "jst_ds": jst_ds,
    "jst_ds_nodash": jst_ds_nodash,
    "local_ds": local_ds,
    "local_ds_nodash": local_ds_nodash,
}

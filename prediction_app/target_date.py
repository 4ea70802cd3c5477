"""Target dates: which business day a run is for, in the business's time zone.

A run scheduled at D 06:00 Asia/Tokyo has a logical date of D-1 21:00 UTC, so
Airflow's ``{{ ds }}`` (a UTC date) says D-1. The prediction is for D: the JST
date of the logical date. :func:`target_date` is the rule, written once: the
DAG's template calls it as a macro (``{{ target_date(dag_run) }}``) and the Slack
notifiers call it with the callback's DAG run, so the pipeline and Slack cannot
disagree. Nothing here is evaluated when a DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

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


def target_date(dag_run: Any) -> str:
    """The target date (YYYY-MM-DD, JST) of a DAG run: the one rule, for templates and callbacks.

    The JST date of the run's logical date; a run without one (a manual run in
    Airflow 3) uses its ``run_after``. Takes the DAG run because that is what
    templates (``{{ target_date(dag_run) }}``: a run without a logical date has no
    ``logical_date`` in its template context at all) and callbacks both have. A
    mapping with the same keys works too: the JSON form deadline callbacks get, or
    ``{"logical_date": ..., "run_after": ...}`` from a timetable.
    """
    moment = _field(dag_run, "logical_date") or _field(dag_run, "run_after")
    if moment is None:
        raise ValueError("the DAG run has neither a logical date nor a run_after")
    return jst_ds(moment)


def target_partition(dag_run: Any, tz: str = BUSINESS_TZ, partition: str = "daily") -> str:
    """A registry workflow's target partition: :func:`target_date`'s rule in zone ``tz``.

    ``daily`` (the only one: the pipeline writes YYYY-MM-DD partitions): the date of the
    logical date (or ``run_after``) in ``tz``. ``target_partition(run)`` == ``target_date(run)``.
    """
    if partition != "daily":
        raise ValueError(f"partition must be daily, not {partition!r}")
    moment = _field(dag_run, "logical_date") or _field(dag_run, "run_after")
    if moment is None:
        raise ValueError("the DAG run has neither a logical date nor a run_after")
    return _as_aware(moment).in_timezone(tz).to_date_string()


def _field(dag_run: Any, name: str) -> Any:
    if isinstance(dag_run, Mapping):
        return dag_run.get(name)
    return getattr(dag_run, name, None)


# Run types whose logical date is a tick of the DAG's schedule: one such run per target date.
_ON_SCHEDULE = ("scheduled", "backfill")


def kfp_run_key(dag_run: Any, tz: str = BUSINESS_TZ, partition: str = "daily") -> str:
    """What names a DAG run in its Kubeflow run's name: the target date, made unique.

    A run on the schedule (scheduled, backfill) is the only one for its target date:
    ``2026-12-04``. Any other run for that date (a manual trigger) adds its run type
    and the JST time of its logical date (unique per DAG: Airflow allows one run per
    logical date), ``2026-12-04__manual-143005``, or without a logical date a digest
    of its run id. Deterministic per DAG run, so every try finds its run by name; at
    most 35 characters, so the whole name stays well inside KFP's limits. A registry
    workflow passes its own rule (``tz``, ``partition``: see :func:`target_partition`).
    """
    day = target_partition(dag_run, tz, partition)
    run_type = _field(dag_run, "run_type")
    run_type = str(getattr(run_type, "value", run_type) or "run").lower()
    if run_type in _ON_SCHEDULE:
        return day
    logical = _field(dag_run, "logical_date")
    if logical is not None:
        moment = _as_aware(logical).in_timezone(tz)
        stamp = moment.strftime("%H%M%S") + (
            f"{moment.microsecond:06d}" if moment.microsecond else ""
        )
    else:
        stamp = hashlib.sha256(str(_field(dag_run, "run_id")).encode()).hexdigest()[:8]
    return f"{day}__{run_type}-{stamp}"


# Everything a template may call, by name (the DAG's user_defined_macros, the plugin).
MACROS = {
    "target_date": target_date,
    "kfp_run_key": kfp_run_key,
    "jst_ds": jst_ds,
    "jst_ds_nodash": jst_ds_nodash,
    "local_ds": local_ds,
    "local_ds_nodash": local_ds_nodash,
}

"""A cron schedule whose UI texts say its time zone and whose run ids carry the target date.

Airflow's ``CronTriggerTimetable`` describes ``0 6 * * *`` in Asia/Tokyo as
"At 06:00", and names its runs after the UTC logical date
(``scheduled__2026-11-30T21:00:00+00:00`` for target date 2026-12-01). This
subclass changes only those texts: the DAG list shows "At 06:00, Asia/Tokyo",
and scheduled and manually triggered runs are named
``scheduled__target-2026-12-01__2026-11-30T21:00:00+00:00``. Scheduling itself
is the parent's. (Backfill runs are named by Airflow's backfill code, which does
not ask the timetable: ``airflow/models/backfill.py``.)

Airflow loads a custom timetable only if a plugin registers it: the application's
plugin (``plugins/prediction_app_plugin.py``) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.timetables.trigger import CronTriggerTimetable

from prediction_app.target_date import BUSINESS_TZ, target_partition

if TYPE_CHECKING:
    from airflow.timetables.base import DataInterval
    from airflow.utils.types import DagRunType
    from pendulum import DateTime


class TargetDateCronTimetable(CronTriggerTimetable):
    """``CronTriggerTimetable`` that names its zone and puts the target date in run ids."""

    def __init__(
        self,
        cron: str,
        *,
        timezone: Any,
        business_tz: str = BUSINESS_TZ,
        partition: str = "daily",
        **kwargs: Any,
    ) -> None:
        super().__init__(cron, timezone=timezone, **kwargs)
        # The target-date rule of a registry workflow (prediction_app.registry): run ids
        # carry the partition its pipeline writes.
        self.business_tz = business_tz
        self.partition = partition
        zone = getattr(self._timezone, "name", str(self._timezone))
        self._zone_name = zone
        if self.description:
            self.description = f"{self.description}, {zone}"

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "business_tz": self.business_tz, "partition": self.partition}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> TargetDateCronTimetable:
        from airflow._shared.timezones.timezone import parse_timezone
        from airflow.serialization.decoders import decode_interval, decode_run_immediately

        return cls(
            data["expression"],
            timezone=parse_timezone(data["timezone"]),
            interval=decode_interval(data["interval"]),
            run_immediately=decode_run_immediately(data.get("run_immediately", False)),
            business_tz=data.get("business_tz", BUSINESS_TZ),
            partition=data.get("partition", "daily"),
        )

    @property
    def summary(self) -> str:
        return f"{self._expression} ({self._zone_name})"

    def generate_run_id(
        self,
        *,
        run_type: DagRunType,
        run_after: DateTime,
        data_interval: DataInterval | None,
        **extra: Any,
    ) -> str:
        run_id = super().generate_run_id(
            run_type=run_type, run_after=run_after, data_interval=data_interval, **extra
        )
        # The logical date of a cron-trigger run is its data interval's start (== run_after
        # with the default zero interval); the run has no DagRun yet, so the rule gets both.
        logical_date = data_interval.start if data_interval else None
        day = target_partition(
            {"logical_date": logical_date, "run_after": run_after}, self.business_tz, self.partition
        )
        prefix, _, rest = run_id.partition("__")
        return f"{prefix}__target-{day}__{rest}"

"""The daily prediction's Slack messages: the provider's notifiers, plus the target date.

The provider's notifiers say what any KFP run's failure needs (task, try, error,
links); the application adds which business day the run was for, by the same
rule the DAG renders into the pipeline (:func:`prediction_app.target_date.target_date`).
"""

from __future__ import annotations

from typing import Any

from kfp_bridge.notifications.slack import (
    KfpSlackDeadlineNotifier,
    KfpSlackNotifier,
    KfpSlackRunSummaryNotifier,
)
from prediction_app.target_date import BUSINESS_TZ, target_partition


def target_date_line(dag_run: Any, tz: str = BUSINESS_TZ, partition: str = "daily") -> str:
    """``Target date (JST): D``; ``n/a`` for a run without any date.

    A registry workflow in another zone says its own: ``Target date (UTC): D``.
    """
    try:
        date = target_partition(dag_run, tz, partition)
    except (TypeError, ValueError):
        date = "n/a"
    zone = "JST" if tz == BUSINESS_TZ else tz
    return f"Target date ({zone}): {date}"


class _TargetDateLine:
    """The run's target partition, by the workflow's rule (the daily JST date by default)."""

    def __init__(
        self, *, business_tz: str = BUSINESS_TZ, partition: str = "daily", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.business_tz = business_tz
        self.partition = partition

    def describe_run(self, dag_run: Any) -> list[str]:
        return [target_date_line(dag_run, self.business_tz, self.partition)]


class TaskFailureNotifier(_TargetDateLine, KfpSlackNotifier):
    """One message per failed try of a prediction task, with its target date."""


class RunFailureNotifier(_TargetDateLine, KfpSlackRunSummaryNotifier):
    """The failed DAG run's summary, with its target date."""


class DeadlineNotifier(_TargetDateLine, KfpSlackDeadlineNotifier):
    """A prediction run not finished by its deadline, with its target date."""

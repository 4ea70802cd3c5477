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
from prediction_app.target_date import target_date


def target_date_line(dag_run: Any) -> str:
    """``Target date (JST): D``; ``n/a`` for a run without any date."""
    try:
        date = target_date(dag_run)
    except (TypeError, ValueError):
        date = "n/a"
    return f"Target date (JST): {date}"


class _TargetDateLine:
    def describe_run(self, dag_run: Any) -> list[str]:
        return [target_date_line(dag_run)]


class TaskFailureNotifier(_TargetDateLine, KfpSlackNotifier):
    """One message per failed try of a prediction task, with its target date."""


class RunFailureNotifier(_TargetDateLine, KfpSlackRunSummaryNotifier):
    """The failed DAG run's summary, with its target date."""


class DeadlineNotifier(_TargetDateLine, KfpSlackDeadlineNotifier):
    """A prediction run not finished by its deadline, with its target date."""

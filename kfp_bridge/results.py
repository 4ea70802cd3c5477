"""What a succeeded run reported, handed to the DAG's own code: the provider knows no fields.

A pipeline task prints a result report (:mod:`kfp_bridge.run_report`); the operator
reads the ``report_task``'s report after a successful run and gives it to the DAG as

- the task's return value (XCom ``return_value["result"]``: the report's fields), and
- the ``on_result`` callback, called in the task with a :class:`RunResult` and the task
  context, which may record asset events (``context["outlet_events"]``) and returns the
  datasets the run wrote (:class:`WrittenDataset`) for OpenLineage.

The report travels in a pod log, which not every deployment serves (a UI host whose log
archive is down, workflows garbage-collected without an archive). A succeeded run never
fails over that: ``on_result`` is then called with no fields and ``unavailable`` saying
why, so the DAG can still check the output where it landed.

Which fields a report holds, and what they mean, is the pipeline's and the DAG's
business, never the provider's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunResult:
    """The result report of one task of a succeeded run, and the run it came from."""

    run_id: str
    run_url: str | None
    task: str
    fields: dict[str, Any] = field(default_factory=dict)
    #: Why no report could be read (``fields`` is then empty); None when it was.
    unavailable: str | None = None

    @property
    def where(self) -> str:
        """Names the report in error messages: ``task 'x' of Kubeflow run ID``."""
        return f"task {self.task!r} of Kubeflow run {self.run_id}"


@dataclass(frozen=True)
class WrittenDataset:
    """A dataset a run wrote, as OpenLineage reports it: the asset URI (a table, not one
    of its partitions: lineage graphs key datasets by table), the version written (e.g. a
    partition) and the rows written."""

    uri: str
    version: str | None = None
    row_count: int | None = None


#: ``on_result(result, context)``; a ``ValueError`` fails the task without retries (the
#: pipeline broke the DAG's contract: another try reads the same report).
ResultCallback = Callable[[RunResult, Any], Iterable[WrittenDataset] | None]

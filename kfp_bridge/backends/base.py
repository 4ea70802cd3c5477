"""The contract every execution backend (kfp, vertex, local) fulfils.

The operator and the trigger only speak this vocabulary, so a backend is a
module that turns it into I/O against one service. Nothing here imports the
``kfp`` SDK: compiled pipelines are read as data (see ``kfp_bridge.pipeline_spec``).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfp_bridge.exceptions import BackendConfigError, BackendError, RetryRefusedError
from kfp_bridge.failures import Failure
from kfp_bridge.run_report import RunReport


class RunState(str, enum.Enum):
    """KFP v2beta1 run states, as the API sends them (plain strings)."""

    RUNTIME_STATE_UNSPECIFIED = "RUNTIME_STATE_UNSPECIFIED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    PAUSED = "PAUSED"

    @property
    def is_terminal(self) -> bool:
        """True once the run can no longer change (CANCELED included, unlike kfp.Client)."""
        return self in TERMINAL_STATES

    @property
    def is_success(self) -> bool:
        return self is RunState.SUCCEEDED

    @property
    def is_reattachable(self) -> bool:
        """A run in this state is reused on retry instead of starting another one."""
        return self in REATTACHABLE_STATES


TERMINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.SKIPPED, RunState.FAILED, RunState.CANCELED}
)
# PAUSED and CANCELING are not terminal: a paused run can be resumed and a
# canceling one ends CANCELED. Reattaching to them avoids a duplicate run.
REATTACHABLE_STATES = frozenset(
    {
        RunState.RUNTIME_STATE_UNSPECIFIED,
        RunState.PENDING,
        RunState.RUNNING,
        RunState.SUCCEEDED,
        RunState.PAUSED,
        RunState.CANCELING,
    }
)


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to start one pipeline run, backend-neutral.

    ``pipeline_spec`` is the first YAML document of the compiled pipeline and
    ``platform_spec`` the optional kfp-kubernetes document that follows it.
    ``pipeline_path`` is kept for backends that run the file as-is (local).
    """

    display_name: str
    pipeline_spec: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    platform_spec: Mapping[str, Any] | None = None
    pipeline_path: str | None = None
    pipeline_id: str | None = None
    pipeline_version_id: str | None = None
    experiment: str | None = None
    pipeline_root: str | None = None
    service_account: str | None = None
    enable_caching: bool | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FailedTask:
    """One failed task of a run: its name and the end of its log (bounded).

    ``log_tail`` is at most 50 lines / 8 KiB of the task's pod log (None when it
    could not be read; ``log_unavailable`` then says why). A pipeline can mark a
    failure as permanent in its last log lines; this is where to look for it.
    """

    name: str
    pods: tuple[str, ...] = ()
    log_tail: str | None = None
    log_unavailable: str | None = None


@dataclass(frozen=True)
class RunStatus:
    """One observation of a run.

    ``error`` is one line (a summary of what failed) plus, for backends that can
    read task logs, the log tails: text for people. ``failed_tasks`` has them as
    data, and ``failure`` is what the failing component said of its failure
    (:mod:`kfp_bridge.failures`), parsed once by the backend that read it.
    ``parameters`` are the run's parameters as the service keeps them (``None``
    when the backend cannot tell): a run is reused only for the same ones.
    """

    run_id: str
    display_name: str
    state: RunState
    url: str | None = None
    error: str | None = None
    created_at: str | None = None
    failed_tasks: tuple[FailedTask, ...] = ()
    parameters: Mapping[str, Any] | None = None
    failure: Failure | None = None


def same_parameters(ours: Mapping[str, Any], theirs: Mapping[str, Any] | None) -> bool:
    """Whether a run's parameters are the ones now rendered (unknown ones count as same).

    Services hand parameters back in their own JSON: KFP's and Vertex's
    ``google.protobuf.Value`` make every number a float (``28`` comes back ``28.0``),
    inside lists and structs too. So values compare as data, numbers by value;
    a bool is not a number, a list is not a struct, a string is not a number.
    """
    if theirs is None:
        return True
    if set(ours) != set(theirs):
        return False
    return all(_comparable(ours[k]) == _comparable(theirs[k]) for k in ours)


def _comparable(value: Any) -> Any:
    """``value`` tagged by JSON kind, recursively, so that ``==`` compares it as the service."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, Mapping):
        return ("struct", {str(k): _comparable(v) for k, v in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return ("list", [_comparable(v) for v in value])
    return ("text", str(value))


class Backend(abc.ABC):
    """Submit, observe and stop pipeline runs on one execution service.

    Implementations are synchronous and hold all I/O; the trigger calls them
    from a thread. Errors: raise ``kfp_bridge.exceptions.TransientBackendError``
    for anything worth retrying (5xx, connection refused, timeouts) and
    ``kfp_bridge.exceptions.BackendError`` (or a subclass) for the rest.
    Constructors validate their own settings and raise
    ``kfp_bridge.exceptions.BackendConfigError`` naming the setting.
    """

    name: str

    @abc.abstractmethod
    def check(self) -> str:
        """Reach the service with the configured credentials; a short description of it.

        What the connection form's "Test" button shows. Raises the same errors as
        the other calls (``AuthError`` for refused credentials, ...).
        """

    @abc.abstractmethod
    def submit(self, request: RunRequest) -> RunStatus:
        """Start a run; return as soon as the service accepted it."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunStatus:
        """Current state; ``RunNotFoundError`` when the run no longer exists."""

    @abc.abstractmethod
    def find_runs(self, display_name: str, experiment: str | None = None) -> list[RunStatus]:
        """Runs with exactly this display name, newest first (for reattach)."""

    @abc.abstractmethod
    def cancel(self, run_id: str) -> None:
        """Ask the service to stop the run. Idempotent; no error when already ended."""

    @abc.abstractmethod
    def run_url(self, run_id: str) -> str | None:
        """Where a person looks at the run (the "Kubeflow run" link)."""

    def retry(self, run_id: str) -> None:
        """Rerun the failed tasks of an ended FAILED run, keeping the succeeded ones.

        ``RetryRefusedError`` when the service has no such call (this default) or
        refuses this run; the caller then submits a new run.
        """
        raise RetryRefusedError(f"the {self.name} backend cannot retry a run in place")

    def pipeline_version(
        self, pipeline_id: str, pipeline_version_id: str | None = None
    ) -> tuple[str, Mapping[str, Any]]:
        """An uploaded pipeline's version (the latest without ``pipeline_version_id``):
        ``(version id, its pipeline spec)``. Only services that store pipelines have one."""
        raise BackendConfigError(
            "pipeline_id", f"refers to an uploaded pipeline, which the {self.name} backend has not"
        )

    def task_report(self, run_id: str, task: str, kind: str = "result") -> RunReport | None:
        """The last ``kind`` report (:mod:`kfp_bridge.run_report`) task ``task`` of the run gave.

        ``None`` when the task gave none (or did not run); ``TransientBackendError``
        when its output could not be read right now.
        """
        raise BackendError(f"the {self.name} backend cannot read task reports")


def positive_seconds(setting: str, value: float | str) -> float:
    """``value`` as a positive number of seconds, or ``BackendConfigError`` naming ``setting``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BackendConfigError(setting, f"must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise BackendConfigError(setting, f"must be positive, got {value!r}")
    return seconds

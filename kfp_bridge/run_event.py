"""How a wait on a run ended: the value the trigger sends and the operator concludes from.

The trigger fires one ``TriggerEvent`` whose payload is ``RunEvent.to_payload()``
(plain JSON, so Airflow can store it as ``next_kwargs``); the operator reads it
back with ``RunEvent.from_payload``. The worker-side wait returns the same value,
so both paths end the task through one function (``KubeflowPipelineRunOperator._conclude``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfp_bridge.backends.base import RunState, RunStatus
from kfp_bridge.exceptions import AuthError, RunNotFoundError, TransientBackendError
from kfp_bridge.failures import Failure


class Outcome(str, enum.Enum):
    """Why the wait ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the run ended FAILED, CANCELED or SKIPPED
    TIMED_OUT = "timed_out"  # the deadline passed while the run was still active
    AUTH_ERROR = "auth_error"  # 401/403: credentials refused
    NOT_FOUND = "not_found"  # the run disappeared (404)
    GAVE_UP = "gave_up"  # the transient-error budget was spent
    BACKEND_ERROR = "backend_error"  # any other refusal of the service


@dataclass(frozen=True)
class RunEvent:
    """The end of a wait on one run.

    ``state`` is the run's last known state (None when it was never read);
    ``message`` is the run's own error (FAILED) or the error that ended the wait,
    text for people; ``failed_tasks`` names the pipeline tasks that failed (data, for
    the try history) and ``failure`` is what the failing component said (data: the
    operator decides from it whether another try can help).
    """

    outcome: Outcome
    run_id: str
    run_name: str | None = None
    run_url: str | None = None
    state: RunState | None = None
    message: str | None = None
    failed_tasks: tuple[str, ...] = ()
    failure: Failure | None = None

    @classmethod
    def ended(cls, status: RunStatus) -> RunEvent:
        """The run reached a terminal state."""
        if not status.state.is_terminal:
            raise ValueError(f"run {status.run_id} is {status.state.value}, not ended")
        return cls(
            outcome=Outcome.SUCCEEDED if status.state.is_success else Outcome.FAILED,
            run_id=status.run_id,
            run_name=status.display_name or None,
            run_url=status.url,
            state=status.state,
            message=None if status.state.is_success else status.error,
            failed_tasks=tuple(t.name for t in status.failed_tasks),
            failure=None if status.state.is_success else status.failure,
        )

    @classmethod
    def from_error(
        cls,
        run_id: str,
        error: Exception,
        *,
        run_name: str | None = None,
        run_url: str | None = None,
        state: RunState | None = None,
        message: str | None = None,
    ) -> RunEvent:
        """A wait ended by an error of the service (the error's class picks the outcome)."""
        if isinstance(error, AuthError):
            outcome = Outcome.AUTH_ERROR
        elif isinstance(error, RunNotFoundError):
            outcome = Outcome.NOT_FOUND
        elif isinstance(error, TransientBackendError):
            outcome = Outcome.GAVE_UP
        else:
            outcome = Outcome.BACKEND_ERROR
        return cls(outcome, run_id, run_name, run_url, state, message or str(error))

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON for the ``TriggerEvent`` (stored by Airflow as ``next_kwargs``)."""
        return {
            "outcome": self.outcome.value,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "run_url": self.run_url,
            "state": self.state.value if self.state else None,
            "message": self.message,
            "failed_tasks": list(self.failed_tasks),
            "failure": self.failure.to_payload() if self.failure else None,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> RunEvent:
        """The event a trigger sent; ``ValueError`` naming what is wrong with a foreign payload."""
        try:
            outcome = Outcome(payload["outcome"])
            run_id = payload["run_id"]
            state = payload.get("state")
            return cls(
                outcome=outcome,
                run_id=str(run_id),
                run_name=payload.get("run_name"),
                run_url=payload.get("run_url"),
                state=RunState(state) if state else None,
                message=payload.get("message"),
                failed_tasks=tuple(str(t) for t in payload.get("failed_tasks") or ()),
                failure=Failure.from_payload(payload.get("failure")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            keys = ", ".join(sorted(map(str, payload)))
            raise ValueError(f"not a kfp_bridge run event ({exc!r}; keys: {keys})") from exc

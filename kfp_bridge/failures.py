"""Permanent or retryable: how a failed run tells the bridge whether another try can help.

A component that fails prints a run report (:mod:`kfp_bridge.run_report`) of kind
``failure`` just before it raises, and exits with status 65 (``EX_DATAERR``) when
the failure is permanent::

    kfp-bridge-report: {"kind": "failure", "step": "predict", "permanent": true,
      "error": "DigestMismatchError", "input": "input_digest", "message": "..."}

Permanent means bad input that fails the same way on every try: a digest mismatch,
a corrupt file, a missing table or column, an impossible parameter value. Each
backend parses the report once, where it reads what the service lets it read, and
hands it on as data (``RunStatus.failure``, then ``RunEvent.failure`` in the
trigger's event): **local**, the failed task's output in the run's ``runner.log``;
**KFP**, the tail of the failed task's pod log; **Vertex**, the job's and failed
tasks' error messages, which carry the container's exit status ("exited with a
non-zero status of 65") rather than its output. Neither report nor that status:
retryable, the safe default (Airflow's retries apply).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kfp_bridge.run_report import last_report

PERMANENT_EXIT_CODE = 65  # sysexits.h EX_DATAERR: the input data was incorrect

# Vertex CustomJob: "The replica workerpool0-0 exited with a non-zero status of 65."
# Argo / Kubernetes: "Error (exit code 65)".
_EXIT = re.compile(
    rf"(?:non-zero status of|exit code|exit status)\s*:?\s*{PERMANENT_EXIT_CODE}\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Failure:
    """What the failing component said about its failure."""

    permanent: bool
    error_type: str  # the component's error class, e.g. ModelDigestMismatchError
    message: str  # names the bad input
    input: str | None = None  # the parameter or source at fault, when the component knows
    step: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON (a trigger event carries it)."""
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None) -> Failure | None:
        """The failure :meth:`to_payload` gave; ``None`` for none; ``ValueError`` when foreign."""
        if payload is None:
            return None
        if not isinstance(payload, Mapping) or not isinstance(payload.get("permanent"), bool):
            raise ValueError(f"not a failure: {payload!r}")

        def text(key: str) -> str | None:
            value = payload.get(key)
            return None if value is None else str(value)

        return cls(
            permanent=payload["permanent"],
            error_type=text("error_type") or "Error",
            message=text("message") or "",
            input=text("input"),
            step=text("step"),
        )


def parse_failure(text: str | None) -> Failure | None:
    """The last failure report in ``text``, else the permanent exit status, else None."""
    report = last_report(text, "failure")
    if report is not None:
        fields = report.fields
        return Failure(
            permanent=fields.get("permanent") is True,
            error_type=str(fields.get("error") or "Error"),
            message=str(fields.get("message") or ""),
            input=fields.get("input") if isinstance(fields.get("input"), str) else None,
            step=report.step,
        )
    if text and _EXIT.search(text):
        return Failure(
            permanent=True,
            error_type=f"ExitStatus{PERMANENT_EXIT_CODE}",
            message=f"the component exited with status {PERMANENT_EXIT_CODE} (bad input); "
            "its log names the input",
        )
    return None

"""Permanent or retryable: how a failed run tells the bridge whether another try can help.

A component that fails on bad input (a model digest mismatch, a corrupt or
truncated pickle, a missing model, warehouse or column, a bad lookback, an
impossible date) prints one machine-readable line before it exits, and exits
with status 65 (``EX_DATAERR``)::

    kfp-bridge-failure: permanent ModelDigestMismatchError: /m.pkl has sha256 ab.., not cd..

(``retryable`` for failures that another try may not meet.) The bridge reads the
last such line from the run's error text, which each backend fills with what the
service lets it read: **local**, the component's output in the run's
``runner.log``; **KFP**, the tail of the failed task's pod log; **Vertex**, the
job's and failed tasks' error messages, which carry the container's exit status
("exited with a non-zero status of 65") rather than its output. No line and no
such status: retryable, the safe default (Airflow's retries apply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER = "kfp-bridge-failure:"
PERMANENT_EXIT_CODE = 65  # sysexits.h EX_DATAERR: the input data was incorrect
KINDS = ("permanent", "retryable")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(
    rf"{re.escape(MARKER)}\s*(?P<kind>{'|'.join(KINDS)})\s+(?P<type>[A-Za-z_][\w.]*):\s?(?P<message>.*)$"
)
# Vertex CustomJob: "The replica workerpool0-0 exited with a non-zero status of 65."
# Argo / Kubernetes: "Error (exit code 65)".
_EXIT = re.compile(
    rf"(?:non-zero status of|exit code|exit status)\s*:?\s*{PERMANENT_EXIT_CODE}\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Failure:
    """What the failing component said about its failure."""

    kind: str  # "permanent" or "retryable"
    error_type: str  # the component's error class, e.g. ModelDigestMismatchError
    message: str  # names the bad input

    @property
    def permanent(self) -> bool:
        return self.kind == "permanent"

    def line(self) -> str:
        """The marker line as a component prints it."""
        return f"{MARKER} {self.kind} {self.error_type}: {self.message}"


def parse_failure(text: str | None) -> Failure | None:
    """The last marker line in ``text`` (any indentation, ANSI colours), else the exit status."""
    if not text:
        return None
    found: Failure | None = None
    for line in _ANSI.sub("", text).splitlines():
        match = _LINE.search(line)
        if match:
            found = Failure(match["kind"], match["type"], match["message"].strip())
    if found is None and _EXIT.search(text):
        found = Failure(
            "permanent",
            f"ExitStatus{PERMANENT_EXIT_CODE}",
            f"the component exited with status {PERMANENT_EXIT_CODE} (bad input); its log "
            "names the input",
        )
    return found

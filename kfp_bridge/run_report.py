"""Run reports: the one line a component prints for the bridge, read on every backend.

Format (a pipeline's step prints it): a line containing

    kfp-bridge-report: {"kind": "...", "step": "...", ...}

anywhere in the component's output (``kfp.local`` indents and may colour task
output; ANSI codes are stripped), the rest of the line one JSON object of at most
4 KiB. ``kind`` says what it reports: ``"failure"`` (:mod:`kfp_bridge.failures`)
or ``"result"`` (the step's outcome, issue 12). The last line of a kind wins.
Standard library only, so the same text can be checked on the pipeline side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kfp_bridge.backends._kfp_local_log import strip_ansi

PREFIX = "kfp-bridge-report:"
MAX_LINE_BYTES = 4096


@dataclass(frozen=True)
class RunReport:
    """One report line: its ``kind``, the ``step`` that printed it, and all its fields."""

    kind: str
    step: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def parse_reports(text: str | None) -> list[RunReport]:
    """Every well-formed report line in ``text``, in order (malformed ones are skipped)."""
    reports = []
    for line in strip_ansi(text or "").splitlines():
        start = line.find(PREFIX)
        if start < 0 or len(line.encode()) > MAX_LINE_BYTES + 256:
            continue
        try:
            data = json.loads(line[start + len(PREFIX) :])
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            step = data.get("step")
            reports.append(RunReport(data["kind"], step if isinstance(step, str) else None, data))
    return reports


def last_report(text: str | None, kind: str) -> RunReport | None:
    """The last report of ``kind`` in ``text``."""
    matching = [r for r in parse_reports(text) if r.kind == kind]
    return matching[-1] if matching else None


def report_line(kind: str, step: str | None = None, **fields: Any) -> str:
    """The line a component prints (one line, JSON, at most 4 KiB)."""
    data = {"kind": kind, **({"step": step} if step else {}), **fields}
    line = f"{PREFIX} {json.dumps(data, ensure_ascii=False, separators=(', ', ': '))}"
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ValueError(f"report line is {len(line.encode())} bytes, more than {MAX_LINE_BYTES}")
    return line

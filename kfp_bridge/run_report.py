"""What a pipeline step says about its outcome: one line of JSON in its log.

A component prints, near the end of its output (inside the log tail the bridge
reads on a failure too)::

    kfp-bridge-report: {"kind": "result", "step": "predict", "target_date": "2026-11-27", ...}

``kind`` is ``"result"`` (what a step produced; read after a successful run) or
``"failure"`` (why it failed). The prefix may sit anywhere in the line: kfp.local
indents a task's output and colours its own lines, container runtimes may prefix
timestamps. The last report of a kind in a task's output wins. Where the bridge
finds a task's output differs by backend (local: the runner log; KFP: the task's
pod log; Vertex: the step's ``report`` output parameter, the same JSON), the format
does not: this module is the one parser.

Why a log line: the KFP API has no output parameters in its run objects
(``backend/api/v2beta1/run.proto`` ``PipelineTaskDetail``: artifacts only), but it
serves every task's pod log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "kfp-bridge-report:"
MAX_REPORT_CHARS = 4096
KINDS = ("result", "failure")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_report(text: str) -> dict[str, Any] | None:
    """The report a line (or a bare JSON output value) carries, else ``None``."""
    line = _ANSI.sub("", text).strip()
    if PREFIX in line:
        line = line.split(PREFIX, 1)[1].strip()
    elif not line.startswith("{"):
        return None
    if len(line) > MAX_REPORT_CHARS:
        return None
    try:
        report = json.loads(line)
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("kind") not in KINDS:
        return None
    return report


def reports_in(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every report in ``lines``, in order (only lines that carry the prefix)."""
    return [r for r in (parse_report(line) for line in lines if PREFIX in line) if r]


def last_report(text: str, kind: str = "result") -> dict[str, Any] | None:
    """The last report of ``kind`` in a task's output."""
    found = [r for r in reports_in(text.splitlines()) if r["kind"] == kind]
    return found[-1] if found else None


def format_report(kind: str, **fields: Any) -> str:
    """The line a step prints (the pipeline side writes the same; see ``run_report`` tests)."""
    if kind not in KINDS:
        raise ValueError(f"report kind must be one of {KINDS}, got {kind!r}")
    return f"{PREFIX} {json.dumps({'kind': kind, **fields}, sort_keys=True)}"


def require_fields(report: Mapping[str, Any], names: Iterable[str], where: str) -> None:
    """``ValueError`` naming every field the report lacks."""
    missing = [n for n in names if report.get(n) in (None, "")]
    if missing:
        raise ValueError(f"the report of {where} lacks {', '.join(missing)}: {dict(report)}")

"""The one line a step prints for kfp-bridge, the Airflow side that runs this pipeline.

    kfp-bridge-report: {"kind": "result", "step": "predict", "target_date": ..., ...}

The bridge reads it from the step's log (``kfp.local``'s runner log, the task's pod log
through the KFP API) and parses it with ``kfp_bridge/run_report.py``; the format is
written there and here because the two sides share no environment. ``kind`` is
``"result"`` (what a step produced) or ``"failure"`` (why it failed: whether another try
can help, and the run parameter at fault). On Vertex AI, whose pipeline API serves no
logs, the predict step also returns the result report's JSON as its ``report`` output
parameter, and a permanent failure exits with status 65 (``EX_DATAERR``): Vertex relays a
failed task's exit status.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

PREFIX = "kfp-bridge-report:"
MAX_LINE_BYTES = 4096
PERMANENT_EXIT_CODE = 65  # kfp_bridge.failures.PERMANENT_EXIT_CODE
_MAX_MESSAGE_CHARS = 2000


def report_json(kind: str, step: str | None = None, **fields: Any) -> str:
    """The report as one line of JSON (the ``report`` output's value)."""
    data = {"kind": kind, **({"step": step} if step else {}), **fields}
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


def report_line(kind: str, step: str | None = None, **fields: Any) -> str:
    """The prefix and the JSON, at most 4 KiB."""
    line = f"{PREFIX} {report_json(kind, step, **fields)}"
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ValueError(f"report line is {len(line.encode())} bytes, more than {MAX_LINE_BYTES}")
    return line


def emit(kind: str, step: str | None = None, **fields: Any) -> str:
    """Print the report line (flushed: it must reach the log before the process ends).

    Returns the JSON, for an output parameter.
    """
    print(report_line(kind, step, **fields), flush=True)
    return report_json(kind, step, **fields)


def prediction_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the predict step reports: the partition it replaced, and what is in it
    (``written_run_id``: the ``run_id`` column's value in every row; the Airflow side reads
    the partition back and checks it; not named ``run_id``, which is the bridge's own)."""
    return {
        "target_date": str(result["target_date"]),
        "partition": str(result["partition"]),
        "rows": int(result["rows_written"]),
        "model_sha256": str(result["model_sha256"]),
        "written_run_id": str(result.get("run_id") or ""),
    }


def failure_fields(error: BaseException) -> dict[str, Any]:
    """What a failure report says: permanent or not, the error, the input at fault."""
    message = " ".join(str(error).split())[:_MAX_MESSAGE_CHARS]
    return {
        "permanent": getattr(error, "permanent", False) is True,
        "error": type(error).__name__,
        "input": getattr(error, "input", None),
        "message": message,
    }


@contextmanager
def reporting_failures(step: str) -> Iterator[None]:
    """Run a step's body; if it fails, say so to the bridge.

    A permanent failure (bad input): its traceback, then the report as the log's last
    line, then exit status 65 (so the status tells it apart where only that is relayed).
    Anything else: the report, then the error propagates as usual (traceback, status 1).
    """
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        fields = failure_fields(error)
        if not fields["permanent"]:
            emit("failure", step, **fields)
            raise
        traceback.print_exc()
        sys.stderr.flush()
        emit("failure", step, **fields)
        raise SystemExit(PERMANENT_EXIT_CODE) from error

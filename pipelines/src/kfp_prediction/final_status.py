"""The KFP-only variant's Slack message: what an exit task can say about a finished run.

The exit task of a ``dsl.ExitHandler`` receives ``dsl.PipelineTaskFinalStatus`` and nothing
from the tasks it guards (KFP refuses an exit task that depends on another task). So the
message can name the run, its state and whatever KFP puts in the status, but not the failed
component or the try: on ``kfp.local`` 2.17 the status names the handler group
(``exit-handler-1``) with the message ``Task exit-handler-1 failed.``; on the KFP backend
2.17 the state is the MLMD state (``COMPLETE``/``FAILED``) and the error is empty
(``backend/src/v2/driver/resolve.go``: "TODO: Implement fields Message and Code").
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from kfp_prediction.dates import jst_date_of_run_time
from kfp_prediction.errors import TargetDateError

# kfp.local and Vertex say SUCCEEDED, the KFP backend (MLMD) says COMPLETE.
SUCCESS_STATES = ("SUCCEEDED", "COMPLETE")
POST_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class FinalStatus:
    """The fields of ``dsl.PipelineTaskFinalStatus`` the message uses."""

    state: str
    task_name: str
    error_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCESS_STATES


def run_target_date(target_date: str, scheduled_time_utc: str, create_time_utc: str) -> str:
    """The compiled-in date (naive form), else the JST date of the run's time placeholders."""
    if target_date:
        return target_date
    try:
        return jst_date_of_run_time(scheduled_time_utc, create_time_utc)
    except TargetDateError as exc:
        return f"unknown ({exc})"


def message(
    status: FinalStatus,
    *,
    pipeline_name: str,
    run_name: str,
    run_id: str,
    target_date: str,
    kfp_ui_host: str = "",
) -> str:
    """The Slack text: state, target date, run, KFP's error text if any, the run link."""
    icon = ":large_green_circle:" if status.succeeded else ":red_circle:"
    lines = [
        f"{icon} *{pipeline_name}* {status.state}",
        f"Target date (JST): {target_date}",
        f"Run: {run_name} ({run_id})",
    ]
    if not status.succeeded:
        lines.append(f"Error: {status.error_message or '(none given by KFP)'}")
    if kfp_ui_host:
        lines.append(f"Run link: {kfp_ui_host.rstrip('/')}/#/runs/details/{run_id}")
    return "\n".join(lines)


def post(webhook_url: str, text: str, timeout: float = POST_TIMEOUT_SECONDS) -> None:
    """POST ``{"text": ...}`` to a Slack incoming webhook; a failure is printed, not raised.

    A notification failure must not turn a succeeded run into a failed one. The URL is never
    printed: it is the webhook's secret.
    """
    request = urllib.request.Request(
        webhook_url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (OSError, ValueError) as exc:
        print(f"Slack notification failed: {type(exc).__name__}: {getattr(exc, 'reason', '')}")
    else:
        print("Slack notification sent")

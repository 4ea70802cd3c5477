"""What failed in a FAILED KFP run: the failed tasks and the tail of their pod logs.

The KFP API gives a FAILED run no error text (``server/api_converter.go``
``toApiRun`` sets ``error`` only when it cannot convert the run); the text a
person needs is in the failed task's pod log, which the API server streams at
``GET /apis/v1alpha1/runs/{run_id}/nodes/{node_id}/log`` (``apiserver/main.go``).
``run_details.task_details`` has one entry per Argo node; a node's children are
listed as ``child_tasks[].pod_name`` (``toModelTask``), so the pods of a failed
component task are the children of its FAILED entry. The log endpoint answers
HTTP 200 even when it fails (``server/run_log_server.go`` writes the status
before reading), with a JSON ``{"error_message": ...}`` body instead of the log.
Behind the UI server (``frontend/server/app.ts``) that route is an HTML 404 and
the log is read at ``/k8s/pod/logs`` by pod name instead (``KfpApiBackend.task_log_tail``).

Everything here is pure (no I/O), so the rules are tested without a server.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from kfp_bridge.backends import argo_pods
from kfp_bridge.backends.base import FailedTask
from kfp_bridge.run_report import PREFIX as REPORT_PREFIX

MAX_LOG_LINES = 50
MAX_LOG_BYTES = 8 * 1024
MAX_TASKS = 3  # log tails fetched per failed run
# Nodes the v2 compiler adds around each component task (backend/src/v2/compiler/argocompiler):
# the executor pod, or the executor's Argo retry node and its attempts "executor(N)".
_STRUCTURAL = re.compile(r"executor(\(\d+\))?")
# The KFP launcher (Go, glog) frames the component's output with lines like
# "F1127 06:00:09.000000      20 main.go:49] failed to execute component: exit status 1".
_GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w./-]+:\d+\]")


def failed_tasks(task_details: Iterable[Any]) -> list[FailedTask]:
    """The failed component tasks of a run, in the order the server lists them.

    Left out: the workflow's root node (its display name is the workflow name,
    which every other node id starts with), the ``executor`` pod nodes, retry nodes and
    attempts (their parent is the component task) and driver nodes that did not fail.
    A task's pods: its children, a retry node replaced by its attempts, the newest
    first (:func:`.argo_pods.pod_nodes`).
    """
    details = list(task_details)
    children = {id(t): list(_pod_names(t)) for t in details}
    all_pods = [p for pods in children.values() for p in pods]
    known = set(all_pods)
    pods_of = {key: tuple(argo_pods.pod_nodes(ids, known)) for key, ids in children.items()}
    out = []
    for task in details:
        name = getattr(task, "display_name", None) or ""
        if getattr(task, "state", None) != "FAILED" or not name or _STRUCTURAL.fullmatch(name):
            continue
        if all_pods and all(p.startswith(f"{name}-") for p in all_pods):
            continue  # the workflow root
        out.append(FailedTask(name=name, pods=pods_of[id(task)]))
    return out


def _pod_names(task: Any) -> Iterator[str]:
    for child in getattr(task, "child_tasks", None) or []:
        pod = getattr(child, "pod_name", None)
        if pod:
            yield pod


def tail(
    chunks: Iterable[bytes], max_lines: int = MAX_LOG_LINES, max_bytes: int = MAX_LOG_BYTES
) -> str:
    """The last ``max_lines`` lines, at most ``max_bytes`` bytes, of a streamed log.

    Reads chunk by chunk and keeps only a bounded window, so a huge log costs no
    more memory than its tail.
    """
    window = b""
    lines: deque[bytes] = deque(maxlen=max_lines + 1)
    for chunk in chunks:
        window += chunk
        *complete, window = window.split(b"\n")
        lines.extend(complete)
        if len(window) > max_bytes:
            window = window[-max_bytes:]
    if window:
        lines.append(window)
    kept = list(lines)[-max_lines:]
    text = b"\n".join(kept)
    if len(text) > max_bytes:
        text = text[-max_bytes:]
        text = text.split(b"\n", 1)[-1] if b"\n" in text else text
    return text.decode("utf-8", "replace").strip("\n")


def log_endpoint_error(body_start: bytes) -> str | None:
    """The error the log endpoint sent instead of a log (HTTP 200 + JSON), else ``None``."""
    text = body_start.lstrip()
    if not text.startswith(b'{"error_message"'):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and "error_message" in data:
        return str(data["error_message"])[:300]
    return None


def error_line(log_tail: str) -> str:
    """The component's own last words: the last line the launcher did not write."""
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    for line in reversed(lines):
        # a run report (kfp_bridge.run_report) after the traceback is data, not the error
        if not _GLOG_LINE.match(line) and REPORT_PREFIX not in line:
            return line[:500]
    return lines[-1][:500] if lines else "(empty log)"


def summary(tasks: list[FailedTask], run_url: str | None) -> str:
    """One line for the task log's error and the Slack message's first error line.

    The run's URL, when a reader needs it (no task named, or a task log unreadable),
    ends the line: a log viewer links up to the next whitespace, so no punctuation
    may follow it.
    """
    see = f"; see {run_url}" if run_url else ""
    if not tasks:
        return f"the KFP API names no failed task{see}"
    parts = []
    for task in tasks:
        if task.log_tail:
            parts.append(f"task {task.name} failed: {error_line(task.log_tail)}")
        elif task.log_unavailable:
            parts.append(f"task {task.name} failed (log unavailable: {task.log_unavailable})")
        else:  # logs not read (e.g. runs listed for reattach)
            parts.append(f"task {task.name} failed")
    unread = any(not t.log_tail and t.log_unavailable for t in tasks)
    return "; ".join(parts) + (see if unread else "")

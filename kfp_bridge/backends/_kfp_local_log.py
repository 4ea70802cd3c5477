"""``kfp.local``'s own log lines, parsed in one place.

``kfp/local/task_dispatcher.py`` and ``logging_utils.py`` (kfp SDK) log, around each task
(tasks run one at a time)::

    Executing task 'NAME'
    Task 'NAME' finished with status SUCCESS|FAILURE

with ANSI colour codes, and print the task's own output indented in between.
Standard library only: the runner (pipeline environment) imports it by file name, as
it does ``_local_files``; the backend, the run page and ``run_report`` import it as
``kfp_bridge.backends._kfp_local_log``.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (SUCCESS|FAILURE)")


def strip_ansi(text: str) -> str:
    """``text`` without colour codes."""
    return _ANSI.sub("", text)


def task_started(line: str) -> str | None:
    """The task an ``Executing task 'NAME'`` line starts, else None."""
    match = _STARTED.search(strip_ansi(line))
    return match.group(1) if match else None


def task_finished(line: str) -> tuple[str, str] | None:
    """``(task, "SUCCESS"|"FAILURE")`` of a ``Task 'NAME' finished with status`` line."""
    match = _FINISHED.search(strip_ansi(line))
    return (match.group(1), match.group(2)) if match else None


def task_output(log_text: str, task: str) -> list[str]:
    """The lines of ``task``'s output: what follows its ``Executing task`` line up to
    the next one. A task that ran twice (a retried run dir) gives its last output."""
    lines: list[str] = []
    current = None
    for line in log_text.splitlines():
        started = task_started(line)
        if started:
            current = started
            if current == task:
                lines = []
            continue
        if current == task:
            lines.append(line)
    return lines

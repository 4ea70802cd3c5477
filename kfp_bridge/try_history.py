"""The history of a task's tries: which run each try waited for, and how it ended.

Airflow 3.3 clears a task's XCom before each try, so the run link shows only the
last try's run. The history is kept in the task's state store instead (the same
``task_state_store`` the ``ResumableJobMixin`` keeps the run id in, which lives
across tries): a JSON list, one dict per try, never text to parse back.

An entry (:class:`TryEntry`): ``try_number``, ``run_id``, ``state`` (the run's last
state this try saw), ``start`` and ``end`` (ISO 8601, UTC; ``end`` is None while
the try runs), ``resumed`` (the try asked the service to rerun the failed tasks
of an earlier try's run instead of starting one), ``url`` and ``failed_tasks``.

Everything here but :func:`load` and :func:`record` is pure, so the wording is
tested without Airflow; callers read and write through the store they have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

HISTORY_KEY = "kfp_bridge_try_history"
MAX_ENTRIES = 50  # a task with more tries keeps the newest


class TryEntry(TypedDict, total=False):
    try_number: int
    run_id: str
    state: str
    start: str
    end: str | None
    resumed: bool
    url: str | None
    failed_tasks: list[str]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(store: Any) -> list[TryEntry]:
    """The entries in ``store`` (oldest try first); none when there is no store or no list."""
    if store is None:
        return []
    value = store.get(HISTORY_KEY)
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, Mapping) and isinstance(e.get("try_number"), int)]


def merge(history: Sequence[TryEntry], entry: TryEntry) -> list[TryEntry]:
    """``history`` with ``entry`` merged into the entry of its try (added when new)."""
    out: list[TryEntry] = []
    merged = False
    for old in history:
        if old.get("try_number") == entry["try_number"]:
            out.append({**old, **entry})  # type: ignore[typeddict-item]
            merged = True
        else:
            out.append(old)
    if not merged:
        out.append(entry)
    out.sort(key=lambda e: e["try_number"])
    return out[-MAX_ENTRIES:]


def record(store: Any, entry: TryEntry) -> list[TryEntry]:
    """Merge ``entry`` into the stored history and write it back; returns the new history."""
    history = merge(load(store), entry)
    store.set(HISTORY_KEY, [dict(e) for e in history])
    return history


def _where(entry: Mapping[str, Any]) -> str:
    tasks = entry.get("failed_tasks") or []
    state = entry.get("state") or "unknown"
    if tasks and state == "FAILED":
        return f"{state} at step {', '.join(tasks)}"
    return state


def line(entry: Mapping[str, Any]) -> str:
    """One line for a try: ``try 1: run R, FAILED at step predict (start - end) URL``."""
    how = "resumed run" if entry.get("resumed") else "run"
    span = f"{entry.get('start') or '?'} - {entry.get('end') or 'running'}"
    text = f"try {entry.get('try_number')}: {how} {entry.get('run_id')}, {_where(entry)} ({span})"
    return f"{text} {entry['url']}" if entry.get("url") else text


def earlier(history: Sequence[Mapping[str, Any]], try_number: int) -> list[Mapping[str, Any]]:
    """The entries of the tries before ``try_number``."""
    return [e for e in history if e.get("try_number", 0) < try_number]


def summary(
    history: Sequence[Mapping[str, Any]], try_number: int, total_tries: int | None
) -> str | None:
    """What this try did, said briefly: ``try 3/4, resumed run R after FAILED at step predict``.

    None when the history has no entry for ``try_number`` (its run was never known).
    """
    current = next((e for e in history if e.get("try_number") == try_number), None)
    if current is None:
        return None
    of = f"{try_number}/{total_tries}" if total_tries else str(try_number)
    if current.get("resumed"):
        before = [e for e in earlier(history, try_number) if e.get("run_id") == current["run_id"]]
        after = f" after {_where(before[-1])}" if before else ""
        return f"try {of}, resumed run {current.get('run_id')}{after}"
    return f"try {of}, run {current.get('run_id')}"

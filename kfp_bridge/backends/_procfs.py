"""Linux ``/proc``, read in one place: what the local backend and its runner know of processes.

Standard library only: the runner (pipeline environment) imports it by file name, as it
does ``_local_files``. ``stat`` fields follow proc(5), counted after the command name
(which may hold spaces and parentheses, so the line is split at its last ``)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")
HAVE_PROC = (PROC / "self" / "stat").exists()
STATE, PARENT, GROUP, START_TIME = 0, 1, 2, 19  # indexes after the command name
USER_TICKS, SYSTEM_TICKS = 11, 12  # CPU time used, in clock ticks (SC_CLK_TCK)


def stat_fields(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None when unreadable."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> str | None:
    """Kernel start time of ``pid``, to tell a process from another that reused its pid."""
    fields = stat_fields(pid)
    return fields[START_TIME] if fields else None


def processes() -> Iterator[tuple[int, list[str]]]:
    """``(pid, stat fields)`` of every process whose ``stat`` could be read."""
    for proc in PROC.iterdir():
        if proc.name.isdigit():
            fields = stat_fields(proc.name)
            if fields is not None:
                yield int(proc.name), fields


def group_members(pgid: int) -> dict[int, int]:
    """Live (non-zombie) processes of process group ``pgid``: ``{pid: parent pid}``."""
    return {
        pid: int(fields[PARENT])
        for pid, fields in processes()
        if int(fields[GROUP]) == pgid and fields[STATE] not in ("Z", "X")
    }

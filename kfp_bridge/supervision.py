"""A worker waiting for a run stops when its supervisor is gone.

Airflow 3 runs a task in a child of its supervisor process. When the supervisor
dies (SIGKILL, out of memory), the task process is reparented and keeps polling
the service beside the retry that Airflow schedules: a stray actor on the run.
The task process can tell: its parent process id changed. :class:`SupervisedClock`
is the worker's clock; its sleeps, and a watchdog thread during each blocking call to the
service (a read that hangs until its timeout), look at the parent every few seconds and
end the process at once, touching nothing (no cancel: the retry owns the run now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kfp_bridge.waiting import Clock

# Longest slice of a sleep between two looks at the parent.
CHECK_SECONDS = 2.0
ORPHAN_EXIT_CODE = 75  # EX_TEMPFAIL: nobody reads it; the supervisor is gone


class SupervisedClock(Clock):
    """``Clock`` whose sleeps end the process once its parent (the supervisor) changed."""

    def __init__(
        self,
        log: logging.Logger | logging.LoggerAdapter | Any | None = None,
        *,
        getppid: Callable[[], int] = os.getppid,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.log = log or logging.getLogger(__name__)
        self._getppid = getppid
        self._exit = exit
        self.parent = getppid()

    def supervisor_gone(self) -> bool:
        return self._getppid() != self.parent

    def _leave(self) -> None:
        self.log.warning(
            "The task's supervisor (pid %s) is gone: this process stops waiting and "
            "leaves the run to the next try",
            self.parent,
        )
        self._exit(ORPHAN_EXIT_CODE)

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            if self.supervisor_gone():
                self._leave()
                return
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, CHECK_SECONDS))

    @contextlib.contextmanager
    def guarding(self) -> Iterator[None]:
        """Watch the parent from a thread while the worker is blocked in a call."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(CHECK_SECONDS):
                if self.supervisor_gone():
                    self._leave()  # os._exit ends the whole process from any thread
                    return

        threading.Thread(target=watch, name="kfp-bridge-supervisor-watch", daemon=True).start()
        try:
            yield
        finally:
            done.set()

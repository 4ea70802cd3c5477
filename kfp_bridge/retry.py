"""Riding out transient API errors on the worker side: bounded, jittered, deadline-aware.

One helper so every synchronous call the operator makes (find a run by name, read
a run) follows the same budget: ``max_errors`` consecutive
:class:`~kfp_bridge.exceptions.TransientBackendError` are tolerated, backing off
exponentially with jitter, and never sleeping past the caller's deadline.
The trigger has its own async loop with the same policy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from kfp_bridge.exceptions import TransientBackendError

T = TypeVar("T")
MAX_DELAY_SECONDS = 60.0


def backoff_delay(attempt: int, base: float, max_delay: float = MAX_DELAY_SECONDS) -> float:
    """``base * 2**attempt`` capped at ``max_delay``, times a jitter in [0.5, 1.5)."""
    return min(max_delay, base * 2**attempt) * random.uniform(0.5, 1.5)


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    max_errors: int,
    base_delay: float,
    time_left: Callable[[], float | None] = lambda: None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> T:
    """``call()``, retried after up to ``max_errors`` consecutive transient errors.

    ``time_left()`` (seconds, or None for no deadline) caps each sleep; once no
    time is left the last transient error is raised instead of sleeping again.
    """
    log = log or logging.getLogger(__name__)
    attempt = 0
    while True:
        try:
            return call()
        except TransientBackendError as exc:
            attempt += 1
            left = time_left()
            if attempt > max_errors or (left is not None and left <= 0):
                raise
            delay = backoff_delay(attempt, base_delay)
            if left is not None:
                delay = min(delay, left)
            log.warning(
                "Transient error (%s, %d/%d), retrying in %.1fs: %s",
                what,
                attempt,
                max_errors,
                delay,
                exc,
            )
            time.sleep(delay)

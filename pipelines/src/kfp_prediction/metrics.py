"""What a step reports: per-phase timings, reported as KFP ``Metrics`` with its counts."""

from __future__ import annotations

import time
from typing import Any


class Clock:
    """Phase timings, reported as ``seconds_<phase>`` metrics."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, metrics: dict[str, Any], phase: str) -> None:
        now = time.perf_counter()
        metrics[f"seconds_{phase}"] = round(now - self._last, 3)
        self._last = now

"""The files of one local run, shared by ``LocalBackend`` and ``_local_runner.py``.

Standard library only: the runner runs in the *pipeline* environment, started by
path, so it imports this module from its own directory (``import _local_files``);
the backend imports it as ``kfp_bridge.backends._local_files``. One definition of
the layout and of the locking keeps the two sides in step.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Set by the runner for the pipeline's processes: the run's directory. A component that
# publishes its output checks that STATE_FILE still says RUNNING and that the runner in
# PID_FILE lives, right before its os.replace (pipelines/ implements it). It takes no lock:
# an end is written only after the run's processes are gone (backends/local.py).
RUN_DIR_ENV = "KFP_BRIDGE_RUN_DIR"
REQUEST_FILE = "request.json"
STATE_FILE = "state.json"  # replaced atomically, under LOCK_FILE
LOCK_FILE = "state.lock"  # the backend's and the runner's, no one else's
LOG_FILE = "runner.log"
PID_FILE = "pid"
OUTPUTS_FILE = "outputs.json"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace``: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock (``flock``) while reading and replacing its state."""
    with open(run_dir / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))

"""Publish only while the run is live: the check right before a partition is replaced.

The bridge's local backend (``kfp_bridge/backends/local.py``) tells a run's processes
their run directory in ``KFP_BRIDGE_RUN_DIR``. A run it reports FAILED or CANCELED must
never publish afterwards, yet a step can outlive that report's cause (its runner killed,
its wrapper process killed). So the publish (``os.replace``) happens inside
:func:`publishing`, which first checks that the run's state is still PENDING/RUNNING,
that the runner named in its ``pid`` file is alive, and that this process was not
orphaned (its parent is the one that started it). It takes no lock of the backend's:
the backend and its runner write an end only once every process of the run is gone, so
a step that passed the check and then publishes does so before any report of an end.

The file layout is the bridge's (``kfp_bridge/backends/_local_files.py``; a test checks
that both sides agree). Without the variable (KFP and Vertex, where the service stops a
canceled run's pods itself; ``local_run`` and tests) there is nothing to check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_DIR_ENV = "KFP_BRIDGE_RUN_DIR"
STATE_FILE = "state.json"
PID_FILE = "pid"
LIVE_STATES = ("PENDING", "RUNNING")
_PARENT = os.getppid()  # the process that started this step (kfp.local's task wrapper)


class RunNotLiveError(RuntimeError):
    """The run this step belongs to was reported failed or canceled: nothing is published."""

    permanent = False


def _process_alive(pid: int, start_time: str | None) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and (start_time is None or fields[19] == start_time)


def why_not_live(run_dir: Path) -> str | None:
    """None while the run may publish, else why not."""
    if os.getppid() != _PARENT:
        return "this step's parent process is gone (its task wrapper was killed)"
    try:
        state = json.loads((run_dir / STATE_FILE).read_text()).get("state")
    except (OSError, ValueError) as exc:
        return f"its state cannot be read ({exc})"
    if state not in LIVE_STATES:
        return f"the run is {state}"
    try:
        runner = json.loads((run_dir / PID_FILE).read_text())
    except FileNotFoundError:
        return None  # the backend writes it just after starting the runner
    except ValueError as exc:
        return f"its pid file cannot be read ({exc})"
    if not _process_alive(int(runner["pid"]), runner.get("start_time")):
        return f"its runner (pid {runner['pid']}) is gone"
    return None


@contextmanager
def publishing(what: str) -> Iterator[None]:
    """Publish ``what`` inside this block; refuse before it when the run is not live."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        why = why_not_live(Path(run_dir))
        if why is not None:
            raise RunNotLiveError(f"not publishing {what}: {why}")
    yield


def check(what: str) -> None:
    """Refuse now when the run is no longer live (before a publish that is not a block of
    this process, such as a BigQuery job)."""
    with publishing(what):
        pass

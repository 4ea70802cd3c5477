"""Stopping a server process a test started: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Terminate ``proc``, kill it when it outlives ``grace`` seconds, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

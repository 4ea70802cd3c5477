"""A task process orphaned by its supervisor's death stops waiting (issue 21 point 6)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from kfp_bridge.supervision import ORPHAN_EXIT_CODE, SupervisedClock


def test_a_sleep_ends_the_process_once_the_parent_changed():
    parent = {"pid": 100}
    exits = []
    clock = SupervisedClock(getppid=lambda: parent["pid"], exit=exits.append)
    asyncio.run(clock.sleep(0.01))  # parent unchanged: sleeps
    assert exits == []
    parent["pid"] = 1  # reparented to init
    asyncio.run(clock.sleep(3600))  # parent changed: exits at once, without sleeping an hour
    assert exits == [ORPHAN_EXIT_CODE]


def test_an_unchanged_parent_sleeps_the_whole_time():
    clock = SupervisedClock(exit=lambda code: pytest.fail("exited"))
    before = time.monotonic()
    asyncio.run(clock.sleep(0.05))
    assert time.monotonic() - before >= 0.05


# The supervisor (a parent process) starts the "task process", which waits with the
# worker's clock, then the supervisor is SIGKILLed, as in the fault-injection run.
SUPERVISOR = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)
SLEEPING = (
    "import asyncio\n"
    "from kfp_bridge.supervision import SupervisedClock\n"
    "clock = SupervisedClock()\n"
    "print('waiting', flush=True)\n"
    "asyncio.run(clock.sleep(600))\n"
)
# Blocked inside a read of the run (a service that does not answer): no sleep to look from.
BLOCKED_IN_A_CALL = (
    "import time\n"
    "from kfp_bridge.supervision import SupervisedClock\n"
    "from kfp_bridge.waiting import RunWaiter, WaitPolicy\n"
    "class Hanging:\n"
    "    def get_run(self, run_id):\n"
    "        print('waiting', flush=True)\n"
    "        time.sleep(600)\n"
    "RunWaiter(lambda: Hanging(), WaitPolicy(), clock=SupervisedClock()).read('r-1')\n"
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("task", [SLEEPING, BLOCKED_IN_A_CALL], ids=["sleeping", "in_a_call"])
def test_the_orphaned_task_process_exits_instead_of_waiting_on(task):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, task], stdout=subprocess.PIPE, text=True, env=env
    )
    task_pid = int(supervisor.stdout.readline())
    try:
        assert supervisor.stdout.readline().strip() == "waiting"  # its clock knows its parent
        assert not _gone(task_pid)
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        # the task would sleep 600 s; it notices within a slice of the sleep
        deadline = time.monotonic() + 120
        while not _gone(task_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(task_pid), "the orphaned task process is still waiting"
    finally:
        if not _gone(task_pid):
            os.kill(task_pid, signal.SIGKILL)
        supervisor.stdout.close()

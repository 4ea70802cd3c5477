"""The component process's settings: GC off during the run, heap frozen for a fast exit, freed
memory kept by malloc for the next batch."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kfp_prediction.process_tuning import one_shot_process


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    """This test process keeps running: give it back a normal, unfrozen collector."""
    yield
    gc.unfreeze()
    gc.enable()


def test_collector_is_off_in_the_body_then_the_heap_is_frozen() -> None:
    gc.unfreeze()
    with one_shot_process():
        assert not gc.isenabled()
        survivor = [[] for _ in range(1000)]  # tracked containers alive at the end
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(survivor)
    collectable = {id(obj) for obj in gc.get_objects()}  # the permanent generation is not
    assert not any(id(obj) in collectable for obj in survivor)


def test_settings_hold_when_the_run_fails() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError, match="boom"), one_shot_process():
        raise RuntimeError("boom")
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with one_shot_process():
        pass
    assert not gc.isenabled()


# Per round, allocate and touch eight 4 MiB blocks, then free them all, as the predict step
# does per batch; print the page faults of rounds 2 to 21 (the first faults them in either way).
FAULTS = """
import resource, sys
import numpy as np
from kfp_prediction.process_tuning import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def one_round():
    blocks = [np.ones(1 << 19) for _ in range(8)]
    del blocks
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], check=True, capture_output=True, text=True
    )
    return int(proc.stdout.split()[-1])


def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    pages = 8 * (4 << 20) // 4096  # one round's blocks
    assert faults("default") > 5 * pages  # glibc trims what was freed and faults it in again
    assert faults("tuned") < pages // 10  # kept: the next round reuses the same pages

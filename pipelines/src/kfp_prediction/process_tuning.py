"""Settings for the one-shot component process; not for code that imports the steps itself.

A component process starts, imports pandas, pyarrow, DuckDB and scikit-learn (hundreds of
thousands of Python objects), runs once and exits. Two defaults meant for long-lived
processes cost it time (benchmarks/bench_pipeline.py, 1M users):

* Python's cyclic garbage collector walks all of those objects on every full pass: ~0.5 s of
  the imports and ~0.5 s of interpreter shutdown. The big data never go through it (numpy and
  Arrow buffers are freed by reference counting), so it is off for the run.
* glibc's malloc gives freed memory back to the kernel (it trims the heap, and unmaps large
  blocks) so that a long-lived process shrinks. The predict step allocates and frees the same
  few megabytes per batch, so every batch faulted its memory in again: ~60,000 page faults,
  0.2-0.4 s of kernel time per run. Kept for reuse, the same run takes ~15,000. The peak is
  unchanged (the benchmark reports peak RSS); the process simply does not shrink before exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED = 1 << 30  # trim only above 1 GiB of free heap top: in practice never
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks below 32 MiB come from the reusable heap


@contextmanager
def one_shot_process() -> Iterator[None]:
    """No cyclic GC passes in the body, freed memory kept; afterwards freeze the heap.

    ``gc.freeze`` moves every object alive at the end into the permanent generation, which
    later collections (including the ones at interpreter exit) do not scan; collection is
    then re-enabled for the few objects the KFP executor creates while writing outputs. The
    malloc settings are process-wide and stay (``keep_freed_memory``).
    """
    keep_freed_memory()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; False where malloc is not glibc's.

    Setting the thresholds also turns off glibc's own adaptive threshold (mallopt(3)).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED)) and bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )

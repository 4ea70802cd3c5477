"""GC settings for the one-shot component process; not for code that imports the steps itself.

A component process starts, imports pandas, pyarrow, DuckDB and scikit-learn (hundreds of
thousands of Python objects), runs once and exits. Python's cyclic garbage collector walks
all of those objects on every full pass: measured here, ~0.5 s of the imports and ~0.5 s of
interpreter shutdown, next to a ~5 s raw floor at 1M users. The big data never go through the
collector (numpy and Arrow buffers are freed by reference counting), so turning it off for
one run costs no memory that matters; the benchmark reports peak RSS to keep that honest.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_shot_gc() -> Iterator[None]:
    """No cyclic GC passes in the body; afterwards freeze the heap so shutdown skips it.

    ``gc.freeze`` moves every object alive at the end into the permanent generation, which
    later collections (including the ones at interpreter exit) do not scan; collection is
    then re-enabled for the few objects the KFP executor creates while writing outputs.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()

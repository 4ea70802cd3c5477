"""The component process's GC setting: off during the run, heap frozen for a fast exit."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from kfp_prediction.gc_tuning import one_shot_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    """This test process keeps running: give it back a normal, unfrozen collector."""
    yield
    gc.unfreeze()
    gc.enable()


def test_collector_is_off_in_the_body_then_the_heap_is_frozen() -> None:
    gc.unfreeze()
    with one_shot_gc():
        assert not gc.isenabled()
        survivor = [[] for _ in range(1000)]  # tracked containers alive at the end
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(survivor)
    collectable = {id(obj) for obj in gc.get_objects()}  # the permanent generation is not
    assert not any(id(obj) in collectable for obj in survivor)


def test_settings_hold_when_the_run_fails() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError, match="boom"), one_shot_gc():
        raise RuntimeError("boom")
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with one_shot_gc():
        pass
    assert not gc.isenabled()

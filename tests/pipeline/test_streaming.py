"""read_ahead: order, errors at their position, bounded look-ahead, clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
from kfp_prediction.streaming import ordered_map, read_ahead


def test_items_arrive_in_order() -> None:
    assert list(read_ahead(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("batch 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="batch 3"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_producer_stays_at_most_depth_items_ahead() -> None:
    produced = []
    at_limit, beyond = threading.Event(), threading.Event()

    def items() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            # one handed over, two buffered, one produced and waiting for room
            if len(produced) == 1 + 2 + 1:
                at_limit.set()
            elif len(produced) > 1 + 2 + 1:
                beyond.set()
            yield i

    with closing(read_ahead(items(), depth=2)) as stream:
        assert next(stream) == 0
        assert at_limit.wait(10), f"the producer did not run ahead: {produced}"
        # a producer that ignored the depth would go on at once: give it the chance
        assert not beyond.wait(0.3), produced


@pytest.mark.parametrize(
    "stream",
    [
        lambda source: read_ahead(source, depth=2, name="under-test"),
        lambda source: ordered_map(lambda i: i, source, workers=2, name="under-test"),
    ],
    ids=["read_ahead", "ordered_map"],
)
def test_stopping_early_closes_the_source_and_ends_the_threads(stream) -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    threads = threading.active_count()
    with closing(stream(items())) as results:
        assert next(results) == 0
    assert closed.is_set()
    assert threading.active_count() == threads
    assert not [t for t in threading.enumerate() if t.name.startswith("under-test")]


def test_ordered_map_keeps_order_across_threads() -> None:
    def slow_for_even(i: int) -> int:
        time.sleep(0.01 if i % 2 == 0 else 0.0)
        return i * i

    assert list(ordered_map(slow_for_even, range(50), workers=3)) == [i * i for i in range(50)]


def test_ordered_map_error_at_its_position_and_threads_end() -> None:
    started = []

    def fail_on_five(i: int) -> int:
        started.append(i)
        if i == 5:
            raise ValueError("batch 5 is broken")
        return i

    threads = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="batch 5"):
        for item in ordered_map(fail_on_five, range(1000), workers=2, name="under-test"):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert max(started) <= 5 + 2  # bounded: never ran far past the failure
    assert threading.active_count() == threads

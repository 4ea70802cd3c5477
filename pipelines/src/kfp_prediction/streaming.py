"""Threads for the streaming predict step: read ahead, and score batches side by side.

The step reads feature batches, scores them and encodes them into the new partition. All
three release the GIL for their heavy parts (Parquet decoding and encoding, numpy over whole
batches, scikit-learn's Cython tree traversal), so they overlap on separate cores:
``read_ahead`` runs a stage in a thread of its own, ``ordered_map`` scores several batches at
once and hands the results over in order.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_POLL_SECONDS = 0.1
_ITEM, _END, _ERROR = "item", "end", "error"


def read_ahead(items: Iterable[T], depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    An exception in the producer is raised in the consumer at the same position. When the
    consumer stops early (it raised, or closed this generator), the producer finishes the item
    it is working on, stops, closes the source iterator, and this generator's ``close`` returns
    only then: nothing keeps running behind a failed run.
    """
    buffer: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    source = iter(items)

    def put(entry: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_ERROR, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    name: str = "worker",
    initializer: Callable[[], object] | None = None,
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order, bounded ahead.

    At most ``workers + 1`` items are taken from ``items`` before their results are handed
    over. An exception in ``fn`` is raised at that item's position; when the consumer stops
    early, items not yet started are dropped and this generator's ``close`` returns only
    after the running ones finished and every worker thread ended.
    """
    pending: deque[Future[R]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=initializer) as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                while len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            close = getattr(source, "close", None)
            if close is not None:
                close()

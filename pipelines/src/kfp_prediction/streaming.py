"""Read-ahead for the streaming prediction step: each stage in its own thread.

The step fetches user feature batches from the warehouse, scores them and encodes them into
the new partition. All three release the GIL for their heavy parts (DuckDB's Arrow export,
numpy ufuncs over whole batches, Parquet encoding), so a thread per stage lets them overlap
on separate cores instead of running one after the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
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

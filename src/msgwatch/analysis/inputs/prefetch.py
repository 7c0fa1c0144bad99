"""Read a source ahead in a thread, so that decompressing the next unit overlaps the analysis.

A source decompresses a whole unit before it yields the unit's first item (a collector archive
member holds up to a group of measurements: about 100 MB of text in the synthetic benchmark). Read
in the pass's own thread, that decompression stops the pass from handing out work, and the
workers wait. :func:`prefetch` runs the source's ``read`` in a thread of its own and hands its
reads over through a queue bounded in bytes of lines; zlib lets go of the GIL while it inflates,
so the pass goes on submitting what is queued meanwhile.

Rules:

- The reads come out in the source's order, each once; the source's generator is created, run
  and closed in the reader thread only (a source may hold an SQLite connection, which belongs to
  the thread that made it).
- The queue holds at most ``max_bytes`` of item lines (and at least one read), so memory is
  bounded by the source's own unit plus ``max_bytes``.
- An exception of the source is raised to the consumer where the source raised it, after every
  read before it.
- When the consumer stops early (its generator closed, an exception), the reader thread is told
  to stop, closes the source and is joined before :func:`prefetch` returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, cast

from msgwatch.analysis.inputs import Item, Read

MAX_BYTES: Final = 32 * 1024 * 1024
"""Lines queued ahead at most (the default)."""

_DONE: Final = object()


class _Stopped(Exception):
    """The consumer went away: the reader thread ends."""


def prefetch(read: Callable[[], Iterator[Read]], max_bytes: int = MAX_BYTES) -> Iterator[Read]:
    """The reads of ``read()``, produced ahead in a thread (see the module's rules)."""
    queue: deque[object] = deque()
    held = 0  # bytes of lines queued
    changed = threading.Condition()
    stop = threading.Event()

    def put(value: object, size: int) -> None:
        nonlocal held
        with changed:
            while queue and held + size > max_bytes and not stop.is_set():
                changed.wait()
            if stop.is_set():
                raise _Stopped
            queue.append(value)
            held += size
            changed.notify_all()

    def produce() -> None:
        try:
            source = read()
            try:
                for value in source:
                    put(value, len(value.line) if isinstance(value, Item) else 0)
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            put(_DONE, 0)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, raised where the source raised
            with contextlib.suppress(_Stopped):
                put(exc, 0)

    thread = threading.Thread(target=produce, name="msgwatch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            with changed:
                while not queue:
                    changed.wait()
                value = queue.popleft()
                if isinstance(value, Item):
                    held -= len(value.line)
                changed.notify_all()
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield cast(Read, value)
    finally:
        stop.set()
        with changed:
            changed.notify_all()
        thread.join()

"""Reading a source ahead in a thread: same reads in the same order, errors where they happened,
memory bounded, the source run and closed in its own thread, nothing left running."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from msgwatch.analysis.inputs import Item, Mark, Problem, Read
from msgwatch.analysis.inputs.prefetch import prefetch


class Source:
    """Yields ``count`` items of ``size`` bytes (a Mark after each fifth), records its threads,
    the most items it was ahead of the consumer, and whether it was closed."""

    def __init__(self, count: int, size: int = 10, fail_at: int | None = None) -> None:
        self.count, self.size, self.fail_at = count, size, fail_at
        self.threads: set[str] = set()
        self.produced = 0
        self.consumed = 0
        self.most_ahead = 0
        self.closed = False

    def read(self) -> Iterator[Read]:
        try:
            for number in range(self.count):
                self.threads.add(threading.current_thread().name)
                if number == self.fail_at:
                    raise OSError("disk gone")
                self.produced += 1
                self.most_ahead = max(self.most_ahead, self.produced - self.consumed)
                yield Item(line=b"x" * self.size, where=f"f:{number}")
                if number % 5 == 4:
                    yield Problem(f"f:{number}", "not_utf8")
                    yield Mark({"line": number + 1})
        finally:
            self.closed = True


def test_the_reads_come_in_order_from_another_thread() -> None:
    source = Source(23)
    direct = list(Source(23).read())
    got = list(prefetch(source.read))
    assert got == direct
    assert source.threads == {"msgwatch-prefetch"}
    assert source.closed
    assert not [t for t in threading.enumerate() if t.name == "msgwatch-prefetch"]


def test_the_queue_is_bounded_in_bytes() -> None:
    source = Source(200, size=1000)
    for read in prefetch(source.read, max_bytes=10_000):
        if isinstance(read, Item):
            source.consumed += 1
    assert source.consumed == 200
    # 10 lines queued, one being put, one the consumer holds: never the whole source ahead
    assert source.most_ahead <= 12


def test_a_line_larger_than_the_bound_still_passes() -> None:
    source = Source(3, size=50_000)
    assert len([r for r in prefetch(source.read, max_bytes=1000) if isinstance(r, Item)]) == 3


def test_an_error_of_the_source_is_raised_after_the_reads_before_it() -> None:
    source = Source(12, fail_at=7)
    got: list[Read] = []
    with pytest.raises(OSError, match="disk gone"):
        for read in prefetch(source.read):
            got.append(read)
    assert [r.where for r in got if isinstance(r, Item)] == [f"f:{n}" for n in range(7)]
    assert source.closed


def test_a_consumer_that_stops_early_stops_and_joins_the_reader() -> None:
    source = Source(10_000, size=1000)
    reads = prefetch(source.read, max_bytes=5000)
    assert isinstance(next(reads), Item)
    reads.close()  # type: ignore[attr-defined]
    assert source.closed
    assert source.produced < 100
    assert not [t for t in threading.enumerate() if t.name == "msgwatch-prefetch"]

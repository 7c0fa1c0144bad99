"""Executor side: a partition of text lines in, tagged NDJSON rows and counts out (no pyspark).

:func:`analyse_partition` is what ``mapPartitions`` runs on every partition of input lines. It
hands the lines, in chunks, to the DuckDB pass's own worker function
(:func:`msgwatch.analysis.workers.analyse_chunk`), each line made an item as the JSONL and archive
sources make it (:func:`msgwatch.analysis.inputs.records.item_of`), so both engines unwrap archive
records, derive uids, parse, transform and report problems with one piece of code.

Rules:

- Output tuples are ``(tag, payload)``: ``("o", ndjson)`` an observation row, ``("v", ndjson)`` a
  verdict row, ``("n", counts)`` one chunk's :class:`Counts` (items, measurements, skipped,
  problems). A row is one line of JSON with exactly the schema's columns (contract.md).
- An item's ``where`` is the file's path: Spark's text reader gives no line numbers.
- A line's bytes are its text encoded back to UTF-8. Spark's reader decodes invalid UTF-8 with
  replacement characters, so such a line is analysed with them rather than reported ``not_utf8``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from msgwatch.analysis.inputs import Item
from msgwatch.analysis.inputs.records import item_of
from msgwatch.analysis.transform.base import whole
from msgwatch.analysis.workers import CHUNK_ITEMS, ChunkResult, analyse_chunk

Tagged = tuple[str, Any]


@dataclass
class Counts:
    """The figures of one or more chunks (added up on the driver)."""

    items: int = 0
    measurements: int = 0
    observations: int = 0
    verdicts: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: int = 0
    first_problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: Counts, keep: int) -> None:
        """Add ``other``'s figures, keeping at most ``keep`` problems."""
        self.items += other.items
        self.measurements += other.measurements
        self.observations += other.observations
        self.verdicts += other.verdicts
        self.skipped.update(other.skipped)
        self.problems += other.problems
        room = max(0, keep - len(self.first_problems))
        self.first_problems.extend(other.first_problems[:room])


def _lines(pieces: list[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        # split the bytes: text's splitlines() would also cut at U+2028, U+2029 and U+0085,
        # which orjson leaves unescaped inside strings (it escapes only \n and \r)
        yield from piece.splitlines()


def tagged(result: ChunkResult, keep: int) -> Iterator[Tagged]:
    """The rows and the counts of one chunk's result (a measurement line of observations,
    :func:`~msgwatch.analysis.workers.measurement_line`, gives one row per element)."""
    for pieces in result.observations.values():
        for line in _lines(pieces):
            value = orjson.loads(line)
            for row in whole(value["m"], value["r"]):
                yield "o", orjson.dumps(row).decode("utf-8")
    for pieces in result.verdicts.values():
        for line in _lines(pieces):
            yield "v", line.decode("utf-8")
    problems = result.problems
    observations = sum(result.observation_rows.values())
    verdicts = sum(result.verdict_rows.values())
    counts = Counts(result.items, result.measurements, observations, verdicts, result.skipped)
    counts.problems = len(problems)
    counts.first_problems = problems[:keep]
    yield "n", counts


def analyse_partition(
    lines: Iterable[Any], max_line_bytes: int, keep: int = 100
) -> Iterator[Tagged]:
    """The tagged rows of a partition of ``(file, line text)`` pairs (Spark Rows or tuples)."""
    chunk: list[Item] = []
    for file, text in lines:
        if not text.strip():
            continue
        chunk.append(item_of(text.encode("utf-8", "surrogatepass"), str(file)))
        if len(chunk) >= CHUNK_ITEMS:
            yield from tagged(analyse_chunk(chunk, max_line_bytes), keep)
            chunk = []
    if chunk:
        yield from tagged(analyse_chunk(chunk, max_line_bytes), keep)

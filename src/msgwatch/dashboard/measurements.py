"""Where the dashboard finds a raw measurement by its uid: :class:`MeasurementSource`.

:class:`JsonlMeasurements` reads JSONL files (``.jsonl`` or ``.jsonl.gz``, bare measurements or the
collector's archive records), the files an analysis pass read. Rules:

- A measurement's uid is the analysis's own (:func:`msgwatch.analysis.workers.uid_of`): the
  record's, else the measurement's ``measurement_uid``, else ``sha256-`` of the line.
- The index (uid → file and place) is built lazily, once, on the first :meth:`~JsonlMeasurements.get`,
  with the analysis's bounded line reader (:func:`msgwatch.analysis.inputs.lines.read_lines`): a
  line over ``max_line_bytes``, a broken or truncated gzip, a missing or unreadable file, a line
  that is not a JSON object are recorded in :attr:`~JsonlMeasurements.problems` (and logged), never
  raised. At most ``max_entries`` measurements are indexed (then ``index_full``).
- A plain file's measurement is read back from its byte offset; a gzip file's is found again by
  reading the file to its line. A line that no longer gives the uid (the file changed) is None.
- Indexing parses only the lines that may carry their own uid (those holding ``"measurement_uid"``);
  the others are hashed, and a line that is not an object (``{...}``) is ``not_a_measurement``. A
  line is parsed in full when it is asked for.
- The first of several lines with one uid wins. :meth:`~JsonlMeasurements.get` is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from msgwatch.analysis.inputs import Problem
from msgwatch.analysis.inputs.lines import MAX_LINE_BYTES, Line, is_gzip, read_lines
from msgwatch.analysis.inputs.records import item_of
from msgwatch.analysis.workers import uid_of
from msgwatch.durable import open_regular

MAX_ENTRIES: Final = 1_000_000
_log = logging.getLogger(__name__)


class MeasurementSource(Protocol):
    """Raw measurements by uid."""

    def get(self, uid: str) -> dict[str, Any] | None:
        """The measurement (None when the source does not have it)."""
        ...


@dataclass(frozen=True)
class _Place:
    file: int  # index into the paths
    number: int  # the line's number
    start: int | None  # byte offset of a plain file's line, None in a gzip file
    size: int


class JsonlMeasurements:
    """Measurements in JSONL files, found by uid."""

    def __init__(
        self,
        paths: Sequence[Path],
        max_line_bytes: int = MAX_LINE_BYTES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.max_line_bytes = max_line_bytes
        self.max_entries = max_entries
        self.problems: list[Problem] = []
        self._index: dict[str, _Place] | None = None
        self._lock = threading.Lock()

    def get(self, uid: str) -> dict[str, Any] | None:
        """The measurement with that uid, or None."""
        place = self._places().get(uid)
        if place is None:
            return None
        data = self._read(place)
        if data is None:
            return None
        parsed = _parse(data, uid)
        return parsed[1] if parsed is not None and parsed[0] == uid else None

    def _places(self) -> dict[str, _Place]:
        with self._lock:
            if self._index is None:
                self._index = self._build()
            return self._index

    def _build(self) -> dict[str, _Place]:
        index: dict[str, _Place] = {}
        for number, path in enumerate(self.paths):
            gzip = is_gzip(path)
            for read in read_lines(path, max_line_bytes=self.max_line_bytes):
                if isinstance(read, Problem):
                    self._problem(read)
                    continue
                if len(index) >= self.max_entries:
                    self._problem(
                        Problem(str(path), f"index_full: {self.max_entries} measurements")
                    )
                    return index
                uid = _uid(read.data, f"{path}:{read.number}")
                if uid is None:
                    self._problem(Problem(f"{path}:{read.number}", "not_a_measurement"))
                    continue
                index.setdefault(uid, _place(number, read, gzip))
        return index

    def _problem(self, problem: Problem) -> None:
        self.problems.append(problem)
        _log.warning("measurements: %s: %s", problem.where, problem.reason)

    def _read(self, place: _Place) -> bytes | None:
        path = self.paths[place.file]
        if place.start is None:
            for read in read_lines(path, max_line_bytes=self.max_line_bytes):
                if isinstance(read, Line) and read.number == place.number:
                    return read.data
            return None
        try:
            handle = open_regular(path)
            if handle is None:
                return None
            with handle:
                handle.seek(place.start)
                return handle.read(place.size)
        except OSError:
            return None


def _place(file: int, line: Line, gzip: bool) -> _Place:
    """Where a line is: a plain file's lines end at ``line.end`` (after a newline, if any)."""
    start = line.end - len(line.data) - (1 if line.terminated else 0)
    return _Place(file, line.number, None if gzip or start < 0 else start, len(line.data))


def _uid(data: bytes, where: str) -> str | None:
    """The uid of a line, parsing it only when it may hold its own uid; None when it is not a
    JSON object."""
    item = item_of(data, where)
    if item.measurement_uid:
        return item.measurement_uid
    line = item.line.strip()
    if not (line.startswith(b"{") and line.endswith(b"}")):
        return None
    if b'"measurement_uid"' in line:
        parsed = _parse(data, where)
        return None if parsed is None else parsed[0]
    return uid_of(item, {})


def _parse(data: bytes, where: str) -> tuple[str, dict[str, Any]] | None:
    """(uid, measurement) of a line; None when it is not a JSON object."""
    item = item_of(data, where)
    try:
        measurement = orjson.loads(item.line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(measurement, dict):
        return None
    return uid_of(item, measurement), measurement

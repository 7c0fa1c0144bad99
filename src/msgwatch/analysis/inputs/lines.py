"""A bounded, streaming line reader for ``.jsonl`` and ``.jsonl.gz`` files.

:func:`read_lines` yields every non-empty line of a file as a :class:`Line` (its 1-based number,
the uncompressed offset after it, its bytes without the newline) or a
:class:`~msgwatch.analysis.inputs.Problem` naming the file and line. It never raises for what a
file holds.

Rules:

- **Compression is read from the bytes**, not the name: a file starting with gzip's magic is
  decompressed (``zlib.decompressobj(31)``, members one after another, each call's output bounded
  by :data:`CHUNK`); anything else is read as plain text.
- **Memory is bounded by** ``max_line_bytes`` **plus a chunk**, whatever the file holds: a line
  longer than ``max_line_bytes`` is dropped as it streams past, never held whole
  (``line_too_long``).
- ``truncated_gzip``: the file ends inside a gzip member; ``bad_gzip``: its bytes are not gzip
  (damaged deflate data, garbage between members). Either ends the file; the lines before it are
  kept, the incomplete line at that point is dropped.
- ``not_utf8``: the line's bytes are not UTF-8 (that line is skipped).
- ``unreadable: <why>``: the file cannot be opened (missing, not a regular file, a symbolic link:
  :func:`msgwatch.durable.open_regular`) or a read fails.
- Empty lines are skipped (they still count in line numbers). A last line without a newline is a
  line, marked ``terminated=False`` (an incremental reader does not count it as consumed).
- Plain files can be resumed: ``start`` is a byte offset (a :attr:`Line.end` given back) and
  ``first_line`` the number of the line there. Gzip files are always read from the start.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from msgwatch.analysis.inputs import Problem
from msgwatch.durable import open_regular

MAX_LINE_BYTES = 16 * 1024 * 1024
CHUNK = 1 << 18
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31


@dataclass(frozen=True)
class Line:
    """One non-empty line: its number (1-based), the offset after its newline, its bytes."""

    number: int
    end: int
    data: bytes
    terminated: bool = True
    """False for a last line without a newline (a writer may still be writing it)."""


class _Splitter:
    """Cuts a stream of chunks into lines, holding at most ``limit`` bytes of one line."""

    def __init__(self, where: str, limit: int, offset: int, number: int) -> None:
        self.where = where
        self.limit = limit
        self.offset = offset  # stream offset of the next byte fed
        self.number = number  # number of the line being read
        self.pending = bytearray()
        self.too_long = False

    def feed(self, chunk: bytes) -> Iterator[Line | Problem]:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._hold(chunk, start, len(chunk))
                self.offset += len(chunk)
                return
            if self.pending or self.too_long:  # the line began in an earlier chunk
                self._hold(chunk, start, newline)
                data, too_long = self._take()
            else:  # the whole line is in this chunk: one copy
                too_long = newline - start > self.limit
                data = b"" if too_long else chunk[start:newline]
            yield from self._emit(data, too_long, self.offset + newline + 1, terminated=True)
            start = newline + 1

    def finish(self) -> Iterator[Line | Problem]:
        """The last line when the stream ended without a newline."""
        if self.pending or self.too_long:
            data, too_long = self._take()
            yield from self._emit(data, too_long, self.offset, terminated=False)

    def drop(self) -> None:
        """Forget the incomplete line (the stream broke off inside it)."""
        self._take()

    def _hold(self, chunk: bytes, start: int, stop: int) -> None:
        if self.too_long or stop == start:
            return
        if len(self.pending) + stop - start > self.limit:
            self.too_long = True
            self.pending = bytearray()  # released: the rest streams past
            return
        self.pending += chunk[start:stop]

    def _take(self) -> tuple[bytes, bool]:
        data, too_long = bytes(self.pending), self.too_long
        self.pending = bytearray()
        self.too_long = False
        return data, too_long

    def _emit(
        self, data: bytes, too_long: bool, end: int, *, terminated: bool
    ) -> Iterator[Line | Problem]:
        number = self.number
        self.number += 1
        if too_long:
            yield Problem(f"{self.where}:{number}", f"line_too_long: more than {self.limit} bytes")
        elif data.strip():
            if not data.isascii():
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Problem(f"{self.where}:{number}", f"not_utf8: byte {exc.start}")
                    return
            yield Line(number, end, data, terminated)


def read_lines(
    path: Path,
    where: str | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    start: int = 0,
    first_line: int = 1,
) -> Iterator[Line | Problem]:
    """The lines of ``path`` (see the module's rules); ``where`` names the file in problems."""
    name = where or str(path)
    try:
        handle = open_regular(path)
    except OSError as exc:
        yield Problem(name, f"unreadable: {exc.strerror or exc}")
        return
    if handle is None:
        yield Problem(name, "unreadable: missing, a symbolic link or not a regular file")
        return
    with handle:
        try:
            head = handle.read(2)
        except OSError as exc:
            yield Problem(name, f"unreadable: {exc.strerror or exc}")
            return
        if head == GZIP_MAGIC:
            handle.seek(0)
            yield from _gzip_lines(handle, _Splitter(name, max_line_bytes, 0, 1))
        else:
            handle.seek(start)
            yield from _plain_lines(handle, _Splitter(name, max_line_bytes, start, first_line))


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with gzip's magic (False when it cannot be read)."""
    try:
        handle = open_regular(path)
    except OSError:
        return False
    if handle is None:
        return False
    with handle:
        try:
            return handle.read(2) == GZIP_MAGIC
        except OSError:
            return False


def _plain_lines(handle: IO[bytes], splitter: _Splitter) -> Iterator[Line | Problem]:
    while True:
        try:
            chunk = handle.read(CHUNK)
        except OSError as exc:
            yield Problem(splitter.where, f"unreadable: {exc.strerror or exc}")
            return
        if not chunk:
            yield from splitter.finish()
            return
        yield from splitter.feed(chunk)


def _gzip_lines(handle: IO[bytes], splitter: _Splitter) -> Iterator[Line | Problem]:
    decoder = zlib.decompressobj(_GZIP_WBITS)
    in_member = False  # bytes of the current member were fed
    at = 0  # compressed offset of the next byte read
    while True:
        try:
            data = handle.read(CHUNK)
        except OSError as exc:
            yield Problem(splitter.where, f"unreadable: {exc.strerror or exc}")
            return
        if not data:
            break
        at += len(data)
        while data:
            in_member = True
            try:
                while True:
                    out = decoder.decompress(data, CHUNK)
                    yield from splitter.feed(out)
                    if decoder.eof:
                        break
                    data = decoder.unconsumed_tail
                    if not data and len(out) < CHUNK:
                        break
            except zlib.error as exc:
                splitter.drop()
                yield Problem(
                    f"{splitter.where}:{splitter.number}", f"bad_gzip: {exc} (before byte {at})"
                )
                return
            if not decoder.eof:
                break
            data = decoder.unused_data
            decoder = zlib.decompressobj(_GZIP_WBITS)
            in_member = False
    if in_member:
        splitter.drop()
        yield Problem(
            f"{splitter.where}:{splitter.number}", f"truncated_gzip: the file ends at byte {at}"
        )
        return
    yield from splitter.finish()


def file_identity(path: Path, head_bytes: int) -> tuple[os.stat_result, str] | None:
    """``(stat, sha256 of the first head_bytes bytes)`` of a regular file; None when unreadable."""
    try:
        handle = open_regular(path)
    except OSError:
        return None
    if handle is None:
        return None
    with handle:
        try:
            info = os.fstat(handle.fileno())
            head = handle.read(head_bytes)
        except OSError:
            return None
    return info, hashlib.sha256(head).hexdigest()

"""The archive: append-only files of gzip members, one directory per day — the source of truth.

Layout: ``DATA/archive/YYYY-MM-DD/NNNNNN.jsonl.gz`` (``NNNNNN`` counts from ``000001`` within the
day). Every group commit appends **one** gzip member holding one JSON line per measurement (or
several members of at most ``MAX_MEMBER_BYTES`` of text each, for a large group:
:mod:`.writer`)::

    {"measurement_uid", "idempotency_key", "report_id", "received_at", "measurement"}

Concatenated members are one valid gzip stream, so ``zcat`` reads a segment whole; the index points
at a member (``offset``, ``length``) and, inside its decompressed text, at a line, so one
measurement is read back by decompressing one member (at most 16 MiB of text, or its one
larger record) and no more.

Rules:

- Files are only ever appended to, at the offset this process knows to be the end of good data
  (``pwrite``, never ``O_APPEND``): a write is followed by ``fsync`` of the file and, when the file
  (or a directory) was created, of its directory, before :meth:`Archive.append` returns.
- A write or ``fsync`` that fails (``ENOSPC``, ``EROFS``, ``EIO``…) is undone: the file is truncated
  back to the last good offset and synced again. When even that fails the segment is abandoned and
  the next append starts a new one, so a half-written member is always the *last* thing in its file
  and never has a good member after it.
- A segment is closed when the next member would take it past :data:`SEGMENT_LIMIT` (256 MiB) or
  the day ends (the writer passes the day of the group's reception time).
- At start, recovery (in :mod:`.writer`) reads each file beyond what the index holds with
  :class:`MemberScan` and cuts a torn trailing member (:meth:`Archive.cut`): a crash during a write
  leaves at most one, never acknowledged. A damaged region *followed by* good members (damage on
  the disk, not a crash) is skipped and reported, never cut, so good data is not thrown away.
- Reads never take a lock: appended data below an offset the index points at is never rewritten.
- ``DATA/store-id`` names the archive (:func:`make_store_id`): an index belongs to one archive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from msgwatch.durable import fsync_dir, write_durably

logger = logging.getLogger("msgwatch.collector.store")

SEGMENT_LIMIT = 256 * 1024 * 1024
ARCHIVE_DIR = "archive"
SUFFIX = ".jsonl.gz"
STORE_ID_FILE = "store-id"
"""``DATA/store-id``: the archive's name, made once; the index records it and refuses another."""
GZIP_WBITS = 31  # zlib: a gzip header and trailer around the deflate stream
_READ_CHUNK = 1 << 20
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEGMENT = re.compile(r"^(\d{6,})\.jsonl\.gz$")


@dataclass(frozen=True)
class Placement:
    """Where a member was written: ``file`` relative to the data directory."""

    file: str
    offset: int
    length: int


@dataclass(frozen=True)
class Member:
    offset: int
    length: int
    data: bytes
    """The member's decompressed content: JSON lines."""

    @property
    def end(self) -> int:
        return self.offset + self.length


def compress_member(text: bytes, level: int) -> bytes:
    """One gzip member of ``text`` (zlib releases the GIL: call it from a worker thread)."""
    return zlib.compress(text, level, wbits=GZIP_WBITS)


def lines_of(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of every non-empty line of a member's content, without the newline."""
    for start, end in spans_of(data):
        yield start, data[start:end]


def spans_of(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every non-empty line of a member's content, without the newline."""
    start = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        if end > start:
            yield start, end
        start = end + 1


def _joined(parts: list[bytes]) -> bytes:
    """The pieces joined; the list emptied."""
    out = b"".join(parts)
    parts.clear()
    return out


def _decode_member(data: bytes, start: int) -> tuple[int, bytes] | None:
    """``(length, content)`` of a complete, intact member at ``data[start:]``, else ``None``."""
    decoder = zlib.decompressobj(GZIP_WBITS)
    try:
        content = decoder.decompress(data[start:])
    except zlib.error:
        return None
    if not decoder.eof:
        return None
    return len(data) - start - len(decoder.unused_data), content


class MemberScan:
    """The members of one file from ``start`` on, read in chunks.

    Iterate to get each intact :class:`Member`; afterwards :attr:`end` is the offset after the last
    good data, :attr:`torn_at` the offset of a torn (or unreadable) *trailing* member when there is
    one, and :attr:`skipped` the damaged ranges that had good members after them.
    """

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.start = start
        self.end = start
        self.torn_at: int | None = None
        self.skipped: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[Member]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            position = self.start  # file offset of buffer[0]
            buffer = b""
            while True:
                if not buffer:
                    buffer = f.read(_READ_CHUNK)
                    if not buffer:
                        self.end = position
                        return
                decoder = zlib.decompressobj(GZIP_WBITS)
                parts: list[bytes] = []
                fed = 0
                data = buffer
                intact = True
                while True:
                    try:
                        parts.append(decoder.decompress(data))
                    except zlib.error:
                        intact = False
                        break
                    fed += len(data)
                    if decoder.eof:
                        break
                    data = f.read(_READ_CHUNK)
                    if not data:
                        intact = False
                        break
                if intact:
                    rest = decoder.unused_data
                    length = fed - len(rest)
                    # joined and the pieces let go in one call: nothing in this frame keeps the
                    # member's text (or its pieces) alive while the reader works on it
                    yield Member(position, length, _joined(parts))
                    position += length
                    self.end = position
                    buffer = rest
                    continue
                following = self._next_intact_member(f, position + 1)
                if following is None:
                    self.torn_at = position
                    self.end = position
                    return
                logger.warning(
                    "archive %s: damaged bytes %d..%d skipped (good members follow)",
                    self.path,
                    position,
                    following,
                )
                self.skipped.append((position, following))
                f.seek(following)
                position = following
                self.end = position
                buffer = b""

    @staticmethod
    def _next_intact_member(f: BinaryIO, after: int) -> int | None:
        """The offset of the first intact member at or after ``after`` (damage only: slow)."""
        f.seek(after)
        rest = f.read()
        at = rest.find(b"\x1f\x8b\x08")
        while at >= 0:
            if _decode_member(rest, at) is not None:
                return after + at
            at = rest.find(b"\x1f\x8b\x08", at + 1)
        return None


@dataclass
class _Segment:
    file: str
    day: str
    size: int
    durable_name: bool = False
    """Its directory entries were synced by this process (once per segment, before the first
    acknowledgement that relies on it)."""


@dataclass
class Archive:
    """The archive under ``data_dir``; one writer (the store's writer thread), any readers."""

    data_dir: Path
    segment_limit: int = SEGMENT_LIMIT
    _current: _Segment | None = None
    _verified: dict[str, int] = field(default_factory=dict)
    _abandoned: set[str] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return self.data_dir / ARCHIVE_DIR

    def path(self, file: str) -> Path:
        """The path of an archive file named as the index names it (``archive/DAY/NNNNNN...``)."""
        parts = file.split("/")
        if (
            len(parts) != 3
            or parts[0] != ARCHIVE_DIR
            or not _DAY.match(parts[1])
            or not _SEGMENT.match(parts[2])
        ):
            raise ValueError(f"not an archive file name: {file!r}")
        return self.data_dir / file

    def files(self) -> list[str]:
        """Every segment, oldest first."""
        if not self.root.is_dir():
            return []
        out: list[str] = []
        for day in sorted(p.name for p in self.root.iterdir() if _DAY.match(p.name) and p.is_dir()):
            names = [n for n in os.listdir(self.root / day) if _SEGMENT.match(n)]
            out += [f"{ARCHIVE_DIR}/{day}/{n}" for n in sorted(names, key=_segment_number)]
        return out

    def size(self, file: str) -> int:
        return self.path(file).stat().st_size

    def scan(self, file: str, start: int) -> MemberScan:
        return MemberScan(self.path(file), start)

    def verified(self, file: str, size: int) -> None:
        """Recovery saw ``file`` end cleanly at ``size``: the writer may append to it."""
        self._verified[file] = size

    def cut(self, file: str, offset: int) -> None:
        """Cut a torn trailing member; when that fails the file is never appended to again."""
        try:
            fd = os.open(self.path(file), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error("archive %s: cannot cut the torn member at %d: %s", file, offset, exc)
            self._abandoned.add(file)
            return
        logger.warning("archive %s: torn trailing member cut at offset %d", file, offset)
        self.verified(file, offset)

    def current_file(self) -> str | None:
        """The segment the next member goes to, when one is chosen already."""
        current = self._current
        return None if current is None or current.file in self._abandoned else current.file

    # --- writing ---------------------------------------------------------------------------------

    def append(self, day: str, member: bytes) -> Placement:
        """Append one gzip member to ``day``'s segment, durably; ``OSError`` leaves nothing behind."""
        segment = self._segment_for(day, len(member))
        path = self.path(segment.file)
        offset = segment.size
        for directory in (self.root, path.parent):
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
        flags = os.O_WRONLY | os.O_CLOEXEC
        if offset == 0 and not path.exists():
            flags |= os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:  # made by someone else meanwhile: never write into it
            self._abandon(segment)
            raise
        try:
            found = os.fstat(fd).st_size
            if found != offset:  # bytes this process did not write: never write after them
                self._abandon(segment)
                raise OSError(f"{segment.file} is {found} bytes, expected {offset}")
        except OSError:
            os.close(fd)
            raise
        try:
            written = 0
            view = memoryview(member)
            while written < len(member):
                written += os.pwrite(fd, view[written:], offset + written)
            os.fsync(fd)
            if not segment.durable_name:  # the file's name (and its day's) survive a crash
                for directory in (path.parent, self.root, self.data_dir):
                    fsync_dir(directory)
                segment.durable_name = True
        except OSError:
            self._undo(fd, segment, offset)
            raise
        finally:
            os.close(fd)
        segment.size = offset + len(member)
        return Placement(segment.file, offset, len(member))

    def _undo(self, fd: int, segment: _Segment, offset: int) -> None:
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        except OSError as exc:
            logger.error(
                "archive %s: cannot truncate a failed write back to %d (%s); "
                "starting a new segment",
                segment.file,
                offset,
                exc,
            )
            self._abandon(segment)

    def _abandon(self, segment: _Segment) -> None:
        self._abandoned.add(segment.file)
        if self._current is segment:
            self._current = None

    def _segment_for(self, day: str, size: int) -> _Segment:
        current = self._current
        if (
            current is not None
            and current.day == day
            and current.file not in self._abandoned
            and (current.size == 0 or current.size + size <= self.segment_limit)
        ):
            return current
        self._current = self._next_segment(day)
        return self._current

    def _next_segment(self, day: str) -> _Segment:
        directory = self.root / day
        numbers = (
            sorted(_segment_number(n) for n in os.listdir(directory) if _SEGMENT.match(n))
            if directory.is_dir()
            else []
        )
        if numbers:  # carry on with the last segment when recovery saw it end cleanly
            last = f"{ARCHIVE_DIR}/{day}/{numbers[-1]:06d}{SUFFIX}"
            size = self._verified.get(last)
            if (
                size is not None
                and last not in self._abandoned
                and (self._current is None or self._current.file != last)
                and size < self.segment_limit
                and self.path(last).stat().st_size == size
            ):
                return _Segment(last, day, size)
        number = (numbers[-1] + 1) if numbers else 1
        return _Segment(f"{ARCHIVE_DIR}/{day}/{number:06d}{SUFFIX}", day, 0)

    # --- reading ---------------------------------------------------------------------------------

    def read_record(
        self, file: str, member_offset: int, member_length: int, line_offset: int, line_length: int
    ) -> bytes:
        """One JSON line of the archive, found by the index (``OSError``/``ValueError`` if not)."""
        with open(self.path(file), "rb") as f:
            f.seek(member_offset)
            data = f.read(member_length)
        if len(data) != member_length:
            raise ValueError(f"{file}: member at {member_offset} is cut short")
        decoder = zlib.decompressobj(GZIP_WBITS)
        try:
            content = decoder.decompress(data, line_offset + line_length)
        except zlib.error as exc:
            raise ValueError(f"{file}: member at {member_offset} is damaged: {exc}") from exc
        line = content[line_offset : line_offset + line_length]
        if len(line) != line_length:
            raise ValueError(f"{file}: member at {member_offset} has no line at {line_offset}")
        return line


def _segment_number(name: str) -> int:
    match = _SEGMENT.match(name)
    return int(match.group(1)) if match else -1


def read_store_id(data_dir: Path) -> str:
    """The archive's id (``DATA/store-id``); ``OSError`` when there is none."""
    return (data_dir / STORE_ID_FILE).read_text().strip()


def make_store_id(data_dir: Path) -> str:
    """The archive's id, made once (written durably: the index records it)."""
    with contextlib.suppress(FileNotFoundError):
        found = read_store_id(data_dir)
        if found:
            return found
    value = uuid.uuid4().hex
    write_durably(data_dir / STORE_ID_FILE, value.encode() + b"\n", mode=0o644)
    return value

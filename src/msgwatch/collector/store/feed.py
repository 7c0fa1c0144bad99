"""The collector's archive as an analysis source: every stored measurement once, incrementally.

``ArchiveSource(data_dir)`` implements :class:`msgwatch.analysis.inputs.Source` over a data
directory, read-only (no lock, no recovery: it runs beside a live collector, like the export). Its
name is ``archive:<store-id>``; its checkpoint is ``{archive file: offset}``, the offset after the
last member read whole.

Rules:

- **Archive order**, files oldest first, members as appended, from each file's checkpoint offset;
  a file no longer than its offset is not opened. An item per record the index holds
  (:meth:`~.index.Index.canonical_uids`, asked when the read reaches the file): ``line`` is the
  record's measurement JSON (cut out without parsing it, :mod:`msgwatch.analysis.inputs.records`),
  ``where`` ``<file>@<member offset>:<line in member>``, with the record's uid, reception time and
  probe tag (the idempotency key before its first dot). A Mark follows every member. Items are
  cut out of the member's text as they are taken and the text is let go before the next member
  is decompressed, so a read holds one member's text, not its items or the member before.
- **Uncommitted groups wait.** The writer appends a member, then commits its rows in one
  transaction, so a member none of whose records the index holds is either a running collector's
  group not yet committed or an orphan whose commit failed for good. It is held: when a later
  member of the file has indexed records, or a later file does, its fate was settled before those
  were committed, so it is skipped as an orphan; otherwise the file stops before it and the next
  read starts there. A member with some records indexed was committed: the others (recovery's
  refused rows, lost orphans' twins) are skipped.
- **What cannot be read is a problem, never an exception**: no store or index
  (``unreadable: …``), damaged bytes skipped by the member scan (``bad_gzip``), a line that is not a
  record (``not_a_record``), a file shorter than its checkpoint (``archive_shrunk``: read again
  from the start). A torn trailing member (being written, or a crash's, cut at the next start) ends
  the file for this read.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from msgwatch.analysis.inputs import Checkpoint, Item, Mark, Problem, Read
from msgwatch.analysis.inputs.records import record_item, unwrap, unwrap_at
from msgwatch.collector.store import open_reader
from msgwatch.collector.store.archive import read_store_id, spans_of
from msgwatch.collector.store.base import StoreUnavailable
from msgwatch.collector.store.records import dumps, parse_record
from msgwatch.collector.store.scan import StoreReader


class ArchiveSource:
    """The stored measurements of ``data_dir`` (see the module's rules)."""

    def __init__(self, data_dir: Path, database: str | None = None) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))
        self.database = database
        try:
            self.store_id: str | None = read_store_id(self.data_dir)
        except OSError:
            self.store_id = None

    @property
    def name(self) -> str:
        return f"archive:{self.store_id or self.data_dir}"

    def bytes_left(self, checkpoint: Checkpoint | None) -> int:
        """The archive's bytes after ``checkpoint``'s offsets (as the Marks' sizes count them)."""
        offsets = checkpoint if isinstance(checkpoint, dict) else {}
        with open_reader(self.data_dir, self.database) as reader:
            archive = reader.archive
            left = 0
            for file in archive.files():
                start = offsets.get(file, 0)
                start = start if isinstance(start, int) and start >= 0 else 0
                size = archive.size(file)
                left += size - start if size >= start else size
            return left

    def read(self, checkpoint: Checkpoint | None) -> Iterator[Read]:
        offsets: dict[str, int] = (
            {k: v for k, v in checkpoint.items() if isinstance(v, int) and v >= 0}
            if isinstance(checkpoint, dict)
            else {}
        )
        try:
            reader = open_reader(self.data_dir, self.database)
        except (StoreUnavailable, OSError) as exc:
            yield Problem(str(self.data_dir), f"unreadable: {exc}")
            yield Mark(offsets)
            return
        with reader:
            try:
                yield from _Feed(reader, offsets).read()
            except (StoreUnavailable, OSError) as exc:
                yield Problem(str(self.data_dir), f"unreadable: {exc}")
        yield Mark(dict(offsets))


class _Feed:
    """One read of the archive, advancing ``offsets`` in place."""

    def __init__(self, reader: StoreReader, offsets: dict[str, int]) -> None:
        self.archive = reader.archive
        self.index = reader.index
        self.offsets = offsets

    def read(self) -> Iterator[Read]:
        files = self.archive.files()
        for stale in set(self.offsets) - set(files):
            del self.offsets[stale]
        for position, file in enumerate(files):
            start = self.offsets.get(file, 0)
            size = self.archive.size(file)
            if size < start:
                yield Problem(file, f"archive_shrunk: {size} bytes, {start} were read")
                start = self.offsets[file] = 0
            if size == start:
                continue
            stored = self.index.canonical_uids(file, None, None)
            held = yield from self._members(file, start, stored, final=False)
            if held is None:
                continue
            if not any(self.index.canonical_uids(f, None, None) for f in files[position + 1 :]):
                return  # a running collector's group not yet committed: the next read takes it
            stored = self.index.canonical_uids(file, None, None)  # settled before the later ones
            yield from self._members(file, held, stored, final=True)

    def _members(
        self, file: str, start: int, stored: set[str], *, final: bool
    ) -> Generator[Read, None, int | None]:
        """Yield the stored records of ``file`` from ``start``; return the offset of the first
        member held (none of its records indexed, nothing indexed after it) or None."""
        scan = self.archive.scan(file, start)
        counted = start  # the bytes up to here are in a Mark's size
        held: int | None = None
        skipped = 0
        done: set[str | None] = set()
        for member in scan:
            # (line number, header or None, start, end) in member.data: a record's header and its
            # measurement's span, else the line's, cut out again by _record
            items: list[tuple[int, dict[str, Any] | None, int, int]] = []
            missing = False
            for number, (start, end) in enumerate(spans_of(member.data), 1):
                where = f"{file}@{member.offset}:{number}"
                found = unwrap_at(member.data, start, end)  # the header only: no copy yet
                header: dict[str, Any] | None = None
                read: Item | Problem | None = None
                if found is not None:
                    header, start, end = found
                    uid = header["measurement_uid"]
                else:
                    read = _record(member.data[start:end], where)
                    uid = read.measurement_uid if isinstance(read, Item) else None
                if isinstance(read, Problem):
                    yield read
                elif uid in stored:
                    stored.discard(uid)  # each once, even if a damaged file repeats a member
                    done.add(uid)
                    items.append((number, header, start, end))
                elif uid not in done:
                    missing = True
            for begin, end in scan.skipped[skipped:]:
                yield Problem(f"{file}@{begin}", f"bad_gzip: damaged bytes {begin}..{end} skipped")
            skipped = len(scan.skipped)
            if missing and not items and not final:
                held = member.offset if held is None else held
                del member  # not held while the scan decompresses the next one
                continue
            held = None  # anything held before this member was an orphan
            for number, header, start, end in items:  # cut out now: a member's items are not held
                where = f"{file}@{member.offset}:{number}"
                if header is None:
                    yield _record(member.data[start:end], where)
                else:
                    yield record_item(header, member.data[start:end], where)
            self.offsets[file] = member.end
            size, counted = max(0, member.end - counted), max(counted, member.end)
            del member  # not held while the scan decompresses the next one
            yield Mark(dict(self.offsets), size)
        if held is None and scan.torn_at is None:
            self.offsets[file] = scan.end
        return held


def _record(line: bytes, where: str) -> Item | Problem:
    """The item of one archive line (the measurement cut out; parsed only when not of the
    writer's shape)."""
    unwrapped = unwrap(line)
    if unwrapped is not None:
        return record_item(*unwrapped, where)
    record = parse_record(line)
    if record is None:
        return Problem(where, "not_a_record")
    header = {
        "measurement_uid": record.uid,
        "idempotency_key": record.idempotency_key,
        "received_at": record.received_at,
    }
    return record_item(header, dumps(record.measurement), where)

"""The public scan of the store: every stored measurement, in the order it was written.

``DurableStore.scan(since, until)`` (asynchronous, in a running collector) and
``StoreReader.scan(since, until)`` (synchronous, beside one: ``store.open_reader``) yield
:class:`~.records.Record` objects. They are what the export and the analysis read; nothing
outside the store reads the archive or the index itself.

Rules:

- **Each stored measurement exactly once.** The archive is read (it is the source of truth) and a
  record is yielded only when the index holds its uid as the measurement of its key. That skips
  what the archive may hold without being a stored measurement — a group written and synced whose
  index commit failed, followed by the client's retry written again under a new uid (see
  :mod:`.writer`) — and what a running collector has written but not yet committed: a file's
  stored uids are read from the index when the scan reaches that file.
- **Archive order**: files oldest first, then members and lines as they were appended; so
  roughly by reception time, not by ``measurement_start_time``.
- **Bounds** select on ``measurement_start_time`` like the read API: ``since`` inclusive,
  ``until`` exclusive, each a ``date``, a ``datetime`` (naive: UTC) or the text
  ``YYYY-MM-DD[( |T)HH:MM:SS]``. The index answers which uids of each archive file are in range,
  so files with nothing in range are not even read.
- **A torn trailing member is not an error** (a running collector may be writing it, or a crash
  left it for the next start's recovery): the scan ends that file before it. Damaged bytes with
  good members after them are skipped (:class:`~.archive.MemberScan`).
- The index raises :class:`~.base.StoreUnavailable`; the archive ``OSError``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType

from msgwatch.collector.store.archive import Archive, lines_of, read_store_id
from msgwatch.collector.store.base import TimeBound
from msgwatch.collector.store.index import Index
from msgwatch.collector.store.records import Record, parse_record

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")


def time_bound(value: TimeBound) -> str | None:
    """A bound as the index compares it: ``YYYY-MM-DD HH:MM:SS`` (a day means its midnight);
    ``ValueError`` for text of another form."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d 00:00:00")
    text = value.strip().replace("T", " ")
    if not _TIME.match(text):
        raise ValueError(f"not YYYY-MM-DD[ HH:MM:SS]: {value!r}")
    return text if len(text) > 10 else text + " 00:00:00"


def scan_records(
    archive: Archive, index: Index, since: str | None, until: str | None
) -> Generator[Record, None, None]:
    """The stored records in range (bounds as :func:`time_bound` makes them), in archive order,
    each once (blocking: run it on a worker thread in an event loop)."""
    for file in archive.files():
        stored = index.canonical_uids(file, since, until)
        if not stored:
            continue
        for member in archive.scan(file, 0):
            for _, line in lines_of(member.data):
                record = parse_record(line)
                if record is None or record.uid not in stored:
                    continue
                stored.discard(record.uid)  # each once, even if a damaged file repeated a member
                yield record
                if not stored:
                    break
            if not stored:
                break


class StoreReader:
    """A read-only view of a data directory: no lock, no recovery, so it can run beside a live
    collector (the export's way in). Use it as a context manager; it closes the index."""

    def __init__(self, data_dir: Path, index: Index) -> None:
        self.archive = Archive(data_dir)
        self.index = index

    def check(self) -> StoreReader:
        """Refuse an index of another archive (``StoreUnavailable``; ``OSError`` when the data
        directory has no ``store-id``, so no archive). Returns self."""
        self.index.check_identity(read_store_id(self.archive.data_dir))
        return self

    def scan(self, since: TimeBound = None, until: TimeBound = None) -> Iterator[Record]:
        """The stored records in range, in archive order, each once (the module's rules)."""
        return scan_records(self.archive, self.index, time_bound(since), time_bound(until))

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

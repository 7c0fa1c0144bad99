"""Recovery at open: the index is made equal to the archive before anything is served.

Rules:

- Every archive file is compared with the index's ``archive_progress``. A file whose size is what
  the index covers is verified (the writer may append to it). A file *shorter* than that lost data:
  it is reported and never appended to again.
- What lies beyond the progress is read member by member (:class:`~.archive.MemberScan`) and each
  record indexed, in batches of :data:`RECOVERY_BATCH`, unless its key is already indexed: then
  the record is a lost orphan (its retry was stored under another uid) and the key keeps its uid.
  An unreadable record is reported and skipped.
- A torn trailing member (a crash during a write: never acknowledged) is cut
  (:meth:`~.archive.Archive.cut`).
- A batch the index refuses is retried row by row when the database answers (one row is at fault:
  it is skipped and reported); when it does not answer, opening fails.

So after a ``kill -9`` at any instant the index equals the archive, and a client's retry of an
unacknowledged measurement gets the uid the recovered record has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from msgwatch.collector.store.archive import Archive, lines_of
from msgwatch.collector.store.base import StoreUnavailable
from msgwatch.collector.store.index import Index, IndexRow
from msgwatch.collector.store.records import parse_record
from msgwatch.collector.summary import summarise

logger = logging.getLogger("msgwatch.collector.store")

RECOVERY_BATCH = 2000


def recover(archive: Archive, index: Index) -> int:
    """Index what ``archive`` holds beyond ``index``'s progress, cut a torn trailing member;
    returns how many records were indexed (the module's rules). Writer thread only."""
    progress = index.progress()
    recovered = 0
    for file in archive.files():
        size = archive.size(file)
        done = progress.get(file, 0)
        if size == done:
            archive.verified(file, size)
            continue
        if size < done:
            logger.error(
                "archive %s is %d bytes but %d are indexed: it lost data; never appending "
                "to it again",
                file,
                size,
                done,
            )
            continue
        scan = archive.scan(file, done)
        batch: list[IndexRow] = []
        for member in scan:
            for line_offset, line in lines_of(member.data):
                row = row_from_line(file, member.offset, member.length, line_offset, line)
                if row is None:
                    logger.error("archive %s: unreadable record in member %d", file, member.offset)
                    continue
                batch.append(row)
            if len(batch) >= RECOVERY_BATCH:
                recovered += _index_recovered(index, batch, {file: member.end})
                batch = []
        recovered += _index_recovered(index, batch, {file: scan.end})
        if scan.torn_at is not None:
            archive.cut(file, scan.torn_at)
        else:
            archive.verified(file, scan.end)
    return recovered


def _index_recovered(index: Index, rows: list[IndexRow], progress: Mapping[str, int]) -> int:
    """Index ``rows`` and ``progress``; a row the index refuses is skipped, not fatal."""
    existing = index.lookup_keys({r.idempotency_key for r in rows}) if rows else {}
    fresh: list[IndexRow] = []
    seen: set[str] = set()
    for row in rows:  # a key already indexed keeps its uid: this record is a lost orphan
        if row.idempotency_key not in existing and row.idempotency_key not in seen:
            seen.add(row.idempotency_key)
            fresh.append(row)
    try:
        index.commit(fresh, progress)
        return len(fresh)
    except StoreUnavailable:
        index.ping()  # the database is down: give up, opening fails
    indexed = 0
    for row in fresh:  # the database is up, so one row is at fault: find it, skip it
        try:
            index.commit([row], {})
            indexed += 1
        except StoreUnavailable as exc:
            logger.error("recovery: cannot index %s, skipped: %s", row.uid, exc)
    index.commit([], progress)
    return indexed


def row_from_line(
    file: str, member_offset: int, member_length: int, line_offset: int, line: bytes
) -> IndexRow | None:
    """The index row of one archive line (``None`` when it is not a record)."""
    record = parse_record(line)
    if record is None:
        return None
    return IndexRow(
        uid=record.uid,
        idempotency_key=record.idempotency_key,
        received_at=record.received_at,
        summary=summarise(record.measurement, record.report_id),
        archive_file=file,
        member_offset=member_offset,
        member_length=member_length,
        line_offset=line_offset,
        line_length=len(line),
    )

"""The durable store: group commit of archive and index, reads, health, scans.

How a write works. :meth:`DurableStore.put_many` queues its items with a future and waits. One
writer task takes *everything* queued (up to :data:`MAX_GROUP_ITEMS`) as a group and hands it to
the writer thread, which

1. encodes each measurement (orjson) and its summary row;
2. looks every key of the group up in the index, in one query;
3. gives each new key a uid; a key already stored, or seen earlier in the group, gets the first
   uid and ``duplicate=True`` and nothing is written for it;
4. compresses the new lines into **one** gzip member, or into several of at most
   :data:`MAX_MEMBER_BYTES` of text each when the group is larger (zlib releases the GIL, so the
   event loop keeps serving meanwhile), appends them to the day's segment in one write and
   ``fsync``s it;
5. commits the index rows and the archive progress in **one** transaction;

and only then is every waiter of the group answered. While a group is being written the next one
gathers, so under load groups grow by themselves and one ``fsync`` and one commit are shared by many
measurements; with a single client a group is a single call and nothing waits for a timer.

Failures. Any ``OSError`` of the archive or any database error fails the whole group with
:class:`StoreUnavailable` and acknowledges nothing. A failed archive write is truncated away (see
:mod:`.archive`). A member written and synced whose index commit then failed (disk full under
SQLite, the database gone mid-transaction) stays in the archive: its rows are kept as *orphans* and
go into the next group's transaction, and a retry of one of their keys gets the orphan's uid — so
the archive and the index stay equal and nothing is written twice. Orphans get that one more
chance; if that commit fails too they are dropped (they stay in the archive without an index row
unless the next start's recovery reaches them; the scan (:mod:`.scan`) skips such
records). A commit whose outcome is unknown (connection lost during ``COMMIT``) is resolved by the
next group's key lookup: an orphan already in the index is simply forgotten.

Recovery (:mod:`.recovery`, in :meth:`DurableStore.open` before anything is served) indexes what
the archive holds beyond the index's progress and cuts a torn trailing member, so after a
``kill -9`` at any instant the index equals the archive.

Health (``/health``): ``unavailable`` when the index does not answer, when the archive's file system
is read-only or has no free block, or — after a write failed — while a probe still fails (opening
the current segment for writing, and writing and syncing 64 KiB beside it), so it turns ``ok`` as
soon as writing would work again, before any client retries. The counters it reports (groups,
stored, duplicates, failed groups, queued calls) become the collector's ``/metrics``.

Scans (:meth:`DurableStore.scan`, rules in :mod:`.scan`) read the archive on the reader threads,
beside the writer. The archive's record codec is :mod:`.records`.

One collector per data directory: ``DATA/collector.lock`` is held (``flock``) while the store is
open. ``DATA/store-id`` names the archive; the index records it and refuses another one.

UIDs: ``<received UTC %Y%m%d%H%M%S.%f>_<CC>_<test_name, letters and digits only>_<16 hex>``,
OONI's shape; all measurements of a group share the reception time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import itertools
import logging
import os
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.collector.store.archive import Archive, compress_member, make_store_id
from msgwatch.collector.store.base import (
    Page,
    Query,
    Receipt,
    StoreUnavailable,
    Submission,
    TimeBound,
)
from msgwatch.collector.store.index import Index, IndexRow
from msgwatch.collector.store.records import Record, dumps, parse_record, record_line
from msgwatch.collector.store.recovery import recover
from msgwatch.collector.store.scan import scan_records, time_bound
from msgwatch.collector.summary import SummaryRow, summarise

logger = logging.getLogger("msgwatch.collector.store")

#: zlib level of the archive: 1 compresses 18 KB measurements ~6x at ~220 MB/s on one core;
#: 6 gains ~30 % in size for 2.5x the CPU, which the collector's two cores cannot spare.
COMPRESSION_LEVEL = 1
MAX_GROUP_ITEMS = 5000
MAX_MEMBER_BYTES = 16 * 1024 * 1024
"""A group's records above this many bytes of text go into more than one gzip member (written
and made durable together, in one write): a reader of the archive decompresses one member at a
time, so its memory is bounded by this, not by the group's size (up to 5,000 measurements of up
to 4 MiB each). A single record larger than this is a member alone."""
READER_THREADS = 4
#: The health probe writes this much to the archive's file system after a failed write.
HEALTH_PROBE_BYTES = 64 * 1024

LOCK_FILE = "collector.lock"
SCAN_BATCH = 256
"""Records a scan reads on a worker thread per step of its asynchronous iteration."""
_TEST_NAME = re.compile(r"[^A-Za-z0-9]")
_CC = re.compile(r"^[A-Z]{2}$")


@dataclass
class _Request:
    items: Sequence[Submission]
    future: asyncio.Future[list[Receipt]]


@dataclass(frozen=True)
class _Item:
    key: str
    report_id: str | None
    measurement_json: bytes
    summary: SummaryRow


class _Stats:
    def __init__(self) -> None:
        self.groups = 0
        self.stored = 0
        self.duplicates = 0
        self.failed_groups = 0
        self.last_error: str | None = None
        self.last_failure_at: float | None = None
        self.last_write_ok = True


def make_uid(now: dt.datetime, probe_cc: str, test_name: str) -> str:
    cc = probe_cc.upper() if _CC.match(probe_cc.upper()) else "ZZ"
    test = _TEST_NAME.sub("", test_name) or "unknown"
    return f"{now.strftime('%Y%m%d%H%M%S.%f')}_{cc}_{test}_{secrets.token_hex(8)}"


def received_text(now: dt.datetime) -> str:
    """``received_at`` as stored and served: ISO 8601 UTC with microseconds."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DurableStore:
    """The :class:`~msgwatch.collector.store.base.Store` of the collector (archive + index)."""

    def __init__(
        self,
        data_dir: Path,
        index: Index,
        *,
        compression_level: int = COMPRESSION_LEVEL,
        archive: Archive | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.index = index
        self.archive = archive if archive is not None else Archive(data_dir)
        self.compression_level = compression_level
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="msgwatch-store-writer")
        self._reader_pool = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="msgwatch-store-reader"
        )
        self._pending: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._lock_fd: int | None = None
        self._orphans: dict[str, IndexRow] = {}
        self._orphan_progress: dict[str, int] = {}
        self.stats = _Stats()

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        index: Index,
        *,
        compression_level: int = COMPRESSION_LEVEL,
        archive: Archive | None = None,
    ) -> DurableStore:
        """Lock the data directory, prepare the index, recover, start the writer."""
        store = cls(data_dir, index, compression_level=compression_level, archive=archive)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(store._writer_pool, store._open_sync)
        except BaseException:
            await store._shutdown()
            raise
        store._task = asyncio.create_task(store._run(), name="msgwatch-store-writer")
        return store

    def _open_sync(self) -> None:
        make_data_dir(self.data_dir)
        self._lock_fd = _lock(self.data_dir / LOCK_FILE)
        try:
            store_id = make_store_id(self.data_dir)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot write in the data directory {self.data_dir}: {exc.strerror or exc}",
                fix=WRITABLE_FIX,
            ) from exc
        self.index.open_writer(store_id)
        started = time.monotonic()
        try:
            recovered = recover(self.archive, self.index)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the archive: {exc}") from exc
        if recovered:
            logger.warning(
                "recovery: %d measurements indexed from the archive in %.2f s",
                recovered,
                time.monotonic() - started,
            )

    # --- writing ---------------------------------------------------------------------------------

    async def put_many(self, items: Sequence[Submission]) -> list[Receipt]:
        if not items:
            return []
        if self._closing:
            raise StoreUnavailable("the store is closed")
        future: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(items), future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = self._take_group()
                if not group:
                    continue
                try:
                    outcomes = await loop.run_in_executor(
                        self._writer_pool, self._commit_group, group
                    )
                except Exception as exc:  # a bug: fail the group, keep the writer alive
                    logger.exception("the store's writer failed")
                    outcomes = [StoreUnavailable(f"internal error: {exc}")] * len(group)
                for request, outcome in zip(group, outcomes, strict=True):
                    if request.future.done():  # the caller went away
                        continue
                    if isinstance(outcome, BaseException):
                        request.future.set_exception(_copy(outcome))
                    else:
                        request.future.set_result(outcome)
            if self._closing and not self._pending:
                return

    def _take_group(self) -> list[_Request]:
        group: list[_Request] = []
        count = 0
        while self._pending and (
            not group or count + len(self._pending[0].items) <= MAX_GROUP_ITEMS
        ):
            request = self._pending.popleft()
            if request.future.done():  # cancelled before its turn: nobody to acknowledge
                continue
            group.append(request)
            count += len(request.items)
        return group

    def _commit_group(self, group: Sequence[_Request]) -> list[list[Receipt] | BaseException]:
        """Write one group (writer thread): see the module's docstring."""
        now = dt.datetime.now(dt.UTC)
        received_at = received_text(now)
        encoded: list[list[_Item] | BaseException] = []
        for request in group:
            try:
                encoded.append([_encode(s) for s in request.items])
            except ValueError as exc:
                encoded.append(exc)
        try:
            receipts = self._write(encoded, now, received_at)
        except StoreUnavailable as exc:
            self.stats.failed_groups += 1
            self.stats.last_write_ok = False
            self.stats.last_error = str(exc)
            self.stats.last_failure_at = time.time()
            return [e if isinstance(e, BaseException) else exc for e in encoded]
        self.stats.groups += 1
        self.stats.last_write_ok = True
        return receipts

    def _write(
        self, encoded: list[list[_Item] | BaseException], now: dt.datetime, received_at: str
    ) -> list[list[Receipt] | BaseException]:
        keys = {item.key for items in encoded if isinstance(items, list) for item in items}
        keys |= set(self._orphans)
        existing = self.index.lookup_keys(keys) if keys else {}
        for key in [k for k in self._orphans if k in existing]:
            del self._orphans[key]  # an unknown commit outcome that did commit
        assigned: dict[str, str] = {}
        new: list[tuple[_Item, str]] = []
        results: list[list[Receipt] | BaseException] = []
        duplicates = 0
        for items in encoded:
            if isinstance(items, BaseException):
                results.append(items)
                continue
            receipts: list[Receipt] = []
            for item in items:
                uid = existing.get(item.key) or assigned.get(item.key)
                if uid is not None:
                    receipts.append(Receipt(uid, duplicate=True))
                    duplicates += 1
                    continue
                orphan = self._orphans.get(item.key)
                uid = (
                    orphan.uid
                    if orphan is not None
                    else make_uid(now, item.summary.probe_cc, item.summary.test_name)
                )
                if orphan is None:
                    new.append((item, uid))
                assigned[item.key] = uid
                receipts.append(Receipt(uid, duplicate=False))
            results.append(receipts)
        rows, written = self._append(new, now, received_at)
        progress = dict(self._orphan_progress)
        for file, end in written.items():
            progress[file] = max(end, progress.get(file, 0))
        to_index = [*self._orphans.values(), *rows]
        if to_index:
            try:
                self.index.commit(to_index, progress)
            except StoreUnavailable:
                # the member is in the archive; its rows get one more chance with the next group
                # (earlier orphans had theirs: they stay in the archive without an index row)
                self._orphans = {row.idempotency_key: row for row in rows}
                self._orphan_progress = written
                raise
        self._orphans, self._orphan_progress = {}, {}
        self.stats.stored += len(assigned)
        self.stats.duplicates += duplicates
        return results

    def _append(
        self, new: list[tuple[_Item, str]], now: dt.datetime, received_at: str
    ) -> tuple[list[IndexRow], dict[str, int]]:
        """The new records as members of at most :data:`MAX_MEMBER_BYTES` of text, appended in one
        write; their rows and the file's progress."""
        if not new:
            return [], {}
        members: list[bytes] = []  # compressed, in archive order
        places: list[tuple[int, int, int]] = []  # per record: its member, line offset, length
        lines: list[bytes] = []
        offset = 0
        for item, uid in new:
            line = record_line(uid, item.key, item.report_id, received_at, item.measurement_json)
            if lines and offset + len(line) + 1 > MAX_MEMBER_BYTES:
                members.append(self._member(lines))
                lines, offset = [], 0
            lines.append(line)
            places.append((len(members), offset, len(line)))
            offset += len(line) + 1
        members.append(self._member(lines))
        try:
            placement = self.archive.append(now.strftime("%Y-%m-%d"), b"".join(members))
        except OSError as exc:
            raise StoreUnavailable(f"cannot write the archive: {exc}") from exc
        starts = [placement.offset]
        for member in members:
            starts.append(starts[-1] + len(member))
        rows = [
            IndexRow(
                uid=uid,
                idempotency_key=item.key,
                received_at=received_at,
                summary=item.summary,
                archive_file=placement.file,
                member_offset=starts[number],
                member_length=len(members[number]),
                line_offset=line_offset,
                line_length=line_length,
            )
            for (item, uid), (number, line_offset, line_length) in zip(new, places, strict=True)
        ]
        return rows, {placement.file: placement.offset + placement.length}

    def _member(self, lines: list[bytes]) -> bytes:
        """One gzip member of ``lines``, each ended by a newline."""
        return compress_member(b"\n".join([*lines, b""]), self.compression_level)

    # --- reading ---------------------------------------------------------------------------------

    async def get(self, measurement_uid: str) -> dict[str, Any] | None:
        if len(measurement_uid) > 256:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._get_sync, measurement_uid)

    def _get_sync(self, uid: str) -> dict[str, Any] | None:
        location = self.index.locate(uid)
        if location is None:
            return None
        try:
            line = self.archive.read_record(
                location.archive_file,
                location.member_offset,
                location.member_length,
                location.line_offset,
                location.line_length,
            )
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(f"cannot read {uid} from the archive: {exc}") from exc
        record = parse_record(line)
        if record is None or record.uid != uid:
            raise StoreUnavailable(f"the archive does not hold {uid} where the index says")
        return record.measurement

    async def scan(
        self, since: TimeBound = None, until: TimeBound = None
    ) -> AsyncGenerator[Record, None]:
        """The stored records in range, in archive order, each once (:mod:`.scan`); read on the
        reader threads, :data:`SCAN_BATCH` at a time."""
        first, last = time_bound(since), time_bound(until)
        records = scan_records(self.archive, self.index, first, last)
        loop = asyncio.get_running_loop()
        try:
            while batch := await loop.run_in_executor(self._reader_pool, _take, records):
                for record in batch:
                    yield record
        finally:
            with contextlib.suppress(ValueError):  # still running on a thread: left to the GC
                records.close()

    async def query(self, query: Query) -> Page:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self.index.query, query)

    async def health(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._health_sync)

    def _health_sync(self) -> dict[str, Any]:
        index_error: str | None = None
        try:
            self.index.ping()
        except StoreUnavailable as exc:
            index_error = str(exc)
        archive_error: str | None = None
        free = 0
        current = self.archive.current_file()
        directory = self.archive.path(current).parent if current else self.archive.root
        if not directory.is_dir():
            directory = self.data_dir
        try:
            vfs = os.statvfs(directory)
            free = vfs.f_bavail * vfs.f_frsize
            if vfs.f_flag & os.ST_RDONLY:
                archive_error = "the archive's file system is read-only"
            elif free == 0:
                archive_error = "the archive's file system is full"
            elif not self.stats.last_write_ok:  # the last write failed: would it work now?
                if current is not None:
                    os.close(os.open(self.archive.path(current), os.O_WRONLY | os.O_CLOEXEC))
                _probe_write(directory)
        except OSError as exc:
            archive_error = f"the archive cannot be written: {exc}"
        ok = index_error is None and archive_error is None and not self._closing
        report: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "archive": {"writable": archive_error is None, "free_bytes": free},
            "index": {"backend": self.index.backend, "reachable": index_error is None},
            "groups": self.stats.groups,
            "stored": self.stats.stored,
            "duplicates": self.stats.duplicates,
            "failed_groups": self.stats.failed_groups,
            "queued_requests": len(self._pending),
        }
        if not ok:
            report["detail"] = archive_error or index_error or "the store is closing"
        if self.stats.last_error is not None:
            report["last_error"] = self.stats.last_error
        return report

    # --- closing ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Write what is queued, then release everything (idempotent)."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._writer_pool.shutdown)
        await loop.run_in_executor(None, self._reader_pool.shutdown)
        self.index.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _encode(submission: Submission) -> _Item:
    measurement = submission.measurement
    return _Item(
        key=submission.idempotency_key,
        report_id=submission.report_id,
        measurement_json=dumps(measurement),
        summary=summarise(measurement, submission.report_id),
    )


def _take(records: Iterator[Record]) -> list[Record]:
    """The next :data:`SCAN_BATCH` records (on a reader thread)."""
    return list(itertools.islice(records, SCAN_BATCH))


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per waiter (one object raised in many tasks would pile up tracebacks)."""
    if isinstance(exc, StoreUnavailable):
        fresh: BaseException = StoreUnavailable(str(exc))
    elif isinstance(exc, ValueError):
        fresh = ValueError(str(exc))
    else:
        return exc
    fresh.__cause__ = exc
    return fresh


WRITABLE_FIX = "choose a --data-dir that this user can create and write"


def make_data_dir(data_dir: Path) -> None:
    """``data_dir``, created when missing (:class:`StoreUnavailable` naming the fix if not)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the data directory {data_dir}: {exc.strerror or exc}",
            fix=WRITABLE_FIX,
        ) from exc


def _lock(path: Path) -> int:
    """The data directory's lock, held (:class:`StoreUnavailable` naming the fix if not)."""
    # read-only: flock needs no write access, and no file under DATA stays open for writing
    # between groups (the file system can be remounted read-only under a running store)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot write in the data directory {path.parent}: {exc.strerror or exc}",
            fix=WRITABLE_FIX,
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreUnavailable(
            f"another collector is using {path.parent}",
            fix="stop it, or give this collector its own --data-dir",
        ) from exc
    except OSError as exc:
        os.close(fd)
        raise StoreUnavailable(f"cannot lock {path}: {exc.strerror or exc}") from exc
    return fd


def check_data_dir(data_dir: Path) -> None:
    """What opening the store would meet first: the data directory can be made and is not
    another collector's (its lock is taken and released at once)."""
    make_data_dir(data_dir)
    os.close(_lock(data_dir / LOCK_FILE))


def _probe_write(directory: Path) -> None:
    path = directory / f".health-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            data = memoryview(b"\0" * HEALTH_PROBE_BYTES)
            while data:  # a short write means the space ran out: the next one raises ENOSPC
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()

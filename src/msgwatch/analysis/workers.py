"""Parse, identify and transform measurements on a process pool: raw lines in, NDJSON bytes out.

Observations go out one line per measurement, ``{"m": <its envelope's columns>, "r": [<each
row's own columns>, ...]}`` (:func:`measurement_line`; :mod:`.lake` unnests it): a lab measurement
has about 90 observation rows, and saying its envelope once instead of in every row (with its
nulls) took its NDJSON from about 62 KB to 25 KB, the worker's ``orjson.dumps`` from 0.28 to 0.10
ms and DuckDB's write from 0.49 to 0.42 ms (``benchmarks/analysis_throughput.py --costs 3000``,
2026-12-05). Verdicts go out one row per line (about four per measurement).

The pass hands :func:`analyse` its sources' :class:`~msgwatch.analysis.inputs.Item` s in chunks;
each chunk is analysed by :func:`analyse_chunk`, in a worker process (``workers`` > 1) or in this
process (``workers`` = 1), and comes back as a :class:`ChunkResult` whose rows are already NDJSON
per table and day. Given a work folder and worker processes, a worker's chunk and its rows are
handed over as files there (:mod:`.handover`), and the parent only lists the rows' files for its
stagers.

Rules:

- A worker never raises for what a line holds. Too long → ``line_too_long``; not JSON
  (:func:`msgwatch.analysis.parse.parse`, which defers a service measurement's network events;
  orjson's recursion limit stops a nesting bomb) → ``not_json: …``; JSON but not an object →
  ``not_an_object``; :class:`~msgwatch.analysis.transform.BadMeasurement` →
  ``bad_measurement: <reason>``; any other exception in the transform → ``transform_error: <type>``
  (a bug, reported, never a crashed pass). Each problem keeps the item's ``where``.
- A collector archive record (``{"measurement_uid", "idempotency_key", "received_at",
  "measurement"}``) is unwrapped: its uid, probe tag (the key's part before the first ``.``) and
  reception time fill what the source did not say.
- The uid (:func:`uid_of`): the source's, else the measurement's own ``measurement_uid`` (text of at
  most 128 characters), else ``"sha256-"`` + the first 32 hex digits of the line's SHA-256.
- Memory is bounded: a chunk holds at most :data:`CHUNK_ITEMS` items and about
  :data:`CHUNK_BYTES` of lines (handed over as a file: 4 × :data:`CHUNK_ITEMS` and about
  :data:`FILE_CHUNK_BYTES`, in the inbox, and a worker holds its file's bytes and their lines,
  about twice that), at most ``2 × workers`` chunks are in flight, results come back in order.
  A chunk cancelled before a worker took it (the pass failed) has its inbox file removed.
- A worker that dies (killed, out of memory) fails the pass with ``BrokenProcessPool`` instead of
  hanging it; nothing is committed and the next pass reads the same items again.
- The pool uses the ``forkserver`` start method (never ``fork``: the parent may hold threads and a
  DuckDB connection).
- Freed memory is kept for reuse (:func:`keep_freed_memory`, in this process and in the workers),
  and a worker's garbage collector runs less often (:func:`prepare_worker`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import hashlib
import multiprocessing
import os
import secrets
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from msgwatch.analysis import transform as transform_module
from msgwatch.analysis.handover import Packed, pack, spill, unpack
from msgwatch.analysis.inputs import Item
from msgwatch.analysis.parse import parse
from msgwatch.analysis.transform import BadMeasurement, Meta

CHUNK_ITEMS = 256
CHUNK_BYTES = 4 * 1024 * 1024
FILE_CHUNK_BYTES = 16 * 1024 * 1024
"""A chunk handed over as a file may be larger: its size no longer costs pipe traffic, and fewer,
larger files of rows are cheaper for DuckDB to read."""
MAX_UID_CHARS = 128
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Allocations below this come from the heap, not from a fresh mapping."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Free memory at the heap's top kept before any is given back to the kernel."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@dataclass
class ChunkResult:
    """The rows and counts of one chunk of items."""

    items: int = 0
    measurements: int = 0  # parsed and transformed (skipped ones included)
    observations: dict[str, list[bytes]] = field(default_factory=dict)  # day → measurement lines
    verdicts: dict[str, list[bytes]] = field(default_factory=dict)  # day → NDJSON rows
    observation_rows: dict[str, int] = field(default_factory=dict)  # day → rows
    verdict_rows: dict[str, int] = field(default_factory=dict)  # day → rows
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    earliest: str | None = None  # the earliest verdict time, "YYYY-MM-DD HH:MM:SS"
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # table → day → NDJSON file

    def spill(self, work: Path, run: str, number: int) -> None:
        """Move the rows into files of the work folder (:func:`.handover.spill`)."""
        self.files["observations"] = spill(work, "observations", run, number, self.observations)
        self.files["verdicts"] = spill(work, "verdicts", run, number, self.verdicts)
        self.observations, self.verdicts = {}, {}


def uid_of(item: Item, measurement: dict[str, Any]) -> str:
    """The measurement's uid (see the module's rules)."""
    if item.measurement_uid:
        return item.measurement_uid
    own = measurement.get("measurement_uid")
    if isinstance(own, str) and 0 < len(own) <= MAX_UID_CHARS:
        return own
    return "sha256-" + hashlib.sha256(item.line).hexdigest()[:32]


def _unwrap(item: Item, value: dict[str, Any]) -> tuple[Item, dict[str, Any]]:
    """A collector archive record's measurement, with the record's uid, tag and time."""
    inner = value.get("measurement")
    key = value.get("idempotency_key")
    uid = value.get("measurement_uid")
    if not (isinstance(inner, dict) and isinstance(key, str) and isinstance(uid, str)):
        return item, value
    received = value.get("received_at")
    return (
        Item(
            line=item.line,
            where=item.where,
            probe_tag=item.probe_tag or key.split(".", 1)[0] or None,
            measurement_uid=item.measurement_uid or (uid[:MAX_UID_CHARS] or None),
            received_at=item.received_at or (received if isinstance(received, str) else None),
        ),
        inner,
    )


def _add_rows(
    out: dict[str, list[bytes]], counts: dict[str, int], rows: list[dict[str, Any]]
) -> None:
    """A measurement's rows as one piece of NDJSON per day (its rows share one, as a rule):
    pieces are joined only when written, never copied again as a growing buffer would be."""
    by_day: dict[str, list[bytes]] = {}
    for row in rows:
        day = str(row.get("day") or "unknown")
        by_day.setdefault(day, []).append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    for day, lines in by_day.items():
        out.setdefault(day, []).append(b"".join(lines))
        counts[day] = counts.get(day, 0) + len(lines)


def measurement_line(envelope: dict[str, Any], parts: list[dict[str, Any]]) -> bytes:
    """A measurement's observation rows as one NDJSON line: ``m`` its envelope's columns, ``r``
    each row's own (the lake's :func:`msgwatch.analysis.lake.read_nested_sql` reads it)."""
    return orjson.dumps({"m": envelope, "r": parts}, option=orjson.OPT_APPEND_NEWLINE)


def _add_observations(result: ChunkResult, envelope: dict[str, Any], parts: list[Any]) -> None:
    if not parts:
        return
    day = str(envelope.get("day") or "unknown")
    result.observations.setdefault(day, []).append(measurement_line(envelope, parts))
    result.observation_rows[day] = result.observation_rows.get(day, 0) + len(parts)


def _one(item: Item, result: ChunkResult, max_line_bytes: int) -> None:
    """Analyse one item into ``result``."""
    if len(item.line) > max_line_bytes:
        result.problems.append((item.where, "line_too_long"))
        return
    try:
        value = parse(item.line)
    except ValueError as exc:
        result.problems.append((item.where, f"not_json: {str(exc)[:200]}"))
        return
    if not isinstance(value, dict):
        result.problems.append((item.where, "not_an_object"))
        return
    item, measurement = _unwrap(item, value)
    meta = Meta(
        where=item.where,
        measurement_uid=uid_of(item, measurement),
        probe_tag=item.probe_tag,
        received_at=item.received_at,
    )
    try:
        out = transform_module.transform(measurement, meta)
    except BadMeasurement as exc:
        result.problems.append((item.where, f"bad_measurement: {str(exc)[:200]}"))
        return
    except Exception as exc:  # a bug in a transform: reported, never a crashed pass
        result.problems.append((item.where, f"transform_error: {type(exc).__name__}"))
        return
    result.measurements += 1
    if out.skipped:
        reason = out.skipped
        result.skipped[reason] += 1
        if reason == "unknown_test":
            result.skipped[f"unknown_test:{str(out.test_name)[:64]}"] += 1
    _add_observations(result, out.envelope, out.parts)
    _add_rows(result.verdicts, result.verdict_rows, out.verdicts)
    for row in out.verdicts:
        time = row.get("measurement_start_time")
        if isinstance(time, str) and (result.earliest is None or time < result.earliest):
            result.earliest = time


def analyse_chunk(items: list[Item], max_line_bytes: int) -> ChunkResult:
    """The rows, counts and problems of ``items`` (what a worker runs)."""
    result = ChunkResult(items=len(items))
    for item in items:
        _one(item, result, max_line_bytes)
    return result


def analyse_packed(packed: Packed, max_line_bytes: int, work: str) -> ChunkResult:
    """:func:`analyse_chunk` of a chunk handed over in a file, its rows handed back in files."""
    result = analyse_chunk(unpack(packed), max_line_bytes)
    result.spill(Path(work), packed.run, packed.number)
    return result


GC_THRESHOLDS = (10_000, 10, 10)
"""A worker's cyclic garbage collector runs after 10,000 new containers instead of 700: a
measurement's parse and rows make thousands, freed by their counts at once, and at the default
the collector ran about three times per measurement scanning the live ones (3.4 % of a worker's
CPU; 0.6 % so). Memory stays bounded: rows hold no cycles, and the collector still runs."""


def prepare_worker() -> None:
    """A worker's process settings: :func:`keep_freed_memory`, and the collector
    (:data:`GC_THRESHOLDS`; the objects of the imports are frozen first, never scanned again)."""
    keep_freed_memory()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse (:data:`MMAP_THRESHOLD`,
    :data:`TRIM_THRESHOLD`), once per process; whether it applied (False without ``mallopt``).

    A pass's lines, chunks of rows and DuckDB's reads are large and freed as fast as they are made;
    by default glibc maps every block above 128 KiB afresh and unmaps it when freed, and gives the
    heap's top back once 128 KiB of it are free, so the next block faults its pages in again. The
    setting holds for the whole process (a pass runs in its own process in the collector and the
    CLI); the free memory kept at the heap's top before any goes back is :data:`TRIM_THRESHOLD`."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def _chunks(items: Iterable[Item], size: int, max_bytes: int = CHUNK_BYTES) -> Iterator[list[Item]]:
    """Chunks of at most ``size`` items and about ``max_bytes`` of lines."""
    chunk: list[Item] = []
    held = 0
    for item in items:
        chunk.append(item)
        held += len(item.line)
        if len(chunk) >= size or held >= max_bytes:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def analyse(
    items: Iterable[Item],
    workers: int,
    max_line_bytes: int,
    chunk_items: int = CHUNK_ITEMS,
    work: Path | None = None,
) -> Generator[ChunkResult, None, None]:
    """The results of ``items`` chunk by chunk, in order, on ``workers`` processes. With ``work``
    (a folder holding ``observations/`` and ``verdicts/``) and more than one worker, a worker's
    chunk and rows are handed over as files there (:mod:`.handover`), and every result names its
    rows' files instead of holding them."""
    keep_freed_memory()
    if workers <= 1:  # nothing to hand over: the rows stay in the results
        for chunk in _chunks(items, chunk_items):
            yield analyse_chunk(chunk, max_line_bytes)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # workers fork from a server that imported us
    size, max_bytes = (chunk_items, CHUNK_BYTES) if work is None else (
        4 * chunk_items, FILE_CHUNK_BYTES
    )  # fmt: skip
    run = secrets.token_hex(4)  # this call's files: a killed pass's last worker cannot touch them
    with ProcessPoolExecutor(workers, mp_context=context, initializer=prepare_worker) as pool:
        pending: deque[tuple[Future[ChunkResult], str | None]] = deque()  # and its inbox file
        try:
            for number, chunk in enumerate(_chunks(items, size, max_bytes)):
                if work is None:
                    pending.append((pool.submit(analyse_chunk, chunk, max_line_bytes), None))
                else:
                    packed = pack(work, run, number, chunk)
                    del chunk  # its lines wait in the file
                    future = pool.submit(analyse_packed, packed, max_line_bytes, os.fspath(work))
                    pending.append((future, packed.path))
                while len(pending) >= 2 * workers:
                    yield pending.popleft()[0].result()
            while pending:
                yield pending.popleft()[0].result()
        finally:
            for future, inbox in pending:
                if future.cancel() and inbox is not None:  # never to be read: its lines go now
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(inbox)

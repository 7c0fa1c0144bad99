"""The index contract shared by :mod:`.sqlite` and :mod:`.postgres`: rows, schema, paging.

Tables (docs/design/002-collector.md, "Index"):

- ``measurements``: one row per stored measurement — ``uid``, ``idempotency_key`` (unique), the
  summary columns, and where it lies in the archive: ``archive_file``, ``member_offset`` and
  ``member_length`` (the gzip member), ``line_offset`` and ``line_length`` (its JSON line inside
  the decompressed member; an addition to the design's columns, so a read decompresses no more of
  the member than it needs). ``input`` is JSON text (see :mod:`msgwatch.collector.summary`).
- ``verdicts``: ``uid``, ``position`` (order within the measurement), ``service``, ``function``,
  ``verdict``, ``mechanism``.
- ``archive_progress``: ``file``, ``bytes`` — how much of each archive file is indexed, updated in
  the same transaction as the rows it covers.
- ``store_identity``: one row, the id of the data directory whose archive this index describes
  (``DATA/store-id``). An index belongs to one archive: opening a data directory against a
  database that indexes another one is refused, because its ``archive_progress`` would name files
  that are not ours (two collectors sharing one PostgreSQL database need one database each).

Paging: newest first by ``(measurement_start_time, uid)``, keyset (``WHERE (t, uid) < (?, ?)``) so
a page costs the same at any depth. A page holds at most ``limit`` summaries **and** at most
:data:`MAX_PAGE_BYTES` of JSON: the summaries that would take it past that are left to the next page
(its cursor is then set; a page always holds at least one summary, and one summary is bounded by
what :mod:`msgwatch.collector.summary` indexes: at most ~50 KB). The cursor is the position of a page's last row, ``<YYYYMMDDhhmmss>~<uid>``
(its ``measurement_start_time``'s digits and its uid): any value of that form is a position in the
order, so every cursor the document's pattern allows is answered; anything else is
:class:`BadCursor`.

Every method of an :class:`Index` blocks and raises :class:`StoreUnavailable` for any database
error. Writer methods run on the store's one writer thread; read methods on any thread (each
back-end keeps one connection per thread).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from msgwatch.collector.store.base import BadCursor, Page, Query
from msgwatch.collector.summary import SummaryRow, VerdictRow

MAX_LIMIT = 1000
MAX_PAGE_BYTES = 1024 * 1024
"""The most one page of the read API answers, in bytes of JSON (with its envelope)."""
_PAGE_ENVELOPE = 1024  # {"results": [...], "next_cursor": "v1...."}: the cursor is at most 512
_CURSOR = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})~([A-Za-z0-9._-]{1,256})"
)


@dataclass(frozen=True)
class IndexRow:
    uid: str
    idempotency_key: str
    received_at: str
    summary: SummaryRow
    archive_file: str
    member_offset: int
    member_length: int
    line_offset: int
    line_length: int

    def measurement_values(self) -> tuple[Any, ...]:
        s = self.summary
        return (
            self.uid,
            self.idempotency_key,
            s.report_id,
            s.measurement_start_time,
            self.received_at,
            s.probe_cc,
            s.probe_asn,
            s.test_name,
            s.software_name,
            s.input_json,
            self.archive_file,
            self.member_offset,
            self.member_length,
            self.line_offset,
            self.line_length,
        )

    def verdict_values(self) -> list[tuple[Any, ...]]:
        return [
            (self.uid, position, v.service, v.function, v.verdict, v.mechanism)
            for position, v in enumerate(self.summary.verdicts)
        ]


MEASUREMENT_COLUMNS = (
    "uid",
    "idempotency_key",
    "report_id",
    "measurement_start_time",
    "received_at",
    "probe_cc",
    "probe_asn",
    "test_name",
    "software_name",
    "input",
    "archive_file",
    "member_offset",
    "member_length",
    "line_offset",
    "line_length",
)
VERDICT_COLUMNS = ("uid", "position", "service", "function", "verdict", "mechanism")
SUMMARY_COLUMNS = (
    "uid",
    "report_id",
    "measurement_start_time",
    "received_at",
    "probe_cc",
    "probe_asn",
    "test_name",
    "software_name",
    "input",
)


@dataclass(frozen=True)
class Location:
    """Where one measurement's archive line is."""

    archive_file: str
    member_offset: int
    member_length: int
    line_offset: int
    line_length: int


class Index(Protocol):
    backend: str

    # writer thread
    def open_writer(self, store_id: str) -> None:
        """Connect, create the schema if needed, claim or check the store identity."""
        ...

    def progress(self) -> dict[str, int]: ...

    def lookup_keys(self, keys: Collection[str]) -> dict[str, str]:
        """``{key: uid}`` for the keys already stored."""
        ...

    def commit(self, rows: Sequence[IndexRow], progress: Mapping[str, int]) -> None:
        """Insert ``rows`` (keys not yet stored) and set ``progress``, in one transaction."""
        ...

    # any thread
    def check_identity(self, store_id: str) -> None: ...

    def locate(self, uid: str) -> Location | None: ...

    def query(self, query: Query) -> Page: ...

    def canonical_uids(self, archive_file: str, since: str | None, until: str | None) -> set[str]:
        """The uids the index holds in ``archive_file`` (with a start time in the range)."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def schema(dialect: str) -> list[str]:
    """``CREATE`` statements; ``dialect`` is ``"sqlite"`` or ``"postgresql"``.

    PostgreSQL compares the ordering columns bytewise (``COLLATE "C"``), as SQLite does, so the
    order of a page (and the meaning of a cursor) does not depend on the server's locale.
    """
    big = "BIGINT" if dialect == "postgresql" else "INTEGER"
    c = ' COLLATE "C"' if dialect == "postgresql" else ""
    return [
        f"""CREATE TABLE IF NOT EXISTS measurements (
            uid TEXT{c} PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            report_id TEXT,
            measurement_start_time TEXT{c} NOT NULL,
            received_at TEXT NOT NULL,
            probe_cc TEXT NOT NULL,
            probe_asn TEXT NOT NULL,
            test_name TEXT NOT NULL,
            software_name TEXT NOT NULL,
            input TEXT,
            archive_file TEXT NOT NULL,
            member_offset {big} NOT NULL,
            member_length {big} NOT NULL,
            line_offset {big} NOT NULL,
            line_length {big} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS measurements_time"
        " ON measurements (measurement_start_time, uid)",
        "CREATE INDEX IF NOT EXISTS measurements_cc"
        " ON measurements (probe_cc, measurement_start_time)",
        "CREATE INDEX IF NOT EXISTS measurements_asn"
        " ON measurements (probe_asn, measurement_start_time)",
        "CREATE INDEX IF NOT EXISTS measurements_test"
        " ON measurements (test_name, measurement_start_time)",
        "CREATE INDEX IF NOT EXISTS measurements_file ON measurements (archive_file)",
        f"""CREATE TABLE IF NOT EXISTS verdicts (
            uid TEXT{c} NOT NULL,
            position INTEGER NOT NULL,
            service TEXT NOT NULL,
            function TEXT NOT NULL,
            verdict TEXT NOT NULL,
            mechanism TEXT)""",
        "CREATE INDEX IF NOT EXISTS verdicts_uid ON verdicts (uid, position)",
        "CREATE INDEX IF NOT EXISTS verdicts_lookup ON verdicts (service, function, verdict)",
        f"""CREATE TABLE IF NOT EXISTS archive_progress (
            file TEXT PRIMARY KEY,
            bytes {big} NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS store_identity (id TEXT NOT NULL)",
    ]


# --- cursors and pages -----------------------------------------------------------------------------


def encode_cursor(start_time: str, uid: str) -> str:
    """``start_time`` is ``YYYY-MM-DD HH:MM:SS`` (validated at intake), ``uid`` made by the store."""
    return "".join(c for c in start_time if c.isdigit()) + "~" + uid


def decode_cursor(cursor: str) -> tuple[str, str]:
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise BadCursor("a cursor is <YYYYMMDDhhmmss>~<measurement_uid>, as next_cursor gives it")
    year, month, day, hour, minute, second, uid = match.groups()
    return f"{year}-{month}-{day} {hour}:{minute}:{second}", uid


def clamp_limit(limit: int) -> int:
    """The page size: ``limit`` within 1..1000 (the HTTP layer validates; this never trusts it)."""
    return max(1, min(MAX_LIMIT, int(limit)))


def page_sql(query: Query, placeholder: str) -> tuple[str, list[Any]]:
    """The ``SELECT`` of one page (``limit + 1`` rows: the extra one says whether more follow)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("probe_cc", query.probe_cc),
        ("probe_asn", query.probe_asn),
        ("test_name", query.test_name),
    ):
        if value is not None:
            where.append(f"m.{column} = {placeholder}")
            params.append(value)
    if query.since is not None:
        where.append(f"m.measurement_start_time >= {placeholder}")
        params.append(query.since)
    if query.until is not None:
        where.append(f"m.measurement_start_time < {placeholder}")
        params.append(query.until)
    verdict_filters = [
        (column, value)
        for column, value in (
            ("service", query.service),
            ("function", query.function),
            ("verdict", query.verdict),
        )
        if value is not None
    ]
    if verdict_filters:  # one verdict row must match them all ("whatsapp voice blocked")
        conditions = " AND ".join(f"v.{column} = {placeholder}" for column, _ in verdict_filters)
        where.append(f"EXISTS (SELECT 1 FROM verdicts v WHERE v.uid = m.uid AND {conditions})")
        params += [value for _, value in verdict_filters]
    if query.cursor is not None:
        start_time, uid = decode_cursor(query.cursor)
        where.append(f"(m.measurement_start_time, m.uid) < ({placeholder}, {placeholder})")
        params += [start_time, uid]
    sql = "SELECT " + ", ".join(f"m.{c}" for c in SUMMARY_COLUMNS) + " FROM measurements m"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY m.measurement_start_time DESC, m.uid DESC"
    sql += f" LIMIT {clamp_limit(query.limit) + 1}"
    return sql, params


def build_page(
    query: Query, rows: Sequence[Sequence[Any]], verdicts: Iterable[Sequence[Any]]
) -> Page:
    """Summaries from ``SUMMARY_COLUMNS`` rows and ``(uid, service, function, verdict,
    mechanism)`` rows ordered by position."""
    limit = clamp_limit(query.limit)
    more = len(rows) > limit
    rows = rows[:limit]
    by_uid: dict[str, list[dict[str, Any]]] = {str(r[0]): [] for r in rows}
    for uid, service, function, verdict, mechanism in verdicts:
        found = by_uid.get(uid)
        if found is not None:
            found.append(
                VerdictRow(service, function, verdict, mechanism).as_dict(),
            )
    results: list[dict[str, Any]] = []
    budget = MAX_PAGE_BYTES - _PAGE_ENVELOPE
    for r in rows:
        summary = {
            "measurement_uid": r[0],
            "report_id": r[1],
            "measurement_start_time": r[2],
            "received_at": r[3],
            "probe_cc": r[4],
            "probe_asn": r[5],
            "test_name": r[6],
            "software_name": r[7],
            "input": None if r[8] is None else orjson.loads(r[8]),
            "verdicts": by_uid[str(r[0])],
        }
        budget -= len(orjson.dumps(summary)) + 1  # and its comma
        if budget < 0 and results:
            more = True  # the rest is the next page's
            break
        results.append(summary)
    last = results[-1] if results else None
    next_cursor = (
        encode_cursor(last["measurement_start_time"], last["measurement_uid"])
        if more and last is not None
        else None
    )
    return Page(results=results, next_cursor=next_cursor)


def chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]

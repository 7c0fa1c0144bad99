"""The index contract shared by :mod:`.sqlite` and :mod:`.postgres`: rows, schema, paging.

Tables (docs/design/002-collector.md, "Index"):

- ``measurements``: one row per stored measurement — ``uid``, ``idempotency_key`` (unique), the
  summary columns, and where it lies in the archive: ``archive_file``, ``member_offset`` and
  ``member_length`` (the gzip member), ``line_offset`` and ``line_length`` (its JSON line inside
  the decompressed member; an addition to the design's columns, so a read decompresses no more of
  the member than it needs). ``input`` is JSON text (see :mod:`msgwatch.collector.summary`).
- ``measured``: ``uid``, ``position`` (order within the measurement), ``service``, ``function``:
  what the measurement measured, from its envelope (:mod:`msgwatch.collector.summary`): one row per
  function, or one row with ``function`` NULL for a service without functions. The index holds no
  verdict: verdicts are the analysis's output, recomputed, never the probe's.
- ``archive_progress``: ``file``, ``bytes`` — how much of each archive file is indexed, updated in
  the same transaction as the rows it covers.
- ``store_identity``: one row, the id of the data directory whose archive this index describes
  (``DATA/store-id``). An index belongs to one archive: opening a data directory against a
  database that indexes another one is refused, because its ``archive_progress`` would name files
  that are not ours (two collectors sharing one PostgreSQL database need one database each).

An index made before ``measured`` had a ``verdicts`` table (the probe's verdicts, indexed as
facts): opening it for writing moves each measurement's distinct (service, function) pairs into
``measured`` and drops ``verdicts``, in the transaction that creates the schema
(:func:`upgrade`), so an old store keeps answering the ``service`` and ``function`` filters.

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
from msgwatch.collector.summary import SummaryRow

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

    def measured_values(self) -> list[tuple[Any, ...]]:
        """The ``measured`` rows: one per function, or one for a service without functions."""
        s = self.summary
        functions: tuple[str | None, ...] = s.functions or ((None,) if s.service else ())
        return [(self.uid, position, s.service, f) for position, f in enumerate(functions)]


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
MEASURED_COLUMNS = ("uid", "position", "service", "function")
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
        f"""CREATE TABLE IF NOT EXISTS measured (
            uid TEXT{c} NOT NULL,
            position INTEGER NOT NULL,
            service TEXT,
            function TEXT)""",
        "CREATE INDEX IF NOT EXISTS measured_uid ON measured (uid, position)",
        "CREATE INDEX IF NOT EXISTS measured_lookup ON measured (service, function)",
        f"""CREATE TABLE IF NOT EXISTS archive_progress (
            file TEXT PRIMARY KEY,
            bytes {big} NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS store_identity (id TEXT NOT NULL)",
    ]


LEGACY_TABLE = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'verdicts'",
    "postgresql": "SELECT 1 FROM pg_tables"
    " WHERE schemaname = current_schema() AND tablename = 'verdicts'",
}
"""Whether the index still has the ``verdicts`` table of an index made before ``measured``."""


def upgrade() -> list[str]:
    """The statements that move an old index's ``verdicts`` into ``measured`` (run them, after
    :func:`schema` and in its transaction, when :data:`LEGACY_TABLE` finds the table)."""
    return [
        "INSERT INTO measured (uid, position, service, function)"
        " SELECT uid, MIN(position), service, function FROM verdicts"
        " GROUP BY uid, service, function",
        "DROP TABLE verdicts",
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
    measured = [
        (column, value)
        for column, value in (("service", query.service), ("function", query.function))
        if value is not None
    ]
    if measured:  # one measured row must match both ("whatsapp voice")
        conditions = " AND ".join(f"s.{column} = {placeholder}" for column, _ in measured)
        where.append(f"EXISTS (SELECT 1 FROM measured s WHERE s.uid = m.uid AND {conditions})")
        params += [value for _, value in measured]
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


MEASURED_SQL = "SELECT uid, service, function FROM measured WHERE uid {uids} ORDER BY uid, position"
"""The ``measured`` rows of a page's uids (``{uids}``: the back-end's ``IN (...)`` or ``= ANY``)."""


def build_page(
    query: Query, rows: Sequence[Sequence[Any]], measured: Iterable[Sequence[Any]]
) -> Page:
    """Summaries from ``SUMMARY_COLUMNS`` rows and ``(uid, service, function)`` rows ordered by
    position."""
    limit = clamp_limit(query.limit)
    more = len(rows) > limit
    rows = rows[:limit]
    services: dict[str, str | None] = {str(r[0]): None for r in rows}
    functions: dict[str, list[str]] = {str(r[0]): [] for r in rows}
    for uid, service, function in measured:
        if uid in services:
            services[uid] = services[uid] or service
            if function is not None:
                functions[uid].append(function)
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
            "service": services[str(r[0])],
            "functions": functions[str(r[0])],
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

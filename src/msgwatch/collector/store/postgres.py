"""The index in PostgreSQL (``--database postgresql://…``), with psycopg 3.

**One dedicated connection for the writer**, not a pool: group commit already makes writing
serial (one group, hence one transaction, at a time), so a pool would only hand the writer thread
the same single connection with more machinery. When it breaks (server restarted, network cut) the
group fails with :class:`StoreUnavailable` and the next group connects again. Readers (the read API) get one autocommit connection per reader thread, reconnected the
same way; there are only a few reader threads, so this stays a handful of connections.

**One round trip per step, not per row**: a group's rows go in with ``COPY … FROM STDIN`` (two
streams: measurements, measured) and the progress with one ``INSERT … ON CONFLICT``, all in one
transaction; the keys of a group are looked up with one ``= ANY(%s)``.

**synchronous_commit stays on** (the server's default). Unlike SQLite's ``synchronous=NORMAL``
(see :mod:`.sqlite`) we cannot rely on recovery here: PostgreSQL can crash and restart while the
collector keeps running, and a commit lost that way would leave an acknowledged measurement out of
the index (a 404 for its uid, a retry stored twice) until the collector's next start. With group
commit the cost is one WAL flush per group, shared by all its measurements.

**No server-side prepared statements** (``prepare_threshold=None``): psycopg prepares a statement
after five executions, and PostgreSQL then settles on a generic plan costed with the statistics of
the moment — for a table that was empty at start, a sequential scan. The key lookup of every group
became a scan of the whole table (6 ms instead of 0.3 ms at 15,000 rows in the benchmark); planning
each statement afresh costs microseconds.

Statements have a ``statement_timeout`` so a stuck server turns into :class:`StoreUnavailable`
rather than a writer that never answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg

from msgwatch.collector.store.base import Page, Query, StoreUnavailable
from msgwatch.collector.store.index import (
    LEGACY_TABLE,
    MEASURED_COLUMNS,
    MEASURED_SQL,
    MEASUREMENT_COLUMNS,
    IndexRow,
    Location,
    build_page,
    page_sql,
    schema,
    upgrade,
)

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
_SCHEMA_LOCK = 0x6D7377  # pg_advisory_xact_lock key: two collectors creating tables at once

T = TypeVar("T")


class PostgresIndex:
    """An :class:`~msgwatch.collector.store.index.Index` in a PostgreSQL database."""

    backend = "postgresql"

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._writer: psycopg.Connection[Any] | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[psycopg.Connection[Any]] = []
        self._closed = False

    # --- connections -----------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreUnavailable("the index is closed")
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="msgwatch-collector",
                prepare_threshold=None,
            )
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            if self.readonly:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot connect to the index database: {_redact(_short(exc), self.url)}",
                fix="start PostgreSQL, or correct --database (postgresql://USER@HOST/DB)",
            ) from exc
        with self._lock:
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def check(self) -> None:
        """Connect once and close (:class:`StoreUnavailable` naming the fix if it fails)."""
        self._connect().close()

    def _write_conn(self) -> psycopg.Connection[Any]:
        conn = self._writer
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._writer = self._connect()
        return conn

    def _read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` on this thread's connection, once more on a fresh one if it had broken."""
        for attempt in (1, 2):
            conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
            if conn is None or conn.closed or conn.broken:
                conn = self._local.conn = self._connect()
            try:
                return work(conn)
            except psycopg.Error as exc:
                if conn.broken and attempt == 1:
                    continue
                raise StoreUnavailable(f"index: {_short(exc)}") from exc
        raise AssertionError("unreachable")

    # --- writer thread ---------------------------------------------------------------------------

    def open_writer(self, store_id: str) -> None:
        if self.readonly:
            raise StoreUnavailable("the index is open read-only")
        conn = self._write_conn()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in schema("postgresql"):
                    conn.execute(statement)
                if conn.execute(LEGACY_TABLE["postgresql"]).fetchall():
                    for statement in upgrade():
                        conn.execute(statement)
                found = conn.execute("SELECT id FROM store_identity").fetchall()
                if not found:
                    conn.execute("INSERT INTO store_identity (id) VALUES (%s)", (store_id,))
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot prepare the index database: {_short(exc)}") from exc
        if found and found[0][0] != store_id:
            raise StoreUnavailable(_foreign(found[0][0], store_id))

    def progress(self) -> dict[str, int]:
        try:
            rows = self._write_conn().execute("SELECT file, bytes FROM archive_progress")
            return {str(f): int(b) for f, b in rows}
        except psycopg.Error as exc:
            raise StoreUnavailable(f"index: {_short(exc)}") from exc

    def lookup_keys(self, keys: Collection[str]) -> dict[str, str]:
        try:
            rows = self._write_conn().execute(
                "SELECT idempotency_key, uid FROM measurements WHERE idempotency_key = ANY(%s)",
                (list(keys),),
            )
            return {str(k): str(u) for k, u in rows}
        except psycopg.Error as exc:
            raise StoreUnavailable(f"index: {_short(exc)}") from exc

    def commit(self, rows: Sequence[IndexRow], progress: Mapping[str, int]) -> None:
        conn = self._write_conn()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if rows:
                    with cur.copy(
                        f"COPY measurements ({', '.join(MEASUREMENT_COLUMNS)}) FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(row.measurement_values())
                    measured = [values for row in rows for values in row.measured_values()]
                    if measured:
                        with cur.copy(
                            f"COPY measured ({', '.join(MEASURED_COLUMNS)}) FROM STDIN"
                        ) as copy:
                            for values in measured:
                                copy.write_row(values)
                cur.executemany(
                    "INSERT INTO archive_progress (file, bytes) VALUES (%s, %s) "
                    "ON CONFLICT (file) DO UPDATE SET bytes = EXCLUDED.bytes",
                    list(progress.items()),
                )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"index: {_short(exc)}") from exc

    # --- any thread ------------------------------------------------------------------------------

    def check_identity(self, store_id: str) -> None:
        found = self._read(lambda c: c.execute("SELECT id FROM store_identity").fetchall())
        if found and found[0][0] != store_id:
            raise StoreUnavailable(_foreign(found[0][0], store_id))

    def locate(self, uid: str) -> Location | None:
        row = self._read(
            lambda c: c.execute(
                "SELECT archive_file, member_offset, member_length, line_offset, line_length "
                "FROM measurements WHERE uid = %s",
                (uid,),
            ).fetchone()
        )
        return None if row is None else Location(*row)

    def query(self, query: Query) -> Page:
        sql, params = page_sql(query, "%s")

        def work(conn: psycopg.Connection[Any]) -> Page:
            rows = conn.execute(sql, params).fetchall()
            uids = [r[0] for r in rows]
            measured = (
                conn.execute(MEASURED_SQL.format(uids="= ANY(%s)"), (uids,)).fetchall()
                if uids
                else []
            )
            return build_page(query, rows, measured)

        return self._read(work)

    def canonical_uids(self, archive_file: str, since: str | None, until: str | None) -> set[str]:
        sql = "SELECT uid FROM measurements WHERE archive_file = %s"
        params: list[str] = [archive_file]
        if since is not None:
            sql += " AND measurement_start_time >= %s"
            params.append(since)
        if until is not None:
            sql += " AND measurement_start_time < %s"
            params.append(until)
        return self._read(lambda c: {str(r[0]) for r in c.execute(sql, params)})

    def ping(self) -> None:
        self._read(lambda c: c.execute("SELECT 1").fetchall())

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._writer = None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _redact(text: str, url: str) -> str:
    """``text`` without the URL's password (libpq may quote the connection string)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "(an error about the --database URL)"
    return text.replace(password, "***") if password else text


def _foreign(theirs: str, ours: str) -> str:
    return (
        f"the index database belongs to another archive (store id {theirs}, this data "
        f"directory is {ours}); give each data directory its own database"
    )

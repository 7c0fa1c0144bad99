"""The index in SQLite: the default, embedded, one file at ``DATA/index.sqlite3``.

**WAL mode**: readers (the read API, on their own connections) never block the writer nor are
blocked by it, and a commit is one append to the write-ahead log.

**synchronous=NORMAL**, and why that keeps "acknowledged = durable": in WAL mode NORMAL syncs the
log only at checkpoints, not at each commit. A committed transaction survives a crash of the
*process* (``kill -9``: the data is in the OS's page cache) and the database is never corrupted, but
the last commits may be lost to a *power failure or kernel crash*. That is acceptable here, and
``FULL`` (one more ``fsync`` per group) would buy nothing, because the index is not the source of
truth:

- the archive member of a group is ``fsync``ed *before* its index transaction commits;
- ``archive_progress`` is committed in the same transaction as the rows, so a lost commit loses
  both together and the progress row still points before the member;
- every start runs recovery before serving, which indexes whatever the archive holds beyond
  ``archive_progress``.

So after a power failure the lost index rows come back from the archive with the same uids before
the first request is answered: an acknowledged measurement is never lost and its retry is still a
duplicate. (The same argument does *not* hold for PostgreSQL, whose server can restart under a
running collector; see :mod:`.postgres`.) ``OFF`` is not used: it may corrupt the database file on
power loss, which the archive could repair only by a full rebuild.

Connections: one for the writer thread, one per reader thread (``query_only``). ``busy_timeout``
covers the short moments a checkpoint holds a lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from msgwatch.collector.store.base import Page, Query, StoreUnavailable
from msgwatch.collector.store.index import (
    LEGACY_TABLE,
    MEASURED_COLUMNS,
    MEASURED_SQL,
    MEASUREMENT_COLUMNS,
    IndexRow,
    Location,
    build_page,
    chunks,
    page_sql,
    schema,
    upgrade,
)

BUSY_TIMEOUT_MS = 10_000
_IN_CHUNK = 500  # keys per IN (...) list, well under SQLite's bound on parameters


class SQLiteIndex:
    """An :class:`~msgwatch.collector.store.index.Index` in one SQLite file."""

    backend = "sqlite"

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    # --- connections -----------------------------------------------------------------------------

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        """The writer's connection, or a reader's: ``query_only``, and opened with ``mode=ro``
        when the whole index is read-only (an export, which must not create anything)."""
        if self._closed:
            raise StoreUnavailable("the index is closed")
        try:
            if self.readonly:
                if not self.path.exists():
                    raise StoreUnavailable(f"no index at {self.path}")
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if readonly:
                conn.execute("PRAGMA query_only = ON")
            else:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the index {self.path}: {exc}") from exc
        with self._lock:
            self._all.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
        return conn

    def _write_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreUnavailable("the index is not open for writing")
        return self._writer

    # --- writer thread ---------------------------------------------------------------------------

    def open_writer(self, store_id: str) -> None:
        if self.readonly:
            raise StoreUnavailable("the index is open read-only")
        conn = self._connect(readonly=False)
        self._writer = conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in schema("sqlite"):
                conn.execute(statement)
            if conn.execute(LEGACY_TABLE["sqlite"]).fetchall():
                for statement in upgrade():
                    conn.execute(statement)
            found = conn.execute("SELECT id FROM store_identity").fetchall()
            if not found:
                conn.execute("INSERT INTO store_identity (id) VALUES (?)", (store_id,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreUnavailable(f"cannot prepare the index {self.path}: {exc}") from exc
        if found and found[0][0] != store_id:
            raise StoreUnavailable(_foreign(found[0][0], store_id))

    def progress(self) -> dict[str, int]:
        try:
            rows = self._write_conn().execute("SELECT file, bytes FROM archive_progress")
            return {str(f): int(b) for f, b in rows}
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc

    def lookup_keys(self, keys: Collection[str]) -> dict[str, str]:
        conn = self._write_conn()
        found: dict[str, str] = {}
        try:
            for chunk in chunks(list(keys), _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                for key, uid in conn.execute(
                    f"SELECT idempotency_key, uid FROM measurements "
                    f"WHERE idempotency_key IN ({marks})",
                    tuple(chunk),
                ):
                    found[key] = uid
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc
        return found

    def commit(self, rows: Sequence[IndexRow], progress: Mapping[str, int]) -> None:
        conn = self._write_conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT INTO measurements ({', '.join(MEASUREMENT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(MEASUREMENT_COLUMNS))})",
                [row.measurement_values() for row in rows],
            )
            conn.executemany(
                f"INSERT INTO measured ({', '.join(MEASURED_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(MEASURED_COLUMNS))})",
                [values for row in rows for values in row.measured_values()],
            )
            conn.executemany(
                "INSERT INTO archive_progress (file, bytes) VALUES (?, ?) "
                "ON CONFLICT (file) DO UPDATE SET bytes = excluded.bytes",
                list(progress.items()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreUnavailable(f"index: {exc}") from exc

    # --- any thread ------------------------------------------------------------------------------

    def check_identity(self, store_id: str) -> None:
        try:
            found = self._reader().execute("SELECT id FROM store_identity").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc
        if found and found[0][0] != store_id:
            raise StoreUnavailable(_foreign(found[0][0], store_id))

    def locate(self, uid: str) -> Location | None:
        try:
            row = (
                self._reader()
                .execute(
                    "SELECT archive_file, member_offset, member_length, line_offset, line_length "
                    "FROM measurements WHERE uid = ?",
                    (uid,),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc
        return None if row is None else Location(*row)

    def query(self, query: Query) -> Page:
        sql, params = page_sql(query, "?")
        conn = self._reader()
        try:
            rows = conn.execute(sql, params).fetchall()
            uids = [r[0] for r in rows]
            marks = ",".join("?" * len(uids))
            measured = (
                conn.execute(MEASURED_SQL.format(uids=f"IN ({marks})"), uids).fetchall()
                if uids
                else []
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc
        return build_page(query, rows, measured)

    def canonical_uids(self, archive_file: str, since: str | None, until: str | None) -> set[str]:
        sql = "SELECT uid FROM measurements WHERE archive_file = ?"
        params: list[str] = [archive_file]
        if since is not None:
            sql += " AND measurement_start_time >= ?"
            params.append(since)
        if until is not None:
            sql += " AND measurement_start_time < ?"
            params.append(until)
        try:
            return {str(r[0]) for r in self._reader().execute(sql, params)}
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc

    def ping(self) -> None:
        try:
            self._reader().execute("SELECT 1 FROM archive_progress LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"index: {exc}") from exc

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._all = self._all, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._writer = None


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite may have rolled back by itself (disk full); the next BEGIN starts clean


def _foreign(theirs: str, ours: str) -> str:
    return (
        f"the index belongs to another archive (store id {theirs}, this data directory is "
        f"{ours}); give each data directory its own index database"
    )

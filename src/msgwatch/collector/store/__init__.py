"""The collector's storage: an archive of gzip members (the source of truth) and an index.

``open_store(data_dir, database)`` opens the :class:`Store` the HTTP layer uses: the archive under
``DATA/archive/`` and the index in SQLite (``DATA/index.sqlite3``, the default) or PostgreSQL
(``database="postgresql://…"``). Opening locks the data directory and runs recovery; it raises
:class:`StoreUnavailable` when either cannot be opened.

``open_reader(data_dir, database)`` opens a read-only :class:`StoreReader` instead: no lock, no
recovery, so it runs beside a live collector (the export). Both read the whole store through one
public scan, ``scan(since, until)``, which yields :class:`Record` objects (rules in :mod:`.scan`).

- :mod:`.base`: the contract (``Submission``, ``Receipt``, ``Query``, ``Page``, errors, ``Store``);
- :mod:`.writer`: :class:`DurableStore`, group commit, reads, health;
- :mod:`.recovery`: the index made equal to the archive at open;
- :mod:`.scan`: the public scan and :class:`StoreReader`;
- :mod:`.records`: the archive's record codec (one JSON line per stored measurement);
- :mod:`.archive`: segments of gzip members, member scans, cutting a torn member, the store id;
- :mod:`.index`: the index's rows, schema and paging, shared by :mod:`.sqlite` and
  :mod:`.postgres`.

Design: docs/design/002-collector.md ("Storage").
"""

from __future__ import annotations

from pathlib import Path

from msgwatch.collector.store.base import (
    BadCursor,
    Page,
    Query,
    Receipt,
    Store,
    StoreUnavailable,
    Submission,
    TimeBound,
)
from msgwatch.collector.store.index import Index
from msgwatch.collector.store.records import Record
from msgwatch.collector.store.scan import StoreReader
from msgwatch.collector.store.writer import DurableStore

INDEX_FILE = "index.sqlite3"

__all__ = [
    "BadCursor",
    "DurableStore",
    "Page",
    "Query",
    "Receipt",
    "Record",
    "Store",
    "StoreReader",
    "StoreUnavailable",
    "Submission",
    "TimeBound",
    "check_store",
    "open_index",
    "open_reader",
    "open_store",
]


def open_index(data_dir: Path, database: str | None = None, *, readonly: bool = False) -> Index:
    """The index of ``data_dir`` (not yet connected): SQLite unless ``database`` is a URL."""
    if database is None or database == "sqlite":
        from msgwatch.collector.store.sqlite import SQLiteIndex

        return SQLiteIndex(data_dir / INDEX_FILE, readonly=readonly)
    if database.startswith(("postgresql://", "postgres://")):
        from msgwatch.collector.store.postgres import PostgresIndex

        return PostgresIndex(database, readonly=readonly)
    raise ValueError(f"unknown database {database!r}: use 'sqlite' or a postgresql:// URL")


def check_store(data_dir: Path, database: str | None = None) -> None:
    """Before a server starts: what opening the store would meet first, without opening it —
    the data directory (made, not another collector's) and a PostgreSQL index (reachable).
    Raises :class:`StoreUnavailable` whose ``fix`` says what to do."""
    from msgwatch.collector.store.writer import check_data_dir

    check_data_dir(data_dir)
    if database is not None and database != "sqlite":
        from msgwatch.collector.store.postgres import PostgresIndex

        index = open_index(data_dir, database)
        assert isinstance(index, PostgresIndex)
        try:
            index.check()
        finally:
            index.close()


async def open_store(data_dir: Path, database: str | None = None) -> Store:
    """Open (and recover) the store of ``data_dir``; see the module's docstring."""
    return await DurableStore.open(data_dir, open_index(data_dir, database))


def open_reader(data_dir: Path, database: str | None = None) -> StoreReader:
    """A read-only view of the store of ``data_dir`` (see the module's docstring); its index is
    checked to be this archive's (``StoreUnavailable``; ``OSError`` when there is no archive)."""
    reader = StoreReader(data_dir, open_index(data_dir, database, readonly=True))
    try:
        return reader.check()
    except BaseException:
        reader.close()
        raise

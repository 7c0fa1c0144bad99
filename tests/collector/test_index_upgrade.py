"""An index made before ``measured`` (it had the probe's verdicts in a ``verdicts`` table) is
upgraded when a collector opens it: the (service, function) pairs move into ``measured``, the
verdicts go, and the read API's filters answer for the old measurements too."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msgwatch.collector.store import Query, Submission, open_store

OLD_VERDICTS = """CREATE TABLE verdicts (
    uid TEXT NOT NULL, position INTEGER NOT NULL, service TEXT NOT NULL, function TEXT NOT NULL,
    verdict TEXT NOT NULL, mechanism TEXT)"""


@contextmanager
def raw(data_dir: Path, database: str | None) -> Iterator[Callable[..., list[Any]]]:
    """``sql(statement, *args)`` on a plain connection to the index (``%s`` placeholders)."""
    if database is None:
        conn = sqlite3.connect(data_dir / "index.sqlite3", isolation_level=None)

        def lite(statement: str, *args: Any) -> list[Any]:
            return conn.execute(statement.replace("%s", "?"), args).fetchall()

        try:
            yield lite
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(database, autocommit=True) as pg:

        def post(statement: str, *args: Any) -> list[Any]:
            cursor = pg.execute(statement, args)
            return cursor.fetchall() if cursor.description else []

        yield post


def old(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The (service, function) of the verdict rows an old index held for ``m``."""
    keys = m["test_keys"]
    return [(keys["msgwatch_service"], f["function"]) for f in keys["msgwatch_functions"]]


def test_an_old_index_is_upgraded(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def put() -> dict[str, dict[str, Any]]:
        store = await open_store(tmp_path, index_database)
        try:
            receipts = await store.put_many([Submission(f"k{n}", m) for n, m in enumerate(minilab)])
            return {r.measurement_uid: m for r, m in zip(receipts, minilab, strict=True)}
        finally:
            await store.close()

    async def query(**filters: Any) -> list[dict[str, Any]]:
        store = await open_store(tmp_path, index_database)
        try:
            return (await store.query(Query(limit=100, **filters))).results
        finally:
            await store.close()

    stored = asyncio.run(put())
    with raw(tmp_path, index_database) as sql:  # make it an index of the old layout
        sql("DELETE FROM measured")
        sql(OLD_VERDICTS)
        for uid, m in stored.items():
            for position, (service, function) in enumerate([*old(m), *old(m)]):  # each moves once
                args = (uid, position, service, function, "blocked", None)
                sql("INSERT INTO verdicts VALUES (%s, %s, %s, %s, %s, %s)", *args)

    results = asyncio.run(query())
    for summary in results:
        m = stored[summary["measurement_uid"]]
        assert summary["service"] == m["test_keys"]["msgwatch_service"]
        assert summary["functions"] == [function for _, function in old(m)]
    whatsapp = asyncio.run(query(service="whatsapp", function="voice"))
    assert [r["service"] for r in whatsapp] == ["whatsapp"]
    with raw(tmp_path, index_database) as sql:
        gone = (
            "SELECT 1 FROM sqlite_master WHERE name = 'verdicts'"
            if index_database is None
            else "SELECT 1 FROM pg_tables WHERE tablename = 'verdicts'"
        )
        assert sql(gone) == []
    assert asyncio.run(query()) == results  # opened again: nothing more to do

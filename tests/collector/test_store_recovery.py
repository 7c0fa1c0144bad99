"""Recovery and index failures, made deterministic: a torn member, a commit that fails (once,
twice, or after it committed), a crash between the archive's fsync and the index commit, a
PostgreSQL connection killed under the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest

from msgwatch.collector.store import DurableStore, Query, StoreUnavailable, Submission, open_index
from msgwatch.collector.store.archive import Archive, compress_member, lines_of
from msgwatch.collector.store.index import Index
from msgwatch.collector.store.records import parse_record


class FlakyIndex:
    """A real index whose next ``fail`` commits raise (after committing, with ``after``)."""

    def __init__(self, real: Index) -> None:
        self.real = real
        self.fail = 0
        self.after = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def commit(self, rows: Any, progress: Any) -> None:
        if self.fail:
            self.fail -= 1
            if self.after:
                self.real.commit(rows, progress)
            raise StoreUnavailable("injected: the commit failed")
        self.real.commit(rows, progress)


def archive_records(data_dir: Path) -> list[tuple[str, str]]:
    """``(uid, key)`` of every record in the archive, in order."""
    archive = Archive(data_dir)
    out = []
    for file in archive.files():
        scan = archive.scan(file, 0)
        for member in scan:
            for _, line in lines_of(member.data):
                parsed = parse_record(line)
                assert parsed is not None
                out.append((parsed[0], parsed[1]))
        assert scan.torn_at is None
    return out


async def index_uids(store: DurableStore) -> set[str]:
    uids: set[str] = set()
    cursor = None
    while True:
        page = await store.query(Query(limit=1000, cursor=cursor))
        uids |= {r["measurement_uid"] for r in page.results}
        if page.next_cursor is None:
            return uids
        cursor = page.next_cursor


async def open_flaky(data_dir: Path, database: str | None) -> tuple[DurableStore, FlakyIndex]:
    flaky = FlakyIndex(open_index(data_dir, database))
    return await DurableStore.open(data_dir, flaky), flaky


def test_a_failed_commit_is_completed_by_the_next_group(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store, flaky = await open_flaky(tmp_path, index_database)
        try:
            flaky.fail = 1
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("a", minilab[0]), Submission("b", minilab[1])])
            (written,) = [uid for uid, key in archive_records(tmp_path) if key == "a"]
            # the client retries "a" (not "b"): it gets the uid already in the archive, stored
            (retry,) = await store.put_many([Submission("a", minilab[0])])
            assert retry.measurement_uid == written and not retry.duplicate
            records = archive_records(tmp_path)
            assert len(records) == 2  # nothing written twice
            assert await index_uids(store) == {uid for uid, _ in records}  # "b" indexed too
            (b,) = await store.put_many([Submission("b", minilab[1])])
            assert b.duplicate
        finally:
            await store.close()

    asyncio.run(main())


def test_a_commit_that_fails_twice_leaves_an_orphan_that_a_retry_replaces(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store, flaky = await open_flaky(tmp_path, index_database)
        try:
            flaky.fail = 2
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("a", minilab[0])])
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("c", minilab[2])])
            (a,) = await store.put_many([Submission("a", minilab[0])])
            records = archive_records(tmp_path)
            assert [key for _, key in records] == ["a", "c", "a"]
            assert a.measurement_uid == records[2][0] != records[0][0]
            # "c" had its second chance with that last group; the first "a" had had its own
            assert await index_uids(store) == {a.measurement_uid, records[1][0]}
            assert await store.get(records[0][0]) is None  # the orphan is not a measurement
        finally:
            await store.close()

    asyncio.run(main())


def test_a_commit_whose_outcome_was_lost_is_not_stored_twice(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store, flaky = await open_flaky(tmp_path, index_database)
        try:
            flaky.fail, flaky.after = 1, True  # committed, but the answer was an error
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("a", minilab[0])])
            a, _ = await store.put_many([Submission("a", minilab[0]), Submission("z", minilab[1])])
            assert a.duplicate
            assert len(archive_records(tmp_path)) == 2
            assert len(await index_uids(store)) == 2
        finally:
            await store.close()

    asyncio.run(main())


def test_a_crash_between_fsync_and_commit_is_recovered_at_open(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store, flaky = await open_flaky(tmp_path, index_database)
        (kept,) = await store.put_many([Submission("kept", minilab[0])])
        flaky.fail = 1
        with pytest.raises(StoreUnavailable):
            await store.put_many([Submission("a", minilab[1]), Submission("b", minilab[2])])
        await store.close()  # the orphans were only in memory: as after a crash
        store = await DurableStore.open(tmp_path, open_index(tmp_path, index_database))
        try:
            records = archive_records(tmp_path)
            assert await index_uids(store) == {uid for uid, _ in records}
            receipts = await store.put_many([Submission(k, minilab[0]) for k in ("a", "b")])
            assert all(r.duplicate for r in receipts)
            assert {r.measurement_uid for r in receipts} == {uid for uid, _ in records[1:]}
            assert await store.get(kept.measurement_uid) == minilab[0]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_torn_member_is_cut_at_open_and_writing_goes_on(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store = await DurableStore.open(tmp_path, open_index(tmp_path, index_database))
        (first,) = await store.put_many([Submission("first", minilab[0])])
        await store.close()
        (segment,) = Archive(tmp_path).files()
        path = tmp_path / segment
        good = path.stat().st_size
        torn = compress_member(b'{"measurement_uid": "never acknowledged"}\n' * 500, 1)
        with open(path, "ab") as f:
            f.write(torn[: len(torn) // 2])
        store = await DurableStore.open(tmp_path, open_index(tmp_path, index_database))
        try:
            assert path.stat().st_size == good
            (second,) = await store.put_many([Submission("second", minilab[1])])
            assert [k for _, k in archive_records(tmp_path)] == ["first", "second"]
            assert Archive(tmp_path).files() == [segment]  # appended after the cut
            assert await store.get(first.measurement_uid) == minilab[0]
            assert await store.get(second.measurement_uid) == minilab[1]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_killed_postgresql_connection_fails_one_group_then_reconnects(
    tmp_path: Path, postgres_url: str, minilab: list[dict[str, Any]]
) -> None:
    from tests.collector.pgserver import fresh_database

    database = fresh_database(postgres_url)

    async def main() -> None:
        store = await DurableStore.open(tmp_path, open_index(tmp_path, database))
        try:
            await store.put_many([Submission("before", minilab[0])])
            with psycopg.connect(database, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            await asyncio.sleep(0.2)
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("during", minilab[1])])
            (after,) = await store.put_many([Submission("during", minilab[1])])
            assert not after.duplicate
            assert await store.get(after.measurement_uid) == minilab[1]  # readers reconnect too
            assert (await store.health())["status"] == "ok"
        finally:
            await store.close()

    asyncio.run(main())


def test_the_index_row_of_a_recovered_record_is_the_writers(
    tmp_path: Path, minilab: list[dict[str, Any]]
) -> None:
    """Recovery builds the same summary (service and functions too) the writer built."""

    async def main() -> list[dict[str, Any]]:
        store = await DurableStore.open(tmp_path, open_index(tmp_path))
        try:
            await store.put_many(
                [
                    Submission(f"k{n}", m, "20261124T000000Z_x_ZZ_0_n1_rrrrrrrrrrrrrrrr")
                    for n, m in enumerate(minilab)
                ]
            )
            return (await store.query(Query(limit=100))).results
        finally:
            await store.close()

    before = asyncio.run(main())
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    async def reread() -> list[dict[str, Any]]:
        store = await DurableStore.open(tmp_path, open_index(tmp_path))
        try:
            return (await store.query(Query(limit=100))).results
        finally:
            await store.close()

    assert asyncio.run(reread()) == before
    assert all(r["report_id"].endswith("rrrr") for r in before)
    assert all(r["service"] and r["functions"] for r in before)

"""The store's public scan: every stored measurement once, in archive order, within its bounds;
the same through the running store (``DurableStore.scan``) and the read-only reader
(``open_reader``), before and after a crash's torn member is recovered."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.store import (
    DurableStore,
    Record,
    StoreUnavailable,
    Submission,
    TimeBound,
    open_reader,
    open_store,
)
from msgwatch.collector.store.archive import Archive
from msgwatch.collector.store.scan import time_bound
from msgwatch.collector.store.writer import SCAN_BATCH
from tests.collector.test_export import dated, store_with_an_orphan
from tests.collector.test_store_recovery import archive_records


def small(n: int, day: int = 1, hour: int = 12) -> dict[str, Any]:
    """A small measurement started on 2026-11-``day`` at ``hour``."""
    return {
        "measurement_start_time": f"2026-11-{day:02d} {hour:02d}:00:00",
        "probe_cc": "IT",
        "probe_asn": "AS3269",
        "test_name": "signal",
        "input": f"n{n}",
        "test_keys": {},
    }


async def scanned(
    store: DurableStore, since: TimeBound = None, until: TimeBound = None
) -> list[Record]:
    return [record async for record in store.scan(since, until)]


def read_all(data_dir: Path, database: str | None, **bounds: TimeBound) -> list[Record]:
    with open_reader(data_dir, database) as reader:
        return list(reader.scan(**bounds))


def test_the_scan_yields_every_stored_record_once_in_archive_order(
    tmp_path: Path, index_database: str | None
) -> None:
    count = 2 * SCAN_BATCH + 17  # more than one batch of the asynchronous scan

    async def main() -> list[Record]:
        store = await open_store(tmp_path, index_database)
        assert isinstance(store, DurableStore)
        try:
            for start in range(0, count, 100):  # several groups, so several members
                batch = [
                    Submission(f"k{n}", small(n)) for n in range(start, min(count, start + 100))
                ]
                await store.put_many(batch)
            await store.put_many([Submission("k3", small(3))])  # a duplicate stores nothing
            return await scanned(store)
        finally:
            await store.close()

    records = asyncio.run(main())
    assert [r.idempotency_key for r in records] == [f"k{n}" for n in range(count)]
    assert [r.measurement["input"] for r in records] == [f"n{n}" for n in range(count)]
    assert [(r.uid, r.idempotency_key) for r in records] == archive_records(tmp_path)
    assert all(r.report_id is None and r.received_at.endswith("Z") for r in records)
    assert read_all(tmp_path, index_database) == records  # the reader sees the same


def test_records_without_an_index_row_are_skipped(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    stored = asyncio.run(store_with_an_orphan(tmp_path, index_database, dated(minilab, 4)))
    assert len(archive_records(tmp_path)) == 5  # the orphan is in the archive, not in the index
    records = read_all(tmp_path, index_database)
    assert {r.uid: r.idempotency_key for r in records} == stored


def test_bounds_select_on_the_start_time_since_inclusive_until_exclusive(
    tmp_path: Path, index_database: str | None
) -> None:
    async def main() -> list[list[str]]:
        store = await open_store(tmp_path, index_database)
        assert isinstance(store, DurableStore)
        try:
            days = [5, 1, 3, 2, 4]  # written out of start-time order
            await store.put_many([Submission(f"d{d}", small(d, day=d)) for d in days])
            found = []
            bounds: list[tuple[TimeBound, TimeBound]] = [
                ("2026-11-02", "2026-11-04"),
                (dt.date(2026, 11, 2), dt.datetime(2026, 11, 4, 12)),
                ("2026-11-04T12:00:00", None),
                (None, "2026-11-01 12:00:00"),
                (dt.datetime(2026, 11, 3, 13, tzinfo=dt.timezone(dt.timedelta(hours=2))), None),
            ]
            for since, until in bounds:
                found.append([r.idempotency_key for r in await scanned(store, since, until)])
            return found
        finally:
            await store.close()

    assert asyncio.run(main()) == [
        ["d3", "d2"],  # archive order, not start-time order
        ["d3", "d2"],  # 2026-11-04 12:00 is excluded
        ["d5", "d4"],
        [],
        ["d5", "d3", "d4"],  # 13:00+02:00 is 11:00 UTC
    ]
    with open_reader(tmp_path, index_database) as reader:
        assert [r.idempotency_key for r in reader.scan(since="2026-11-04")] == ["d5", "d4"]


def test_bad_bounds_are_refused_before_reading() -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        time_bound("24/11/2026")
    assert time_bound("2026-11-24") == "2026-11-24 00:00:00"
    assert time_bound(dt.datetime(2026, 11, 24, 10, 5, 7, 999)) == "2026-11-24 10:05:07"


def test_a_torn_trailing_member_ends_the_scan_before_and_after_recovery(
    tmp_path: Path, index_database: str | None
) -> None:
    async def write() -> list[Record]:
        store = await open_store(tmp_path, index_database)
        assert isinstance(store, DurableStore)
        try:
            await store.put_many([Submission(f"k{n}", small(n)) for n in range(5)])
            await store.put_many([Submission(f"k{n}", small(n)) for n in range(5, 9)])
            return await scanned(store)
        finally:
            await store.close()

    before = asyncio.run(write())
    (file,) = Archive(tmp_path).files()
    path = tmp_path / file
    good = path.stat().st_size
    with open(path, "ab") as f:  # a crash in the middle of writing the next member
        f.write(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    assert read_all(tmp_path, index_database) == before  # beside a collector: not an error

    async def reopen() -> list[Record]:
        store = await open_store(tmp_path, index_database)  # recovery cuts the torn member
        assert isinstance(store, DurableStore)
        try:
            assert path.stat().st_size == good
            return await scanned(store)
        finally:
            await store.close()

    assert asyncio.run(reopen()) == before


def test_a_scan_stopped_early_releases_its_reader(
    tmp_path: Path, index_database: str | None
) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        assert isinstance(store, DurableStore)
        try:
            await store.put_many([Submission(f"k{n}", small(n)) for n in range(SCAN_BATCH + 5)])
            scan = store.scan()
            first = [await anext(scan) for _ in range(3)]
            await scan.aclose()
            assert [r.idempotency_key for r in first] == ["k0", "k1", "k2"]
            assert len(await scanned(store)) == SCAN_BATCH + 5  # and the store goes on
        finally:
            await store.close()

    asyncio.run(main())


def test_the_reader_needs_an_archive(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_reader(tmp_path)


def test_the_reader_refuses_an_index_of_another_archive(tmp_path: Path) -> None:
    async def make() -> None:
        store = await open_store(tmp_path)
        await store.close()

    asyncio.run(make())
    (tmp_path / "store-id").write_text("0" * 32 + "\n")
    with pytest.raises(StoreUnavailable):
        open_reader(tmp_path)

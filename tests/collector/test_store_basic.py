"""The store against both index back-ends: writes, duplicates, group commit, reads, paging."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.store import (
    BadCursor,
    DurableStore,
    Query,
    Store,
    StoreUnavailable,
    Submission,
    open_store,
)
from msgwatch.collector.store.writer import make_uid

UID = re.compile(r"^\d{14}\.\d{6}_[A-Z]{2}_[A-Za-z0-9]+_[0-9a-f]{16}$")


def varied(minilab: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` measurements with chosen start times (some equal), countries, ASNs and tests."""
    out = []
    for n in range(count):
        m = copy.deepcopy(minilab[n % len(minilab)])
        m["measurement_start_time"] = f"2026-11-{1 + n // 3:02d} 10:00:00"  # three per day
        m["probe_cc"] = ("IT", "IR", "RU")[n % 3]
        m["probe_asn"] = f"AS{100 + n % 4}"
        if n % 5 == 0:
            m["test_name"] = "signal"
            m["test_keys"] = {"signal_backend_status": "blocked", "signal_backend_failure": "x"}
        out.append(m)
    return out


async def put_all(store: Store, measurements: list[dict[str, Any]]) -> list[str]:
    receipts = await store.put_many([Submission(f"key-{n}", m) for n, m in enumerate(measurements)])
    return [r.measurement_uid for r in receipts]


async def every_page(store: Store, **filters: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await store.query(Query(cursor=cursor, **filters))
        results += page.results
        if page.next_cursor is None:
            return results
        cursor = page.next_cursor


def test_put_get_and_duplicates(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        try:
            first = await store.put_many(
                [
                    Submission("a", minilab[0], "20261124T103225Z_x_ZZ_0_n1_aaaaaaaaaaaaaaaa"),
                    Submission("b", minilab[1]),
                    Submission("a", minilab[2]),
                ]
            )
            assert [r.duplicate for r in first] == [False, False, True]
            assert first[2].measurement_uid == first[0].measurement_uid
            assert all(UID.match(r.measurement_uid) for r in first)
            assert "_ZZ_msgwatchservice_" in first[0].measurement_uid
            again = await store.put_many([Submission("b", minilab[3]), Submission("c", minilab[3])])
            assert again[0].measurement_uid == first[1].measurement_uid and again[0].duplicate
            assert not again[1].duplicate
            assert await store.get(first[0].measurement_uid) == minilab[0]
            assert await store.get(again[1].measurement_uid) == minilab[3]
            assert await store.get("20261124000000.000000_ZZ_x_0000000000000000") is None
            assert await store.get("x" * 5000) is None
            (summary,) = (await store.query(Query(limit=1000, probe_cc="ZZ"))).results[:1]
            assert set(summary) == {
                "measurement_uid",
                "report_id",
                "measurement_start_time",
                "received_at",
                "probe_cc",
                "probe_asn",
                "test_name",
                "software_name",
                "input",
                "service",
                "functions",
            }
            health = await store.health()
            assert health["status"] == "ok" and health["stored"] == 3 and health["duplicates"] == 2
        finally:
            await store.close()
        with pytest.raises(StoreUnavailable):
            await store.put_many([Submission("d", minilab[0])])

    asyncio.run(main())


def test_concurrent_calls_share_group_commits(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        assert isinstance(store, DurableStore)
        try:
            calls = [
                store.put_many([Submission(f"k{n % 40}", minilab[n % len(minilab)])])
                for n in range(200)
            ]
            receipts = [r for call in await asyncio.gather(*calls) for r in call]
            by_key: dict[str, set[str]] = {}
            for n, receipt in enumerate(receipts):
                by_key.setdefault(f"k{n % 40}", set()).add(receipt.measurement_uid)
            assert all(len(uids) == 1 for uids in by_key.values())  # one uid per key, always
            assert sum(not r.duplicate for r in receipts) == 40
            assert store.stats.groups < 50  # 200 calls, far fewer fsyncs and commits
        finally:
            await store.close()

    asyncio.run(main())


def test_a_measurement_that_cannot_be_encoded_fails_only_its_own_call(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        try:
            bad = dict(minilab[0], test_runtime=b"not JSON")
            outcomes = await asyncio.gather(
                store.put_many([Submission("bad", bad)]),
                store.put_many([Submission("good", minilab[1])]),
                return_exceptions=True,
            )
            assert isinstance(outcomes[0], ValueError)
            assert not isinstance(outcomes[1], BaseException) and not outcomes[1][0].duplicate
            huge = dict(minilab[0], test_runtime=2**80)  # beyond orjson, still JSON
            (receipt,) = await store.put_many([Submission("huge", huge)])
            assert (await store.get(receipt.measurement_uid) or {})["test_runtime"] == 2**80
        finally:
            await store.close()

    asyncio.run(main())


def test_query_order_filters_and_paging(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    measurements = varied(minilab, 30)

    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        try:
            uids = await put_all(store, measurements)
            by_uid = dict(zip(uids, measurements, strict=True))
            everything = await every_page(store, limit=7)
            order = [(r["measurement_start_time"], r["measurement_uid"]) for r in everything]
            assert order == sorted(order, reverse=True)
            assert sorted(uid for _, uid in order) == sorted(uids)

            def expect(predicate: Any) -> list[str]:
                return sorted(u for u, m in by_uid.items() if predicate(m))

            async def got(**filters: Any) -> list[str]:
                return sorted(r["measurement_uid"] for r in await every_page(store, **filters))

            assert await got(probe_cc="IR", limit=4) == expect(lambda m: m["probe_cc"] == "IR")
            assert await got(probe_asn="AS101") == expect(lambda m: m["probe_asn"] == "AS101")
            assert await got(test_name="signal") == expect(lambda m: m["test_name"] == "signal")
            assert await got(since="2026-11-03 10:00:00", until="2026-11-05") == expect(
                lambda m: "2026-11-03 10:00:00" <= m["measurement_start_time"] < "2026-11-05"
            )

            def subject(m: dict[str, Any]) -> tuple[str, list[str]]:
                """What ``m`` measured: its service and functions (a signal test: OONI's)."""
                if m["test_name"] == "signal":
                    return "signal", ["text"]
                keys = m["test_keys"]
                return keys["msgwatch_service"], [f["function"] for f in keys["msgwatch_functions"]]

            for service, function in (("signal", "text"), ("whatsapp", "voice"), ("zoom", "web")):
                assert await got(service=service, function=function) == expect(
                    lambda m, s=service, f=function: subject(m)[0] == s and f in subject(m)[1]
                )
            assert await got(service="whatsapp") == expect(lambda m: subject(m)[0] == "whatsapp")
            assert await got(function="web", probe_cc="IT") == expect(
                lambda m: m["probe_cc"] == "IT" and "web" in subject(m)[1]
            )
            first = (await store.query(Query(limit=1))).results[0]
            service, functions = subject(by_uid[first["measurement_uid"]])
            assert (first["service"], first["functions"]) == (service, functions)
            last = await store.query(Query(limit=1000))
            assert len(last.results) == 30 and last.next_cursor is None
            assert len((await store.query(Query(limit=10_000))).results) == 30  # clamped
            assert len((await store.query(Query(limit=0))).results) == 1
            assert (await store.query(Query(probe_cc="XX"))).results == []
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "v1.",
        "v1.!!!!",
        "v1.bm90IGpzb24",
        "v1.WzEsMl0",
        "v1.WyJ4Il0",
        "v1.WyJ4IiwiIl0",
        "v2.x",
    ],
)
def test_bad_cursors(tmp_path: Path, cursor: str) -> None:
    async def main() -> None:
        store = await open_store(tmp_path)
        try:
            with pytest.raises(BadCursor):
                await store.query(Query(cursor=cursor))
        finally:
            await store.close()

    asyncio.run(main())


def test_reopen_keeps_everything_and_a_lost_index_is_rebuilt(
    tmp_path: Path, minilab: list[dict[str, Any]]
) -> None:
    measurements = varied(minilab, 12)

    async def main() -> None:
        store = await open_store(tmp_path)
        uids = await put_all(store, measurements)
        before = await every_page(store, limit=5)
        await store.close()
        for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        store = await open_store(tmp_path)  # recovery indexes the whole archive again
        try:
            assert await every_page(store, limit=5) == before
            for uid, m in zip(uids, measurements, strict=True):
                assert await store.get(uid) == m
            again = await put_all(store, measurements)
            assert again == uids
        finally:
            await store.close()

    asyncio.run(main())


def test_one_collector_per_data_directory_and_one_archive_per_index(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        store = await open_store(tmp_path / "one", index_database)
        try:
            with pytest.raises(StoreUnavailable, match="another collector"):
                await open_store(tmp_path / "one", index_database)
            if index_database is not None:
                with pytest.raises(StoreUnavailable, match="another archive"):
                    await open_store(tmp_path / "two", index_database)
        finally:
            await store.close()

    asyncio.run(main())


def test_uid_shape() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 24, 10, 32, 25, 123456, tzinfo=dt.UTC)
    uid = make_uid(now, "it", "facebook_messenger")
    assert uid.startswith("20261124103225.123456_IT_facebookmessenger_")
    assert make_uid(now, "Z9", "a/b c").split("_")[1:3] == ["ZZ", "abc"]

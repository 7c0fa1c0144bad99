"""Export of the archive: each stored measurement once, orphans skipped, JSONL and Parquet."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from msgwatch.collector.export import PARQUET_COLUMNS, export, time_bound
from msgwatch.collector.store import DurableStore, StoreUnavailable, Submission, open_index
from tests.collector.test_store_recovery import FlakyIndex, archive_records


def dated(minilab: list[dict[str, Any]], days: int) -> list[dict[str, Any]]:
    out = []
    for day in range(days):
        m = copy.deepcopy(minilab[day % len(minilab)])
        m["measurement_start_time"] = f"2026-11-{day + 1:02d} 12:00:00"
        out.append(m)
    return out


async def store_with_an_orphan(
    data_dir: Path, database: str | None, measurements: list[dict[str, Any]]
) -> dict[str, str]:
    """Store ``measurements`` (keys ``k0``…); ``k0`` is first written as an orphan (its index
    commit failed twice) and then stored again by its retry. ``{uid: key}`` of what is stored."""
    flaky = FlakyIndex(open_index(data_dir, database))
    store = await DurableStore.open(data_dir, flaky)
    try:
        flaky.fail = 2
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await store.put_many([Submission("k0", measurements[0])])
        receipts = await store.put_many(
            [Submission(f"k{n}", m) for n, m in enumerate(measurements)]
        )
        assert not any(r.duplicate for r in receipts)
        return {r.measurement_uid: f"k{n}" for n, r in enumerate(receipts)}
    finally:
        await store.close()


def test_jsonl_has_every_stored_measurement_once(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    measurements = dated(minilab, 10)
    stored = asyncio.run(store_with_an_orphan(data_dir, index_database, measurements))
    assert len(archive_records(data_dir)) == 11  # the orphan (and its failed twin) are there
    out = tmp_path / "out.jsonl"
    assert export(data_dir, "jsonl", out, database=index_database) == 10
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(m["measurement_uid"] for m in lines) == sorted(stored)
    for m in lines:
        n = int(stored[m.pop("measurement_uid")][1:])
        assert m == measurements[n]
    # ranges on measurement_start_time: dates, datetimes, text; until is exclusive
    ranges: list[tuple[str | dt.date | None, str | dt.date | None, int]] = [
        (dt.date(2026, 11, 3), dt.date(2026, 11, 6), 3),
        ("2026-11-03 12:00:01", None, 7),
        (None, dt.datetime(2026, 11, 2, 12, 0, 0), 1),
        ("2030-01-01", None, 0),
    ]
    for since, until, expected in ranges:
        assert export(data_dir, "jsonl", out, since, until, database=index_database) == expected
        assert len(out.read_text().splitlines()) == expected


def test_parquet_has_flat_summaries_and_the_raw_measurement(
    tmp_path: Path, index_database: str | None, minilab: list[dict[str, Any]]
) -> None:
    data_dir = tmp_path / "data"
    measurements = dated(minilab, 6)
    stored = asyncio.run(store_with_an_orphan(data_dir, index_database, measurements))
    out = tmp_path / "out.parquet"
    assert export(data_dir, "parquet", out, database=index_database) == 6
    with duckdb.connect() as db:
        described = db.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()
        assert [(c[0], c[1]) for c in described] == [
            (name, kind.replace("function", '"function"')) for name, kind in PARQUET_COLUMNS.items()
        ]
        rows = db.execute(
            f"SELECT measurement_uid, probe_cc, test_name, input, service, functions, measurement "
            f"FROM '{out}' ORDER BY measurement_uid"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(stored)
    for uid, cc, test_name, input_, service, functions, raw in rows:
        m = measurements[int(stored[uid][1:])]
        assert json.loads(raw) == m
        assert (cc, test_name, input_) == (m["probe_cc"], m["test_name"], m["input"])
        keys = m["test_keys"]
        assert service == keys["msgwatch_service"]
        assert functions == [f["function"] for f in keys["msgwatch_functions"]]
    assert export(data_dir, "parquet", out, since="2031-01-01", database=index_database) == 0
    with duckdb.connect() as db:
        assert db.execute(f"SELECT count(*) FROM '{out}'").fetchone() == (0,)


def test_export_beside_a_running_store(tmp_path: Path, minilab: list[dict[str, Any]]) -> None:
    async def main() -> None:
        store = await DurableStore.open(tmp_path, open_index(tmp_path))
        try:
            await store.put_many([Submission(f"k{n}", m) for n, m in enumerate(minilab)])
            assert export(tmp_path, "jsonl", tmp_path / "live.jsonl") == len(minilab)
            await store.put_many([Submission("one more", minilab[0])])
            assert export(tmp_path, "jsonl", tmp_path / "live.jsonl") == len(minilab) + 1
        finally:
            await store.close()

    asyncio.run(main())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        export(tmp_path, "csv", tmp_path / "x")
    with pytest.raises(OSError):
        export(tmp_path / "missing", "jsonl", tmp_path / "x")
    with pytest.raises(ValueError):
        time_bound("24/11/2026")
    assert time_bound("2026-11-24") == "2026-11-24 00:00:00"
    assert time_bound("2026-11-24T10:00:00") == "2026-11-24 10:00:00"
    assert not (tmp_path / "x").exists()

"""Built ahead and cached per committed state: the roll-ups (``Observatory.warm``), every
country's networks, and the uid → day index of the measurement page (with its time hint)."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.inputs.jsonl import jsonl_sources
from msgwatch.analysis.lake import read_parquet_sql
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.dashboard import data, data_overview, data_rollup
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.data_sql import DAY, Reader
from msgwatch.dashboard.filters import BadQuery, ViewFilters
from tests.dashboard import fixture

DAYS = ViewFilters(since=fixture.START, until=fixture.START + dt.timedelta(days=3), grain="day")


@pytest.fixture
def observatory(observatory_dir: fixture.Observatory) -> Observatory:
    return Observatory(observatory_dir.lake)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty private roll-up cache folder."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(data_rollup, "cache_dir", lambda: folder)
    return folder


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str | None]]]:
    """The (table, since) of every read of observations and verdicts (None: every day)."""
    seen: list[tuple[str, str | None]] = []
    original = Reader.source

    def source(self: Reader, table: str, since: str | None = None, until: str | None = None) -> Any:
        if table in ("verdicts", "observations"):
            seen.append((table, since))
        return original(self, table, since, until)

    monkeypatch.setattr(Reader, "source", source)
    yield seen


def _daily(observatory: Observatory) -> list[tuple[int, int]]:
    view = observatory.comparison("AZ", fixture.CENSORED, "whatsapp", "voice", DAYS)
    return [(p.counts.measurements, p.counts.failing) for p in view.subject.points]


def test_warm_builds_once_under_concurrent_calls(
    observatory: Observatory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    original = data_rollup._build

    def counted(aggregates: list[str], targets: dict[int, Path]) -> bool:
        builds.append(aggregates)
        return original(aggregates, targets)

    monkeypatch.setattr(data_rollup, "_build", counted)
    assert not list(cache.glob("*.parquet"))
    hourly = _daily(observatory)  # no roll-up yet: read from the hourly rows, none built
    assert not list(cache.glob("*.parquet")) and not builds
    threads = [threading.Thread(target=observatory.warm) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    observatory.warm()
    with Reader(observatory.lake_dir) as reader:
        months = reader.files("aggregates")
    assert sorted(builds) == [[name] for name in sorted(months)]  # each month's once
    assert len(list(cache.glob("*.parquet"))) == len(data_rollup.LEVELS) * len(months)
    assert _daily(observatory) == hourly == [(96, 0), (96, 72), (96, 24)]


def test_reads_never_wait_for_a_build(observatory: Observatory, cache: Path) -> None:
    with data_rollup._LOCK:  # a build in progress
        assert _daily(observatory) == [(96, 0), (96, 72), (96, 24)]
        assert observatory.networks("AZ")[-3:] == [fixture.CENSORED, fixture.CONTROL, "AS65003"]
    assert not list(cache.glob("*.parquet"))


def test_networks_of_every_country_in_one_query(
    observatory: Observatory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data._NETWORKS.clear()
    queries: list[str] = []
    original = Reader._run

    def run(sql: str, params: Any) -> list[tuple[Any, ...]]:
        queries.append(sql)
        return original(sql, params)

    monkeypatch.setattr(Reader, "_run", staticmethod(run))
    everything = observatory.all_networks()
    assert len(queries) == 1
    for cc in [*sorted(everything), "ZZ"]:
        assert observatory.networks(cc) == list(everything.get(cc, ()))
    assert len(queries) == 1  # cached for the committed state
    assert everything["AZ"][-3:] == (fixture.CENSORED, fixture.CONTROL, "AS65003")


def _uid(observatory: Observatory) -> tuple[str, str]:
    event = observatory.events(ViewFilters(asn=fixture.CENSORED, since=fixture.START))[0][0]
    view = observatory.event(event.event_id)
    assert view is not None
    row = view.verdicts[0]
    return row["measurement_uid"], row["measurement_start_time"]


def test_measurement_by_the_uid_index(
    observatory: Observatory, reads: list[tuple[str, str | None]]
) -> None:
    uid, start = _uid(observatory)
    data._UIDS.clear()
    reads.clear()
    first = observatory.measurement(uid)
    assert first is not None and first.steps and first.measurement_start_time == start
    everything = [r for r in reads if r[1] is None]
    assert len(everything) == 2  # the index: one scan of verdicts and observations
    reads.clear()
    assert observatory.measurement(uid) == first
    assert reads and all(since == f"{start[:10]} 00:00:00" for _, since in reads)
    reads.clear()
    assert observatory.measurement("sha256-none") is None
    assert not reads  # not in the index: nothing read


def test_measurement_time_hint(
    observatory: Observatory, reads: list[tuple[str, str | None]]
) -> None:
    uid, start = _uid(observatory)
    data._UIDS.clear()
    reads.clear()
    view = observatory.measurement(uid, start)
    assert view is not None and view.measurement_start_time == start
    assert reads == [
        ("verdicts", f"{start[:10]} 00:00:00"),
        ("observations", f"{start[:10]} 00:00:00"),
    ]
    # a wrong day: passed over, then found by the index
    assert observatory.measurement(uid, "2020-01-01T00:00:00Z") == view
    assert observatory.measurement(uid, start[:10]) == view
    for bad in ("yesterday", "2026-13-01", "2026-05-20 10:00:00" + "0" * 60, "2026-05-20;"):
        with pytest.raises(BadQuery):
            observatory.measurement(uid, bad)


def _straddling_lake(tmp_path: Path, hours: range) -> Path:
    """A lake from lab measurements an hour apart from 30 April 20:00 (``hours``), one pass."""
    source = fixture._lab("whatsapp", "AS64513")
    start = dt.datetime(2026, 4, 30, 20)
    measurements = tmp_path / f"m{hours.start}-{hours.stop}.jsonl"
    measurements.write_bytes(
        b"".join(
            orjson.dumps(fixture._copy(source, fixture.CONTROL, start + dt.timedelta(hours=h)))
            + b"\n"
            for h in hours
        )
    )
    lake_dir = tmp_path / "lake"
    run_pass(PassConfig(sources=jsonl_sources([measurements]), out_dir=lake_dir, workers=1))
    return lake_dir


def _total(reader: Reader, source: str | None) -> list[tuple[Any, ...]]:
    return reader.query(lambda _: f"SELECT sum(measurements) FROM {source}")


WINDOW = ("2026-04-27 00:00:00", "2026-05-11 00:00:00")
"""Whole weeks (from the epoch's Thursdays), whole days and edges around the straddling week."""


def test_rollups_cover_every_month_of_the_lake(tmp_path: Path, cache: Path) -> None:
    """The aggregates are one file per month, and so are the roll-ups: a week that straddles two
    months has a row in each, and every level sums to the hourly rows."""
    lake_dir = _straddling_lake(tmp_path, range(8))
    with Reader(lake_dir) as reader:
        files = reader.files("aggregates")
        assert len(files) == 2  # April and May
        built = data_rollup.warm(reader)
        assert set(built) == set(data_rollup.LEVELS)
        hourly = _total(reader, reader.source("aggregates"))
        assert hourly[0][0] > 0
        for seconds in data_rollup.LEVELS:
            assert len(built[seconds].built) == 2 and not built[seconds].pending
            assert _total(reader, read_parquet_sql(list(built[seconds].built))) == hourly
        assert data_rollup.ready(reader, files) == built
        april = data_rollup.ready(reader, files[:1])  # one file's roll-ups stand on their own
        assert all(level.built == built[s].built[:1] for s, level in april.items())
        for grain in (DAY, data_rollup.WEEK, data_rollup.ANY_GRAIN):
            assert _total(reader, data_rollup.relation(reader, WINDOW, grain)) == hourly


def test_a_pass_rebuilds_only_the_months_it_changed(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pass with buckets in May only rewrites May's aggregates file: warming again builds
    May's roll-ups and keeps April's (same files), removes the old May ones, and until it does
    the old-May-less relation reads May's new hours, exactly."""
    lake_dir = _straddling_lake(tmp_path, range(8))
    with Reader(lake_dir) as reader:
        first = data_rollup.warm(reader)
        before = _total(reader, reader.source("aggregates"))[0][0]
    april = {s: level.built[0] for s, level in first.items()}
    stamps = {s: os.stat(path).st_mtime_ns for s, path in april.items()}
    _straddling_lake(tmp_path, range(10, 14))  # four more hours, on 1 May
    builds: list[list[str]] = []
    original = data_rollup._build

    def counted(aggregates: list[str], targets: dict[int, Path]) -> bool:
        builds.append(aggregates)
        return original(aggregates, targets)

    monkeypatch.setattr(data_rollup, "_build", counted)
    with Reader(lake_dir) as reader:
        files = reader.files("aggregates")
        hourly = _total(reader, reader.source("aggregates"))
        assert hourly == [(before * 12 // 8,)]  # twelve measurements where there were eight
        waiting = data_rollup.ready(reader, files)  # April's built, May's new file pending
        assert {s: level.built for s, level in waiting.items()} == {
            s: (path,) for s, path in april.items()
        }
        assert all(level.pending == (files[1],) for level in waiting.values())
        for grain in (DAY, data_rollup.WEEK, data_rollup.ANY_GRAIN):
            assert _total(reader, data_rollup.relation(reader, WINDOW, grain)) == hourly
        assert data_overview.all_networks(reader)["AZ"] == (fixture.CONTROL,)
        second = data_rollup.warm(reader)
        assert builds == [[files[1]]]  # May only
        for seconds, level in second.items():
            assert level.built[0] == april[seconds] and not level.pending
            assert os.stat(april[seconds]).st_mtime_ns == stamps[seconds]
            assert _total(reader, read_parquet_sql(list(level.built))) == hourly
        for grain in (DAY, data_rollup.WEEK, data_rollup.ANY_GRAIN):
            assert _total(reader, data_rollup.relation(reader, WINDOW, grain)) == hourly
    assert len(list(cache.glob("*.parquet"))) == 2 * len(data_rollup.LEVELS)  # old May's gone

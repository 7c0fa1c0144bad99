"""The monthly roll-ups read as the hourly rows: for windows of any alignment and every grain,
whichever months' roll-ups are built (each level on its own), ``relation`` grouped per bucket and
key gives the hourly aggregates' sums and maxima."""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path

import orjson
import pytest

from msgwatch.analysis.inputs.jsonl import jsonl_sources
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.dashboard import data_rollup
from msgwatch.dashboard.data_series import bucket_sql
from msgwatch.dashboard.data_sql import DAY, Reader
from tests.dashboard import fixture

START = dt.datetime(2026, 3, 25)
HOURS = 24 * 45  # late March to early May: three months, weeks straddling two month ends
GRAINS = (data_rollup.ANY_GRAIN, 3600, DAY, 2 * DAY, data_rollup.WEEK, 2 * data_rollup.WEEK)


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(5)
    sources = [fixture._lab("whatsapp", "AS64513"), fixture._lab("skype", "AS64513")]
    lines = []
    for hour in range(HOURS):
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            at = START + dt.timedelta(hours=hour, minutes=rng.randrange(60))
            asn = rng.choice((fixture.CONTROL, fixture.CENSORED))
            lines.append(orjson.dumps(fixture._copy(rng.choice(sources), asn, at)) + b"\n")
    folder = tmp_path_factory.mktemp("months")
    (folder / "m.jsonl").write_bytes(b"".join(lines))
    run_pass(
        PassConfig(sources=jsonl_sources([folder / "m.jsonl"]), out_dir=folder / "lake", workers=1)
    )
    return folder / "lake"


def _grouped(reader: Reader, source: str, grain: int) -> list[tuple[object, ...]]:
    step = grain or 10**9  # no time steps: one bucket
    return reader.query(
        lambda _: (
            f"SELECT {bucket_sql(step)} AS b, probe_cc, probe_asn, service, function, "
            "verdict, mechanism, sum(measurements), sum(control_ok), max(probes), max(last) "
            f"FROM {source} GROUP BY ALL ORDER BY ALL"
        )
    )


def test_any_window_any_grain_any_months_built(
    lake_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    aside = tmp_path / "aside"
    aside.mkdir()
    monkeypatch.setattr(data_rollup, "cache_dir", lambda: cache)
    rng = random.Random(11)
    with Reader(lake_dir) as reader:
        assert len(reader.files("aggregates")) == 3
        built = data_rollup.warm(reader)
        rollups = sorted(cache.glob("*.parquet"))
        assert len(rollups) == 3 * len(data_rollup.LEVELS)
        assert {s: len(level.built) for s, level in built.items()} == {
            s: 3 for s in data_rollup.LEVELS
        }
        kinds = set()
        for _ in range(20):
            for path in aside.iterdir():
                os.replace(path, cache / path.name)
            for path in rollups:  # each level of each month built or not, on its own
                if rng.random() < 0.4:
                    os.replace(path, aside / path.name)
            kinds.add(tuple(sorted(len(level.pending) for level in
                                   data_rollup.ready(reader, reader.files("aggregates")).values())))  # fmt: skip
            since = START + dt.timedelta(hours=rng.randrange(-48, HOURS + 48),
                                         minutes=rng.choice((0, 0, 30)))  # fmt: skip
            until = since + dt.timedelta(hours=rng.randrange(1, 24 * 40))
            window = (since.strftime("%Y-%m-%d %H:%M:%S"), until.strftime("%Y-%m-%d %H:%M:%S"))
            hourly = (
                f"(SELECT *, bucket AS last FROM {reader.source('aggregates')} "
                f"WHERE bucket >= CAST('{window[0]}' AS TIMESTAMP) "
                f"AND bucket < CAST('{window[1]}' AS TIMESTAMP))"
            )
            for grain in GRAINS:
                rows = data_rollup.relation(reader, window, grain)
                assert rows is not None
                assert _grouped(reader, rows, grain) == _grouped(reader, hourly, grain), (
                    window,
                    grain,
                )
        assert len(kinds) > 3  # many mixes of built and pending months were read

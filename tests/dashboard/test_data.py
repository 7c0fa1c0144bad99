"""The Observatory's views against the fixture's ground truth (tests/dashboard/fixture.py)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from msgwatch.analysis.query import Filters, Lake, LakeMissing
from msgwatch.dashboard import data_rollup
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.data_sql import Reader
from msgwatch.dashboard.filters import BadQuery, ViewFilters
from msgwatch.dashboard.measurements import JsonlMeasurements
from msgwatch.dashboard.model import FAILING
from tests.dashboard import fixture

CALLS = [(s, f) for s in fixture.SERVICES for f in ("video", "voice")]
THREE_DAYS = ViewFilters(since=fixture.START, until=fixture.START + dt.timedelta(hours=72))
BLOCKED_HOURS = list(fixture.BLOCKED)


def _hour(n: int) -> str:
    return (fixture.START + dt.timedelta(hours=n)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def observatory(observatory_dir: fixture.Observatory) -> Observatory:
    return Observatory(observatory_dir.lake, JsonlMeasurements([observatory_dir.measurements]))


@pytest.fixture(scope="module")
def lake_only(observatory_dir: fixture.Observatory) -> Observatory:
    return Observatory(observatory_dir.lake)


def test_a_missing_lake_raises(tmp_path: Path) -> None:
    with pytest.raises(LakeMissing):
        Observatory(tmp_path).overview(ViewFilters())


def test_span_window_and_grain(observatory: Observatory) -> None:
    span = observatory.span()
    assert span is not None and span[0] == _hour(0)
    last = dt.datetime.strptime(span[1], "%Y-%m-%d %H:%M:%S")
    end = (last + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    month = (last + dt.timedelta(hours=1) - dt.timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    assert observatory.window(ViewFilters()) == (month, end)
    assert observatory.window(ViewFilters(since=fixture.START)) == (_hour(0), end)
    until = fixture.START + dt.timedelta(days=3)
    assert observatory.window(ViewFilters(until=until)) == (_hour(0), _hour(72))  # clipped
    assert observatory.grain_seconds(THREE_DAYS) == 3600
    assert observatory.grain_seconds(ViewFilters(since=fixture.START)) == 86400
    assert observatory.networks("AZ")[-3:] == ["AS65001", "AS65002", "AS65003"]


def test_overview_while_blocked(observatory: Observatory) -> None:
    f = ViewFilters(since=fixture.START, until=fixture.START + dt.timedelta(hours=36), cc="AZ")
    view = observatory.overview(f)
    cells = {(c.service, c.function): c for c in view.cells}
    for key in CALLS:
        cell = cells[key]
        assert cell.state == "blocked" and cell.mechanism == "udp.dpi_call"
        assert (cell.networks, cell.networks_failing) == (2, 1)
        # 36 hours x 4 on two networks; the blocked hours 30..35 on AS65001
        assert (cell.counts.measurements, cell.counts.failing, cell.counts.ok) == (288, 24, 264)
        assert cell.pattern == "continuous"
        assert len(cell.events) == 2  # the country event and this series' network event
        assert cell.last_measured == _hour(35)
    assert cells["whatsapp", "text"].state == "ok"
    assert cells["whatsapp", "text"].events == ()
    assert len(view.events) == 5
    blocked = observatory.overview(ViewFilters(**{**f.__dict__, "verdict": "blocked"}))
    assert sorted((c.service, c.function) for c in blocked.cells) == sorted(CALLS)


def test_overview_after_the_block(observatory: Observatory) -> None:
    view = observatory.overview(ViewFilters(**{**THREE_DAYS.__dict__, "cc": "AZ"}))
    cells = {(c.service, c.function): c for c in view.cells}
    for key in CALLS:
        assert cells[key].state == "ok"
        assert cells[key].networks_failing == 0
        assert cells[key].counts.failing == 4 * len(BLOCKED_HOURS)
        assert cells[key].events == ()
    assert cells["whatsapp", "voice"].networks == 3  # AS65003's one measurement
    assert view.countries == ("AZ",)


def test_network_heatmap(observatory: Observatory) -> None:
    view = observatory.network("AZ", fixture.CENSORED, THREE_DAYS)
    assert view.buckets == tuple(_hour(h) for h in range(72))
    for row in view.rows:
        blocked = [i for i, cell in enumerate(row.cells) if cell.state == "blocked"]
        if (row.service, row.function) in CALLS:
            assert blocked == BLOCKED_HOURS
            assert all(row.cells[i].counts.failing == 4 for i in blocked)
        else:
            assert blocked == []
    assert len(view.rows) == 10
    assert len(view.events) == 4
    control = observatory.network("AZ", fixture.CONTROL, THREE_DAYS)
    assert {c.state for r in control.rows for c in r.cells} == {"ok"}
    assert control.events == ()


def test_network_heatmap_is_coarsened(observatory: Observatory) -> None:
    f = ViewFilters(since=fixture.START - dt.timedelta(days=380), until=fixture.START)
    view = observatory.network("AZ", fixture.CENSORED, f)
    assert len(view.buckets) <= 240 and view.grain_seconds >= 86400
    assert all(len(r.cells) == len(view.buckets) for r in view.rows)
    empty = observatory.network(
        "AZ", fixture.CENSORED, ViewFilters(since=fixture.START, grain="day")
    )
    assert {c.state for r in empty.rows for c in r.cells} >= {"no_data"}


def test_comparison(observatory: Observatory) -> None:
    view = observatory.comparison("AZ", fixture.CENSORED, "whatsapp", "voice", THREE_DAYS)
    shares = {p.bucket: p.counts.share for p in view.subject.points}
    assert len(shares) == 72
    assert [h for h in range(72) if shares[_hour(h)] == 1.0] == BLOCKED_HOURS
    assert {shares[_hour(h)] for h in range(72) if h not in fixture.BLOCKED} == {0.0}
    others = {s.probe_asn: s for s in view.other_networks}
    assert view.other_networks[0].probe_asn == fixture.CONTROL
    assert {p.counts.share for p in others[fixture.CONTROL].points} == {0.0}
    assert len(view.control_ok) == 72
    country = observatory.comparison("AZ", None, "whatsapp", "voice", THREE_DAYS)
    assert country.subject.probe_asn is None
    assert country.subject.points[30].counts.share == 0.5
    assert [s.probe_asn for s in country.other_networks][:2] == [fixture.CENSORED, fixture.CONTROL]


def test_events_list_and_paging(observatory: Observatory) -> None:
    everything, cursor = observatory.events(THREE_DAYS)
    assert cursor is None and len(everything) == 5
    paged, cursor = observatory.events(THREE_DAYS, limit=2)
    while cursor is not None:
        more, cursor = observatory.events(THREE_DAYS, limit=2, cursor=cursor)
        paged += more
    assert [e.event_id for e in paged] == [e.event_id for e in everything]
    asn = ViewFilters(**{**THREE_DAYS.__dict__, "asn": fixture.CENSORED})
    assert len(observatory.events(asn)[0]) == 4
    whatsapp = ViewFilters(**{**THREE_DAYS.__dict__, "service": "whatsapp"})
    assert sorted(e.level for e in observatory.events(whatsapp)[0]) == [
        "country",
        "network",
        "network",
    ]
    text = ViewFilters(**{**THREE_DAYS.__dict__, "function": "text"})
    assert observatory.events(text)[0] == []
    before = ViewFilters(since=fixture.START, until=fixture.START + dt.timedelta(hours=30))
    assert observatory.events(before)[0] == []
    with pytest.raises(BadQuery):
        observatory.events(THREE_DAYS, cursor="garbage")
    with pytest.raises(BadQuery):
        observatory.events(THREE_DAYS, limit=0)


def test_country_event_page(observatory: Observatory) -> None:
    (country,) = [e for e in observatory.events(THREE_DAYS)[0] if e.level == "country"]
    view = observatory.event(country.event_id)
    assert view is not None and view.event == country
    assert len(view.network_events) == 4
    assert {(e.service, e.function) for e in view.network_events} == set(CALLS)
    assert len(view.comparisons) == 4
    for comparison in view.comparisons:
        # from a day before the start (hour 30) to a day after the end (hour 54); data ends at 72
        assert comparison.subject.points[0].bucket == _hour(6)
        assert len(comparison.subject.points) == 66
    assert len(view.verdicts) == 4 * 4 * len(BLOCKED_HOURS)
    assert {v["verdict"] for v in view.verdicts} <= set(FAILING)
    assert observatory.event("no-such-event") is None


def test_network_event_page(observatory: Observatory) -> None:
    f = ViewFilters(**{**THREE_DAYS.__dict__, "asn": fixture.CENSORED, "function": "voice"})
    event = observatory.events(f)[0][0]
    view = observatory.event(event.event_id)
    assert view is not None and view.network_events == ()
    assert len(view.comparisons) == 1
    assert len(view.verdicts) == 4 * len(BLOCKED_HOURS)


def test_measurement_page(observatory: Observatory, lake_only: Observatory) -> None:
    f = ViewFilters(**{**THREE_DAYS.__dict__, "asn": fixture.CENSORED, "function": "voice"})
    event = observatory.events(f)[0][0]
    event_view = observatory.event(event.event_id)
    assert event_view is not None
    uid = event_view.verdicts[0]["measurement_uid"]
    view = observatory.measurement(uid)
    assert view is not None and view.raw is not None
    assert view.probe_asn == fixture.CENSORED and view.steps
    times = [s.t for s in view.steps if s.t is not None]
    assert times == sorted(times)
    verdicts = {v["function"]: v["verdict"] for v in view.verdicts}
    assert verdicts["voice"] == "blocked"
    upstream = [r for r in view.replays if "downstream" not in r.target]
    assert {r.function for r in upstream} == {"voice", "video"}
    for replay in upstream:
        assert replay.original and replay.control
        assert replay.original_loss is not None and replay.original_loss > 0
        assert replay.control_loss == 0
        received = (sum(i.rx_packets for i in r) for r in (replay.original, replay.control))
        assert next(received) < next(received)
    bare = lake_only.measurement(uid)
    assert bare is not None and bare.raw is None and bare.replays == ()
    assert len(bare.steps) == len(view.steps)
    assert observatory.measurement("sha256-none") is None


def test_hostile_measurement_is_plain_text(
    observatory: Observatory, observatory_dir: fixture.Observatory
) -> None:
    page = Lake(observatory_dir.lake).verdicts(Filters(probe_asn=fixture.HOSTILE_ASN))
    view = observatory.measurement(page.results[0]["measurement_uid"])
    assert view is not None
    assert fixture.HOSTILE["script"] in {s.failure for s in view.steps}
    assert any(fixture.HOSTILE["rtl"] in s.what for s in view.steps)
    assert all(len(s.what) < 600 for s in view.steps)  # the lake cuts text at 512
    f = ViewFilters(**{**THREE_DAYS.__dict__, "asn": fixture.HOSTILE_ASN})
    cell = observatory.comparison("AZ", fixture.HOSTILE_ASN, "whatsapp", "text", f)
    assert [p.bucket for p in cell.subject.points] == [_hour(40)]
    heat = observatory.network("AZ", fixture.HOSTILE_ASN, THREE_DAYS)
    assert sum(c.state == "ok" for r in heat.rows for c in r.cells) == 6


def _daily(observatory: Observatory, since: dt.datetime) -> list[tuple[str, int, int]]:
    f = ViewFilters(since=since, until=fixture.START + dt.timedelta(days=3), grain="day")
    view = observatory.comparison("AZ", fixture.CENSORED, "whatsapp", "voice", f)
    return [(p.bucket, p.counts.measurements, p.counts.failing) for p in view.subject.points]


def test_daily_grain_reads_the_rollup_exactly(
    observatory: Observatory, monkeypatch: pytest.MonkeyPatch
) -> None:
    observatory.warm()
    days = [_hour(0), _hour(24), _hour(48)]
    # hours 30..47 fail on day 2, 48..53 on day 3; 4 an hour
    assert _daily(observatory, fixture.START) == list(zip(days, [96] * 3, [0, 72, 24], strict=True))
    # a window starting at noon: its first day is read from the hourly rows, the rest rolled up
    noon = fixture.START + dt.timedelta(hours=12)
    assert _daily(observatory, noon) == list(zip(days, [48, 96, 96], [0, 72, 24], strict=True))
    folder = data_rollup.cache_dir()
    assert folder is not None and list(folder.glob("*.parquet"))
    monkeypatch.setattr(data_rollup, "cache_dir", lambda: None)  # no roll-up: the same figures
    assert _daily(observatory, noon) == list(zip(days, [48, 96, 96], [0, 72, 24], strict=True))


def test_network_heatmap_keeps_the_filtered_series(observatory: Observatory) -> None:
    f = ViewFilters(**{**THREE_DAYS.__dict__, "service": "skype", "function": "voice"})
    view = observatory.network("AZ", fixture.CENSORED, f)
    assert [(r.service, r.function) for r in view.rows] == [("skype", "voice")]
    assert [(e.service, e.function) for e in view.events] == [("skype", "voice")]


def test_long_windows_count_the_same(observatory: Observatory) -> None:
    """Weeks, days and hours of a month-long window (roll-ups and edges) add up exactly."""
    observatory.warm()
    month = ViewFilters(since=dt.datetime(2026, 5, 1, 5), until=dt.datetime(2026, 6, 1, 7), cc="AZ")
    short = observatory.overview(ViewFilters(**{**THREE_DAYS.__dict__, "cc": "AZ"}))
    assert observatory.overview(month).cells == short.cells
    daily = observatory.comparison(
        "AZ", None, "skype", "video", ViewFilters(**{**month.__dict__, "grain": "day"})
    )
    three = observatory.comparison(
        "AZ", None, "skype", "video", ViewFilters(**{**THREE_DAYS.__dict__, "grain": "day"})
    )
    assert daily == three


def test_the_rollup_cache_is_bounded(
    observatory: Observatory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warmed lake's current roll-ups stay and its stale ones go; other lakes' stay whole,
    the most recently built first, while they hold at most MAX_FILES files."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    own = data_rollup._hash(os.fspath(observatory.lake_dir.resolve()))

    def files(lake: str, count: int, mtime: int) -> list[Path]:
        made = [folder / f"{lake}-{i:024x}-86400.parquet" for i in range(count)]
        for path in made:
            path.write_bytes(b"")
            os.utime(path, (mtime, mtime))
        return made

    newest = files("a" * 24, data_rollup.MAX_FILES - 1, 3_000)  # fits, with one file to spare
    older = files("b" * 24, 2, 2_000)  # would not fit: goes whole
    oldest = files("c" * 24, 1, 1_000)  # after a lake that did not fit: goes too
    stale = files(own, 1, 4_000)  # the lake's own roll-up of a file it no longer lists
    monkeypatch.setattr(data_rollup, "cache_dir", lambda: folder)
    observatory.warm()
    assert _daily(observatory, fixture.START)[1] == (_hour(24), 96, 72)
    with Reader(observatory.lake_dir) as reader:
        months = len(reader.files("aggregates"))
    left = set(folder.glob("*.parquet"))
    assert set(newest) <= left and not left & set(older + oldest + stale)
    assert len(left - set(newest)) == len(data_rollup.LEVELS) * months  # the new ones stay

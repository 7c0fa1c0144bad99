"""The self-contained report (msgwatch.dashboard.report) over the fixture observatory, counted
against its ground truth and the lake's own rows: the stories of its events, every evidence uid
of each network event, nothing that runs or loads from elsewhere, hostile text inert."""

from __future__ import annotations

import datetime as dt
import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from msgwatch.analysis.query import Filters, Lake
from msgwatch.cli.report import serve_command, story_path, story_report
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import (
    Cell,
    Comparison,
    Counts,
    EventRow,
    EventView,
    Overview,
    Point,
    Series,
)
from msgwatch.dashboard.report import ReportScope, UnknownEvent, build_report
from tests.dashboard import fixture

STORY = ViewFilters(
    since=fixture.START, until=fixture.START + dt.timedelta(hours=fixture.HOURS), cc=fixture.CC
)
ANY_URL = re.compile(r"^\s*[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def lake_events(lake: Path, level: str) -> list[dict[str, Any]]:
    page = Lake(lake).events(Filters(probe_cc=fixture.CC, level=level), limit=100)
    return page.results


def lake_uids(lake: Path, event: dict[str, Any]) -> set[str]:
    """The verdict rows of a network event's series inside [start, end), from the lake."""
    filters = Filters(
        since=dt.datetime.fromisoformat(event["start"]),
        until=dt.datetime.fromisoformat(event["end"]),
        probe_cc=event["probe_cc"],
        probe_asn=event["probe_asn"],
        service=event["service"],
        function=event["function"],
    )
    page = Lake(lake).verdicts(filters, limit=1000)
    assert page.next_cursor is None
    return {row["measurement_uid"] for row in page.results}


def sections(document: str) -> dict[str, str]:
    """Each event section's markup by its event id."""
    found = re.findall(
        r'<section class="event"[^>]*data-event="([^"]*)">(.*?)</section>', document, re.S
    )
    return {html.unescape(event_id): body for event_id, body in found}


def evidence_uids(section: str) -> set[str]:
    table = re.search(r'<table data-view="evidence">(.*?)</table>', section, re.S)
    assert table is not None
    return {html.unescape(u) for u in re.findall(r'<td class="uid">([^<]*)</td>', table.group(1))}


class References(HTMLParser):
    """Every tag and attribute that could run code or load something."""

    LOADING: ClassVar = {
        "src",
        "srcset",
        "action",
        "formaction",
        "poster",
        "data",
        "background",
        "ping",
    }

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.loads: list[tuple[str, str]] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "xlink:href"):
                self.links.append(value or "")
            elif name in self.LOADING:
                self.loads.append((name, value or ""))
            elif name.startswith("on"):
                self.handlers.append(name)


def assert_self_contained(document: str) -> None:
    parser = References()
    parser.feed(document)
    parser.close()
    assert "<script" not in document.lower()
    assert not parser.tags & {"script", "link", "iframe", "object", "embed", "img", "base", "form"}
    assert parser.loads == [] and parser.handlers == []
    assert parser.links and all(link.startswith("#") for link in parser.links)
    assert not re.search(r"url\(\s*['\"]?(?!#)", document), "a CSS/SVG url() outside the file"
    assert "@import" not in document
    assert not any(ANY_URL.match(link) for link in parser.links)


@pytest.fixture(scope="module")
def period(observatory_dir: fixture.Observatory) -> str:
    return build_report(Observatory(observatory_dir.lake), ReportScope(STORY))


def test_the_period_report_tells_every_event_with_all_its_evidence(
    observatory_dir: fixture.Observatory, period: str
) -> None:
    network = lake_events(observatory_dir.lake, "network")
    country = lake_events(observatory_dir.lake, "country")
    assert len(network) == 4 and len(country) == 1  # the fixture's ground truth
    assert {e["probe_asn"] for e in network} == {fixture.CENSORED}
    found = sections(period)
    assert set(found) == {e["event_id"] for e in network + country}
    for event in network:
        assert html.escape(event["story"]) in period
        uids = evidence_uids(found[event["event_id"]])
        assert uids == lake_uids(observatory_dir.lake, event)
        assert len(uids) == len(fixture.BLOCKED) * len(fixture.PER_HOUR)
        assert 'data-chart="share"' in found[event["event_id"]]
    country_section = found[country[0]["event_id"]]
    assert html.escape(country[0]["story"]) in country_section
    assert 'data-view="evidence"' not in country_section  # its network events carry it
    assert period.count('<a href="#event-') == 5 + 4  # the stories, and the country's members


def test_the_period_report_explains_the_controls_and_the_method(period: str) -> None:
    assert f"On the other network {fixture.CONTROL}, 96 of 96 measurements" in period
    assert "deep packet inspection" in period
    assert "every bit inverted" in period
    assert re.search(r"<td>rules</td><td>[^<]+</td>", period)
    assert re.search(r"<td>detector</td><td>[^<]+</td>", period)
    assert re.search(r"<td>schema</td><td>1\.\d+\.\d+</td>", period)
    assert "jsonl: measurements.jsonl" in period  # the source by name, not its local path
    assert str(fixture.LAB.parent) not in period


def test_the_report_is_self_contained_and_inert(period: str) -> None:
    assert_self_contained(period)
    assert "@media print" in period
    for text in fixture.HOSTILE.values():
        assert text not in period


def test_a_report_of_one_network_event(observatory_dir: fixture.Observatory) -> None:
    chosen = sorted(lake_events(observatory_dir.lake, "network"), key=lambda e: e["event_id"])[0]
    scope = ReportScope(ViewFilters(), event_id=chosen["event_id"])
    document = build_report(Observatory(observatory_dir.lake), scope)
    assert list(sections(document)) == [chosen["event_id"]]
    assert html.escape(chosen["story"]) in document
    only = sections(document)[chosen["event_id"]]
    assert evidence_uids(only) == lake_uids(observatory_dir.lake, chosen)
    assert_self_contained(document)


def test_a_report_of_the_country_event_holds_its_network_events(
    observatory_dir: fixture.Observatory,
) -> None:
    country = lake_events(observatory_dir.lake, "country")[0]
    scope = ReportScope(ViewFilters(), event_id=country["event_id"])
    document = build_report(Observatory(observatory_dir.lake), scope)
    network = {e["event_id"] for e in lake_events(observatory_dir.lake, "network")}
    assert set(sections(document)) == network | {country["event_id"]}
    assert "2026-05-21 06:00 → 2026-05-22 06:00" in document  # the event's own time


def test_an_unknown_event_is_an_error(observatory_dir: fixture.Observatory) -> None:
    with pytest.raises(UnknownEvent):
        build_report(Observatory(observatory_dir.lake), ReportScope(ViewFilters(), "net-none"))


def test_the_demo_ending_writes_the_whole_story(
    observatory_dir: fixture.Observatory, tmp_path: Path
) -> None:
    measurements = observatory_dir.measurements
    ending = story_report(observatory_dir.lake, measurements, tmp_path / "story.html")
    assert ending.report == tmp_path / "story.html"
    document = ending.report.read_text()
    assert len(sections(document)) == 5  # the lake's whole span, not the default 30 days
    assert_self_contained(document)
    assert ending.serve == serve_command(observatory_dir.lake, (measurements,))
    assert f"--analysis-dir {observatory_dir.lake}" in ending.serve
    assert f"--measurements {measurements}" in ending.serve
    assert story_path(Path("out/run.jsonl")) == Path("out/run-story.html")


# --- hostile text from the lake ------------------------------------------------------------------


def _hostile_event(**changes: Any) -> EventRow:
    text = " ".join(fixture.HOSTILE.values())
    base: dict[str, Any] = {
        "event_id": "net-hostile", "level": "network", "probe_cc": "AZ",
        "probe_asn": fixture.HOSTILE["url"], "service": fixture.HOSTILE["script"],
        "function": fixture.HOSTILE["rtl"], "verdict": "blocked",
        "mechanism": fixture.HOSTILE["script"], "pattern": "continuous",
        "start": "2026-05-21 06:00:00", "start_after": None, "end": "2026-05-22 06:00:00",
        "end_before": None, "ongoing": False, "confidence": 1.0, "failing_share": 1.0,
        "measurements": 1, "buckets": 1,
        "evidence": {"first_failing": {"measurement_uid": fixture.HOSTILE["url"], "time": text}},
        "controls": {"other_networks": [{"probe_asn": fixture.HOSTILE["script"], "ok": 1,
                                         "failing": 0}],
                     "same_network": {fixture.HOSTILE["script"]: 1.0}},
        "members": None, "story": text, "rules_version": fixture.HOSTILE["script"],
        "detector_version": fixture.HOSTILE["url"],
    }  # fmt: skip
    base.update(changes)
    return EventRow(**base)


class HostileObservatory(Observatory):
    """An observatory whose every value is one of the fixture's hostile strings."""

    def __init__(self, lake_dir: Path) -> None:
        super().__init__(lake_dir)
        self.row = _hostile_event()

    def window(self, f: ViewFilters) -> tuple[str, str]:
        return "2026-05-20 00:00:00", "2026-05-23 00:00:00"

    def events(
        self, f: ViewFilters, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[EventRow], str | None]:
        return [self.row], None

    def event(self, event_id: str) -> EventView | None:
        counts = Counts(measurements=4, failing=4, ok=0, probes=1)
        points = (Point(bucket="2026-05-21 06:00:00", counts=counts),)
        series = Series("AZ", self.row.probe_asn, self.row.service or "", "voice", 3600, points)
        comparison = Comparison(subject=series, other_networks=(), control_ok=())
        verdict = {"measurement_uid": fixture.HOSTILE["script"], "verdict": fixture.HOSTILE["url"]}
        return EventView(self.row, (), (comparison,), (verdict,))

    def overview(self, f: ViewFilters) -> Overview:
        cell = Cell("AZ", fixture.HOSTILE["long"], fixture.HOSTILE["script"], "blocked",
                    fixture.HOSTILE["url"], None, Counts(1, 1, 0, 1), 1, 1, None)  # fmt: skip
        return Overview("2026-05-20", "2026-05-23", (cell,), ("AZ",), (), (), ())


def test_hostile_text_from_the_lake_is_inert(tmp_path: Path) -> None:
    sources: dict[str, Any] = {f"jsonl:/x/{fixture.HOSTILE['script']}": {}}
    (tmp_path / "state.json").write_bytes(orjson.dumps({"sources": sources}))
    document = build_report(HostileObservatory(tmp_path), ReportScope(ViewFilters()))
    for text in fixture.HOSTILE.values():
        if text != fixture.HOSTILE["url"] and "\u202e" not in text and len(text) < 100:
            assert text not in document
    assert html.escape(fixture.HOSTILE["script"]) in document
    assert fixture.HOSTILE["long"] in document  # shown, as text (the CSS wraps it)
    assert_self_contained(document)


def test_every_evidence_uid_even_beyond_what_the_event_view_holds(
    observatory_dir: fixture.Observatory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msgwatch.dashboard import data_events

    monkeypatch.setattr(data_events, "MAX_VERDICTS", 10)
    chosen = lake_events(observatory_dir.lake, "network")[0]
    scope = ReportScope(ViewFilters(), event_id=chosen["event_id"])
    document = build_report(Observatory(observatory_dir.lake), scope)
    uids = evidence_uids(sections(document)[chosen["event_id"]])
    assert len(uids) == 96 and uids == lake_uids(observatory_dir.lake, chosen)
    assert "are listed" not in document


def test_events_beyond_the_detailed_ones_are_listed(
    observatory_dir: fixture.Observatory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msgwatch.dashboard import report

    monkeypatch.setattr(report, "MAX_DETAILED", 2)
    document = build_report(Observatory(observatory_dir.lake), ReportScope(STORY))
    assert len(sections(document)) == 2
    listed = re.search(r'<table data-view="events">(.*?)</table>', document, re.S)
    assert listed is not None
    assert re.findall(r'<tr id="(event-\d+)">', listed.group(1)) == [
        "event-3",
        "event-4",
        "event-5",
    ]
    assert_self_contained(document)

"""The server-side SVG charts: marks counted against the model values they are drawn from and
against the fixture observatory's ground truth; hostile text escaped and bounded; a
self-contained, accessible, deterministic svg."""

from __future__ import annotations

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from msgwatch.dashboard.charts import (
    Chart,
    heatmap_chart,
    replay_chart,
    share_chart,
    timeline_chart,
)
from msgwatch.dashboard.charts.svg import label
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import (
    FAILING,
    Comparison,
    Counts,
    EventRow,
    HeatCell,
    HeatRow,
    Interval,
    NetworkView,
    Point,
    Replay,
    Series,
)
from tests.dashboard import fixture

NS = "{http://www.w3.org/2000/svg}"
START = dt.datetime(2026, 5, 20)
BLOCKED = range(30, 54)
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def at(hour: float) -> str:
    return (START + dt.timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M:%S")


def parse(chart: Chart) -> ET.Element:
    root = ET.fromstring(chart.svg)
    assert root.tag == f"{NS}svg"
    return root


def marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "mark" in (e.get("class") or "").split()]


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{NS}text")]


def series(asn: str, blocked: bool, service: str = "whatsapp", function: str = "voice") -> Series:
    points = []
    for hour in range(72):
        failing = blocked and hour in BLOCKED
        counts = Counts(
            measurements=4, failing=4 if failing else 0, ok=0 if failing else 4, probes=1
        )
        verdicts = {"blocked": 4} if failing else {"ok": 4}
        points.append(Point(at(hour), counts, verdicts, "stun_dropped" if failing else None))
    return Series("AZ", asn, service, function, 3600, tuple(points))


def comparison(subject: Series | None = None) -> Comparison:
    control_ok = tuple((at(h), 1.0 if h in BLOCKED else None) for h in range(72))
    return Comparison(subject or series("AS65001", True), (series("AS65002", False),), control_ok)


def event(event_id: str = "e1", **change: Any) -> EventRow:
    values: dict[str, Any] = {
        "event_id": event_id,
        "level": "network",
        "probe_cc": "AZ",
        "probe_asn": "AS65001",
        "service": "whatsapp",
        "function": "voice",
        "verdict": "blocked",
        "mechanism": "stun_dropped",
        "pattern": "continuous",
        "start": at(30),
        "start_after": at(29),
        "end": at(54),
        "end_before": at(53),
        "ongoing": False,
        "confidence": 0.9,
        "failing_share": 1.0,
        "measurements": 96,
        "buckets": 24,
        "evidence": {},
        "controls": {},
        "members": None,
        "story": "WhatsApp voice calls failed on AS65001.",
        "rules_version": "1",
        "detector_version": "1",
    }
    values.update(change)
    return EventRow(**values)


def network(states: dict[tuple[str, str], list[str]]) -> NetworkView:
    buckets = tuple(at(h) for h in range(len(next(iter(states.values())))))
    rows = tuple(
        HeatRow(
            s,
            f,
            tuple(
                HeatCell(b, st, Counts(4, 4 if st in FAILING else 0, 4))
                for b, st in zip(buckets, cells, strict=True)
            ),
        )
        for (s, f), cells in sorted(states.items())
    )
    return NetworkView("AZ", "AS65001", at(0), at(len(buckets)), 3600, buckets, rows, ())


def replay(original: int = 20, control: int = 20) -> Replay:
    return Replay(
        "whatsapp",
        "voice",
        "198.18.0.5:3478",
        tuple(Interval(i * 0.5, 50, 50 if i < 4 else 0) for i in range(original)),
        tuple(Interval(i * 0.5, 50, 49) for i in range(control)),
        0.8,
        0.02,
    )


def test_share_one_mark_per_subject_point_controls_as_lines() -> None:
    chart = share_chart(comparison(), [event()], caption="AZ · AS65001 · whatsapp voice · n = 288")
    root = parse(chart)
    bars = marks(root)
    assert chart.kind == "share" and chart.marks == len(bars) == 72
    failing = [b for b in bars if b.get("data-share") == "1"]
    assert [b.get("data-bucket") for b in failing] == [at(h)[:16] for h in BLOCKED]
    assert {b.get("data-state") for b in failing} == {"blocked"}
    assert {b.get("data-mechanism") for b in failing} == {"stun_dropped"}
    assert all(b.get("data-n") == "4" and b.find(f"{NS}title") is not None for b in bars)
    controls = with_class(root, "control")
    assert [c.get("data-network") for c in controls] == ["AS65002", None]
    assert with_class(root, "control-ok")[0].get("stroke-dasharray")
    (shade,) = with_class(root, "event")
    assert shade.get("data-start") == at(30)[:16] and shade.get("data-end") == at(54)[:16]
    words = texts(root)
    assert {"blocked", "ok", "other networks", "own control worked", "event", "100 %"} <= set(words)


def test_share_breaks_control_lines_where_no_share() -> None:
    root = parse(share_chart(comparison()))
    (dashed,) = with_class(root, "control-ok")
    assert dashed.get("d", "").count("M") == 1  # one run: the blocked hours
    assert dashed.get("d", "").count("L") == len(BLOCKED) - 1


def test_heatmap_one_mark_per_measured_cell_patterned_by_state() -> None:
    cells = ["ok", "blocked", "throttled", "degraded", "inconclusive", "no_data", "no_data", "ok"]
    view = network({("whatsapp", "voice"): cells, ("whatsapp", "text"): ["ok"] * 8})
    chart = heatmap_chart(view)
    root = parse(chart)
    assert chart.marks == len(marks(root)) == 6 + 8
    rows = with_class(root, "row")
    assert [(r.get("data-service"), r.get("data-function")) for r in rows] == [
        ("whatsapp", "text"),
        ("whatsapp", "voice"),
    ]
    voice = rows[1]
    assert [m.get("data-state") for m in marks(voice)] == [c for c in cells if c != "no_data"]
    for mark in marks(voice):  # the figures as data (the page's script makes the tooltip)
        assert mark.find(f"{NS}title") is None
        assert mark.get("data-n") == "4" and mark.get("data-bucket", "").startswith("2026-05-20 ")
        assert {"data-failing", "data-ok", "data-share"} <= set(mark.attrib)
    (label_tip,) = [t.text for t in with_class(voice, "row-label")[0].iter(f"{NS}title")]
    assert label_tip == (
        "whatsapp · voice: 6 measured cells (1 blocked, 1 throttled, 1 degraded, "
        "1 inconclusive, 2 ok)"
    )
    (gap,) = with_class(voice, "nodata")  # two no_data cells, one outline
    assert gap.get("fill") == "none"
    defs = {p.get("id"): p for p in root.iter(f"{NS}pattern")}
    fills = {m.get("data-state"): m.get("fill") for m in marks(voice)}
    for state in ("blocked", "throttled", "degraded", "inconclusive"):
        ref = fills[state]
        assert ref is not None and ref.startswith("url(#")
        assert len(defs[ref[5:-1]]) == 2  # a ground and its hatch or dots
    assert not (fills["ok"] or "url(").startswith("url(")
    assert len({fills[s] for s in fills}) == 5
    assert {"blocked", "throttled", "degraded", "inconclusive", "ok", "no data"} <= set(texts(root))


def test_timeline_one_mark_per_event_in_window() -> None:
    events = [
        event("e1"),
        event("e2", pattern="episodic", start=at(60), start_after=at(59), end=None, ongoing=True),
        event("e3", start=at(-10), end=at(-5)),  # before the window
        event("e4", start=at(-3), end=at(5), level="country", probe_asn=None, service=None),
        event("e5", start=at(70), start_after=None, end=at(80)),  # ends after the window
        event("e6", start=at(72), end=at(75)),  # starts at the window's (exclusive) end
    ]
    chart = timeline_chart(events, at(0), at(72))
    root = parse(chart)
    bars = marks(root)
    assert chart.marks == len(bars) == 4
    assert [b.get("data-event") for b in bars] == ["e4", "e1", "e2", "e5"]
    assert bars[2].get("stroke-dasharray") and not bars[1].get("stroke-dasharray")
    assert bars[2].get("data-ongoing") == "true" and bars[2].get("data-end") == ""
    assert bars[3].get("data-ongoing") == "false" and bars[3].get("data-end") == at(80)[:16]
    assert len(with_class(root, "open-end")) == 2 and len(with_class(root, "open-start")) == 1
    assert len(with_class(root, "onset")) == 2
    assert "AZ country: services·voice" in texts(root)
    assert all(232 <= float(b.get("x", "-1")) <= 760 for b in bars)
    assert {"continuous", "episodic", "▶ ongoing", "blocked"} <= set(texts(root))


def test_replay_one_mark_per_interval_per_series_with_losses() -> None:
    chart = replay_chart(replay(20, 18))
    root = parse(chart)
    groups = marks(root)
    assert chart.marks == len(groups) == 38
    assert [g.get("data-series") for g in groups].count("control") == 18
    lost = [g for g in groups if g.get("data-series") == "original" and g.get("data-rx") == "0"]
    assert len(lost) == 16
    assert {"loss 80 %", "loss 2 %", "original call traffic", "bit-inverted control"} <= set(
        texts(root)
    )
    assert all(len(with_class(g, "tx")) == len(with_class(g, "rx")) == 1 for g in groups)


@pytest.mark.parametrize(
    "chart",
    [
        share_chart(Comparison(Series("AZ", None, "whatsapp", "voice", 3600, ()), (), ())),
        heatmap_chart(NetworkView("AZ", "AS65001", at(0), at(1), 3600, (), (), ())),
        replay_chart(replay(0, 0)),
    ],
    ids=["share", "heatmap", "replay"],
)
def test_empty_input_says_no_measurements(chart: Chart) -> None:
    root = parse(chart)
    assert chart.marks == 0 and not marks(root)
    assert "no measurements" in texts(root)


def test_timeline_without_events_says_so() -> None:
    chart = timeline_chart([], at(0), at(72))
    assert chart.marks == 0 and "no events" in texts(parse(chart))


HOSTILE = [
    *fixture.HOSTILE.values(),
    "\"quoted' &amp; <b>",
    "\u2067\u202bauthority\u2069",
    "x\x00\x1by\x85",
]


def hostile_charts() -> list[Chart]:
    bad = "".join(HOSTILE)
    subject = series(bad, True, service=bad, function=bad[:40])
    view = network({(bad, bad): ["blocked", "ok"], ("whatsapp", bad): ["no_data", "inconclusive"]})
    hostile_event = event(bad, story=bad, pattern=bad, verdict=bad, probe_asn=bad, service=bad)
    return [
        share_chart(comparison(subject), [hostile_event], caption=bad),
        heatmap_chart(view, caption=bad),
        timeline_chart([hostile_event], at(0), at(72), caption=bad),
        replay_chart(
            Replay(
                bad, bad, bad, (Interval(0, 1, 0), Interval(float("nan"), 1, 1)), (), None, None
            ),
            caption=bad,
        ),
    ]


@pytest.mark.parametrize("chart", hostile_charts(), ids=lambda c: c.kind)
def test_hostile_text_escaped_and_bounded(chart: Chart) -> None:
    root = parse(chart)  # well-formed XML despite NUL, ESC and quotes
    assert "<script" not in chart.svg and "<b>" not in chart.svg
    assert not BIDI.search(chart.svg) and "\x00" not in chart.svg
    for element in root.iter():
        assert len("".join(element.itertext() if element.tag == f"{NS}text" else [])) <= 240
        assert element.tag not in (f"{NS}script", f"{NS}foreignObject", f"{NS}a", f"{NS}image")
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on") and "href" not in name
            assert (
                "javascript:" not in value or name.startswith("data-") or element.tag == f"{NS}svg"
            )
            assert len(value) <= 4000
            if name in ("x", "y", "width", "height", "x1", "x2", "y1", "y2"):
                assert math.isfinite(float(value))
    assert len(chart.caption) <= 240 and len(chart.title) <= 200


def test_label_cuts_and_cleans() -> None:
    assert label("a" * 100) == "a" * 59 + "…"
    assert label("\u202egpj.exe\u202c-rtl") == "gpj.exe-rtl"
    assert label("tab\tand\nnewline\x07") == "tab and newline"


def every_chart() -> list[Chart]:
    events = [event(), event("e2", start=at(60), end=None, ongoing=True)]
    view = network({("whatsapp", "voice"): ["ok", "blocked", "no_data"]})
    return [
        share_chart(comparison(), events, caption="c"),
        heatmap_chart(view, caption="c"),
        timeline_chart(events, at(0), at(72), caption="c"),
        replay_chart(replay(), caption="c"),
    ]


@pytest.mark.parametrize("chart", every_chart(), ids=lambda c: c.kind)
def test_svg_is_self_contained_accessible_and_framed(chart: Chart) -> None:
    root = parse(chart)
    title_id = root.get("aria-labelledby")
    assert root.get("role") == "img" and title_id
    assert root.find(f"{NS}title") is not None and root.find(f"{NS}title").get("id") == title_id  # type: ignore[union-attr]
    assert root.find(f"{NS}desc") is not None
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert root.get("font-family") == "sans-serif"
    assert "c" in texts(root) and "msgwatch" in texts(root)
    assert not list(root.iter(f"{NS}style")) and all("style" not in e.attrib for e in root.iter())
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids)) and all(i.startswith(title_id.split("-")[0]) for i in ids)  # type: ignore[union-attr]
    for value in (v for e in root.iter() for v in e.attrib.values()):
        assert not re.search(r"url\((?!#)", value) and "http" not in value.replace(NS[1:-1], "")


def test_deterministic_and_ids_differ_between_inputs() -> None:
    first, again = every_chart(), every_chart()
    assert [c.svg for c in first] == [c.svg for c in again]
    a = parse(share_chart(comparison(), caption="one")).get("aria-labelledby")
    b = parse(share_chart(comparison(), caption="two")).get("aria-labelledby")
    assert a != b


# Against the fixture observatory's lake (its docstring is the ground truth).


@pytest.fixture(scope="module")
def lake(observatory_dir: fixture.Observatory) -> tuple[Observatory, ViewFilters]:
    """The fixture's observatory and its 72 hours at an hourly grain."""
    until = fixture.START + dt.timedelta(hours=fixture.HOURS)
    return Observatory(observatory_dir.lake), ViewFilters(
        since=fixture.START, until=until, grain="hour"
    )


def test_fixture_share_marks_the_blocked_hours(lake: tuple[Observatory, ViewFilters]) -> None:
    observatory, window = lake
    view = observatory.comparison(fixture.CC, fixture.CENSORED, "whatsapp", "voice", window)
    root = parse(share_chart(view))
    bars = marks(root)
    assert len(bars) == fixture.HOURS
    failing = [b for b in bars if b.get("data-state") in FAILING]
    expected = [
        (fixture.START + dt.timedelta(hours=h)).strftime("%Y-%m-%d %H:%M") for h in fixture.BLOCKED
    ]
    assert [b.get("data-bucket") for b in failing] == expected
    assert {b.get("data-n") for b in bars} == {str(len(fixture.PER_HOUR))}
    assert fixture.CONTROL in {c.get("data-network") for c in with_class(root, "control")}


def test_fixture_heatmap_rows_and_blocked_cells(lake: tuple[Observatory, ViewFilters]) -> None:
    observatory, window = lake
    view = observatory.network(fixture.CC, fixture.CENSORED, window)
    root = parse(heatmap_chart(view))
    assert len(marks(root)) == sum(c.state != "no_data" for r in view.rows for c in r.cells)
    rows = {(r.get("data-service"), r.get("data-function")): r for r in with_class(root, "row")}
    for service in fixture.SERVICES:
        for function in ("voice", "video"):
            states = [m.get("data-state") for m in marks(rows[(service, function)])]
            assert len(states) == fixture.HOURS
            assert sum(s in FAILING for s in states) == len(fixture.BLOCKED)


def test_fixture_timeline_draws_every_event(lake: tuple[Observatory, ViewFilters]) -> None:
    observatory, window = lake
    since, until = observatory.window(window)
    events, _ = observatory.events(window)
    chart = timeline_chart(events, since, until)
    bars = marks(parse(chart))
    assert len(bars) == 5  # one country event and four network events
    assert sorted(b.get("data-level", "") for b in bars) == ["country"] + ["network"] * 4
    assert "AZ country: skype+whatsapp·video+voice" in texts(parse(chart))

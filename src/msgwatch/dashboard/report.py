"""``msgwatch report``: one self-contained HTML file for a period, a country or one event, fit to
attach to an article or a complaint.

Rules:

- **Self-contained and inert.** The document holds no script and no reference outside itself: its
  CSS is inline (``templates/report.html``), its charts are inline SVG (:mod:`.charts`), links are
  fragments (``#event-1``). Every value from the lake is escaped by the template (Jinja2
  autoescape); a chart's SVG, escaped by the charts, is the only markup marked safe.
- **What it holds.** The stories of the events in scope, a summary table (country × service ×
  function with each state in words), then one section per event: its networks, the mechanism in
  plain words (:mod:`.report_words`), what worked elsewhere at the same time, and for a network
  event the share of failing measurements against its controls (a chart) and every verdict row
  behind it, the evidence uids (:mod:`.report_sections`). Then the method in plain words, the
  rules, detector and schema versions, the lake's sources (by name, never a local path), and the
  generation time.
- **Scope.** :class:`ReportScope` with ``event_id``: that event (and a country event's network
  events) over the event's own time; without: the events the filters select in
  :meth:`Observatory.window`, country events first. Bounded: at most :data:`MAX_EVENTS` events are
  listed and :data:`MAX_DETAILED` get a section; the document says when more exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from msgwatch.analysis import lake as lake_state
from msgwatch.analysis.schema import SCHEMA_VERSION
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import MAX_RANGE_DAYS, ViewFilters
from msgwatch.dashboard.model import EventRow, Overview
from msgwatch.dashboard.pages_base import TEMPLATES
from msgwatch.dashboard.report_sections import Section, lake_time, section

MAX_EVENTS = 200
MAX_DETAILED = 50
PAGE = 100


class UnknownEvent(LookupError):
    """The scope names an event the analysis does not hold."""


@dataclass(frozen=True)
class ReportScope:
    """What a report covers: the filters' window and selection, or one event."""

    filters: ViewFilters
    event_id: str | None = None
    generated: dt.datetime | None = None  # the generation time shown (default: now, UTC)


@dataclass(frozen=True)
class Report:
    """Everything the template shows."""

    title: str
    scope: tuple[tuple[str, str], ...]
    stories: tuple[tuple[str, str], ...]  # (anchor, story)
    overview: Overview
    sections: tuple[Section, ...]
    listed_only: tuple[tuple[str, EventRow], ...]  # (anchor, event) beyond MAX_DETAILED
    more: bool  # events beyond MAX_EVENTS exist
    versions: dict[str, str]
    sources: tuple[str, ...]
    generated: str


def build_report(observatory: Observatory, scope: ReportScope) -> str:
    """The report of ``scope`` as one self-contained HTML document (see the module's rules)."""
    return TEMPLATES.get_template("report.html").render(report=assemble(observatory, scope))


def assemble(observatory: Observatory, scope: ReportScope) -> Report:
    """The report's content, queried from ``observatory``."""
    if scope.event_id is not None:
        view = observatory.event(scope.event_id)
        if view is None:
            raise UnknownEvent(f"the analysis holds no event {scope.event_id!r}")
        filters = _event_filters(observatory, view.event)
        events: list[EventRow] = [view.event, *view.network_events]
        views = {view.event.event_id: view}
        more = False
        title = f"Blocking event in {view.event.probe_cc}"
    else:
        since, until = observatory.window(scope.filters)
        filters = replace(scope.filters, since=lake_time(since), until=lake_time(until))
        events, more = _events(observatory, filters)
        views = {}
        title = "Blocking of messengers" + (f" in {filters.cc}" if filters.cc else "")
    events.sort(key=_order)
    anchors = {e.event_id: f"event-{n + 1}" for n, e in enumerate(events)}
    sections = []
    for event in events[:MAX_DETAILED]:
        if event.event_id not in views:
            found = observatory.event(event.event_id)
            if found is None:
                continue
            views[event.event_id] = found
        sections.append(section(views[event.event_id], anchors, observatory.lake_dir))
    generated = scope.generated or dt.datetime.now(dt.UTC)
    return Report(
        title=title,
        scope=_scope_lines(filters, scope.event_id),
        stories=tuple((anchors[e.event_id], e.story) for e in events),
        overview=observatory.overview(filters),
        sections=tuple(sections),
        listed_only=tuple((anchors[e.event_id], e) for e in events[MAX_DETAILED:]),
        more=more,
        versions=_versions(observatory.lake_dir, events),
        sources=_sources(observatory.lake_dir),
        generated=generated.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def whole_span(observatory: Observatory) -> ViewFilters:
    """Filters covering the lake's whole span (its last :data:`MAX_RANGE_DAYS` days); unset
    (the default window) when the lake is empty."""
    span = observatory.span()
    if span is None:
        return ViewFilters()
    until = lake_time(span[1]) + dt.timedelta(
        seconds=observatory.grain_seconds(ViewFilters(grain="bucket"))
    )
    since = max(lake_time(span[0]), until - dt.timedelta(days=MAX_RANGE_DAYS))
    return ViewFilters(since=since, until=until)


def _order(event: EventRow) -> tuple[bool, str, str, str, str, str]:
    """Country events first, then by start, network, service, function."""
    series = (event.probe_asn or "", event.service or "", event.function or "")
    return (event.level != "country", event.start, *series, event.event_id)


def _event_filters(observatory: Observatory, event: EventRow) -> ViewFilters:
    """The event's country over the event's own time (to the lake's end while ongoing)."""
    until = event.end or observatory.window(ViewFilters())[1]
    return ViewFilters(since=lake_time(event.start), until=lake_time(until), cc=event.probe_cc)


def _events(observatory: Observatory, filters: ViewFilters) -> tuple[list[EventRow], bool]:
    """The filters' events, at most MAX_EVENTS; whether more exist."""
    events: list[EventRow] = []
    cursor: str | None = None
    while len(events) < MAX_EVENTS:
        page, cursor = observatory.events(filters, limit=PAGE, cursor=cursor)
        events.extend(page)
        if cursor is None:
            return events[:MAX_EVENTS], len(events) > MAX_EVENTS
    return events[:MAX_EVENTS], True


def _scope_lines(filters: ViewFilters, event_id: str | None) -> tuple[tuple[str, str], ...]:
    lines = [("Period (UTC)", f"{_text(filters.since)} → {_text(filters.until)}")]
    named = (("Country", filters.cc), ("Network", filters.asn), ("Service", filters.service),
             ("Function", filters.function), ("Verdict", filters.verdict), ("Event", event_id))  # fmt: skip
    lines += [(label, value) for label, value in named if value]
    return tuple(lines)


def _text(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _versions(lake_dir: Path, events: Sequence[EventRow]) -> dict[str, str]:
    state = lake_state.read_state(lake_dir) or {}
    versions = {"schema": str(state.get("schema_version", SCHEMA_VERSION))}
    rules = sorted({e.rules_version for e in events}) or [str(state.get("rules_version", ""))]
    detector = sorted({e.detector_version for e in events})
    versions["rules"] = ", ".join(rules)
    versions["detector"] = ", ".join(detector or [str(state.get("detector_version", ""))])
    versions["analysis pass"] = str(state.get("pass", ""))
    versions["analysis committed"] = str(state.get("committed_at", ""))
    return {k: v for k, v in versions.items() if v}


def _sources(lake_dir: Path) -> tuple[str, ...]:
    """The lake's sources by kind and file name (never a full local path)."""
    state = lake_state.read_state(lake_dir) or {}
    sources = state.get("sources")
    names = []
    for key in sources if isinstance(sources, dict) else {}:
        kind, _, where = str(key).partition(":")
        names.append(f"{kind}: {Path(where).name}" if where else kind)
    return tuple(sorted(names))

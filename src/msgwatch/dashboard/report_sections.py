"""The report's event sections (:mod:`.report`): one event's networks, mechanism in words, what
worked elsewhere, its charts, the landmarks of its evidence and every verdict row behind it.

Rules:

- A country event's section holds its story, networks, mechanism and what kept working, and links
  to its network events' sections; the charts and evidence are theirs.
- A network event's evidence is :meth:`Observatory.event`'s verdict rows; when the view holds fewer
  than the event counts (it is bounded), they are read from the lake (:class:`Lake`), the newest
  :data:`MAX_EVIDENCE`, oldest first.
- The event's JSON columns are hostile: a landmark without a text uid is left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.analysis.query import MAX_LIMIT, Filters, Lake
from msgwatch.dashboard.charts import Chart, share_chart
from msgwatch.dashboard.model import Comparison, EventRow, EventView
from msgwatch.dashboard.pages_base import caption
from msgwatch.dashboard.report_words import (
    elsewhere,
    function_name,
    mechanism_words,
    service_name,
)

MAX_EVIDENCE = 5000
LAKE_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Section:
    """One event of the report, ready to render."""

    anchor: str
    event: EventRow
    networks: tuple[str, ...]
    what: str  # service and function in words
    mechanism: str  # in plain words
    elsewhere: tuple[str, ...]
    charts: tuple[Chart, ...]
    markers: tuple[tuple[str, str, str], ...]  # (what, uid, time) of the evidence's landmarks
    evidence: tuple[dict[str, Any], ...]
    members: tuple[tuple[str, str], ...] = ()  # a country event's network events: (anchor, story)


def section(view: EventView, anchors: dict[str, str], lake_dir: Path) -> Section:
    """The section of ``view``'s event; ``anchors`` names the report's events' sections."""
    event = view.event
    members = view.network_events
    listed = (event.members or {}).get("networks")
    named = [n for n in listed if isinstance(n, str)] if isinstance(listed, list) else []
    networks = [event.probe_asn] if event.probe_asn else sorted({*named, *_asns(members)})
    country = event.level == "country"
    return Section(
        anchor=anchors[event.event_id],
        event=event,
        networks=tuple(networks),
        what=_what(event),
        mechanism=mechanism_words(event.mechanism),
        elsewhere=tuple(elsewhere(event.level, event.controls)),
        charts=() if country else tuple(_chart(c, event) for c in view.comparisons),
        markers=() if country else _markers(event.evidence),
        evidence=() if country else _evidence(lake_dir, view),
        members=tuple((anchors[m.event_id], m.story) for m in members if m.event_id in anchors),
    )


def _asns(events: Sequence[EventRow]) -> list[str]:
    return [e.probe_asn for e in events if e.probe_asn]


def _evidence(lake_dir: Path, view: EventView) -> tuple[dict[str, Any], ...]:
    """Every verdict row behind a network event, oldest first: the view's, or, when the view
    holds fewer than the event counts, the lake's (the newest :data:`MAX_EVIDENCE`)."""
    event = view.event
    if len(view.verdicts) >= event.measurements or event.service is None:
        return view.verdicts
    filters = Filters(
        since=lake_time(event.start),
        until=lake_time(event.end) if event.end else None,
        probe_cc=event.probe_cc,
        probe_asn=event.probe_asn,
        service=event.service,
        function=event.function,
    )
    lake = Lake(lake_dir)
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(rows) < MAX_EVIDENCE:
        page = lake.verdicts(filters, limit=MAX_LIMIT, cursor=cursor)
        rows += page.results
        cursor = page.next_cursor
        if cursor is None:
            break
    return tuple(reversed(rows[:MAX_EVIDENCE]))


def _what(event: EventRow) -> str:
    if event.service and event.function:
        return f"{service_name(event.service)} {function_name(event.function)}"
    members = event.members or {}
    services = [service_name(s) for s in members.get("services") or [] if isinstance(s, str)]
    functions = [function_name(f) for f in members.get("functions") or [] if isinstance(f, str)]
    return f"{', '.join(services)}: {', '.join(functions)}"


def _chart(comparison: Comparison, event: EventRow) -> Chart:
    subject = comparison.subject
    points = subject.points
    n = sum(p.counts.measurements for p in points)
    first, last = (points[0].bucket, points[-1].bucket) if points else (event.start, event.start)
    label = f"{subject.service} {subject.function}"
    text = caption([subject.probe_cc, subject.probe_asn, label], first, last, n)
    return share_chart(comparison, events=(event,), caption=text)


MARKERS = (
    ("last_working_before", "Last measurement that worked before the start"),
    ("first_failing", "First measurement that failed"),
    ("first_working_after", "First measurement that worked again after the end"),
)


def _markers(evidence: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    found = []
    for key, words in MARKERS:
        ref = evidence.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("measurement_uid"), str):
            found.append((words, ref["measurement_uid"], str(ref.get("time") or "")))
    return tuple(found)


def lake_time(text: str) -> dt.datetime:
    """A lake time (``YYYY-MM-DD HH:MM:SS``) as a naive UTC datetime."""
    return dt.datetime.strptime(text[:19], LAKE_TIME)

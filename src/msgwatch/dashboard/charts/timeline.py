"""The timeline: the events of a window as bars in time, one lane each.

Rules:

- The window is [since, until) in UTC. An event is drawn when it overlaps the window; its bar
  (one ``rect.mark``) runs from its start to its end (the first bucket that worked again), both
  clipped to the window. An ongoing event (or one with no end) runs to the window's end; it, and
  one that ends after the window, ends in an arrow (``class="open-end"``); one that began
  before the window starts with an arrow (``class="open-start"``).
- The bar is filled with the look of the event's verdict (:mod:`.palette`); an episodic event
  (works some of the time) has a dashed outline, a continuous one a solid outline. The onset
  interval (the last working bucket before the start, ``start_after``, to the start) is a thin
  whisker (``class="onset"``).
- Lanes are sorted by start, then id; each is labelled ``service·function·network`` (a country
  event: ``<cc> country: services·functions`` of its members, cut at 40 characters); at most
  200 lanes are drawn and the rest counted.
- ``data-*`` attributes: event, level, verdict, pattern, start, end ("" while ongoing), ongoing;
  the tooltip is the event's story.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from msgwatch.dashboard.charts import palette
from msgwatch.dashboard.charts.axis import TimeScale, parse_time, show, time_axis
from msgwatch.dashboard.charts.svg import (
    FOOT,
    TOP,
    WIDTH,
    Chart,
    Frame,
    chart_id,
    empty,
    label,
    num,
    render,
    tag,
    text,
    title,
)
from msgwatch.dashboard.model import EventRow

LABELS = 224
LEFT, RIGHT = LABELS + 8, WIDTH - 20
LANE, GAP = 14, 4
MAX_LANES = 200


def event_label(event: EventRow) -> str:
    """``service·function·network``; a country event: "<cc> country: " and its members'
    services and functions, each joined by "+"."""
    if event.level == "network" and event.probe_asn:
        return "·".join((event.service or "?", event.function or "?", event.probe_asn))
    members = event.members or {}
    services = event.service or _joined(members.get("services")) or "services"
    functions = event.function or _joined(members.get("functions")) or "functions"
    return f"{event.probe_cc} country: {services}·{functions}"


def _joined(values: object) -> str:
    return "+".join(str(v) for v in values[:4]) if isinstance(values, list) else ""


def timeline_chart(events: Sequence[EventRow], since: str, until: str, caption: str = "") -> Chart:
    """The events overlapping [since, until), one bar each."""
    start, end = parse_time(since), parse_time(until)
    shown: list[EventRow] = []
    if start is not None and end is not None and start < end:
        shown = sorted(
            (e for e in events if _overlaps(e, start, end)), key=lambda e: (e.start, e.event_id)
        )
    lanes = shown[:MAX_LANES]
    window = (
        f"{show(start)} → {show(end)} UTC"
        if start is not None and end is not None
        else f"{label(since, 20)} → {label(until, 20)}"
    )
    height = TOP + 12 + len(lanes) * (LANE + GAP) + 68 + FOOT
    frame = Frame(
        kind="timeline",
        prefix=chart_id("timeline", tuple(events), since, until, caption),
        title="Events in time",
        desc=f"{len(shown)} events in {window}, one bar each from its start to its end.",
        caption=caption or f"{window} · {len(shown)} events",
        height=max(height, TOP + 120 + FOOT),
    )
    if start is None or end is None or not lanes:
        return empty(
            frame, "no events" if start is not None and end is not None else "no measurements"
        )
    scale = TimeScale(start, end, LEFT, RIGHT)
    body: list[str] = []
    for i, event in enumerate(lanes):
        body += _lane(frame.prefix, scale, event, TOP + 12 + i * (LANE + GAP))
    bottom = TOP + 12 + len(lanes) * (LANE + GAP)
    body += time_axis(scale, bottom + 2, TOP + 8)
    if len(shown) > MAX_LANES:
        body.append(
            text(8, bottom + 30, f"+{len(shown) - MAX_LANES} events not drawn", font_size=10)
        )
    states = {e.verdict if e.verdict in palette.LOOKS else "inconclusive" for e in lanes}
    body += _legend(frame.prefix, states, bottom + 58)
    defs = palette.patterns(frame.prefix, states)
    return render(frame, defs, body, len(lanes))


def _overlaps(event: EventRow, since: dt.datetime, until: dt.datetime) -> bool:
    start, end = parse_time(event.start), parse_time(event.end)
    if start is None:
        return False
    return start < until and (event.ongoing or end is None or end > since)


def _lane(prefix: str, scale: TimeScale, event: EventRow, y: float) -> list[str]:
    start, end = parse_time(event.start) or scale.start, parse_time(event.end)
    open_end = event.ongoing or end is None
    stop = scale.end if open_end or end is None else end
    x0, x1 = scale.x(start), scale.x(stop)
    name = event_label(event)
    out = [
        text(LABELS, y + LANE - 3, name, 40, text_anchor="end", font_size=10, class_="lane-label")
    ]
    after = parse_time(event.start_after)
    if after is not None and after < start:
        mid = y + LANE / 2
        whisker = {
            "class": "onset",
            "x1": scale.x(after),
            "x2": x0,
            "y1": mid,
            "y2": mid,
            "stroke": "#333",
            "stroke-width": 1,
        }
        out.append(
            tag("line", whisker, title(f"onset between {show(after)} and {show(start)} UTC"))
        )
    state = event.verdict if event.verdict in palette.LOOKS else "inconclusive"
    ends = "ongoing" if open_end else f"to {show(stop)} UTC"
    tip = f"{label(event.story, 240)} ({label(name, 80)}: {state}, {label(event.pattern, 20)}, from {show(start)} UTC {ends})"
    bar = {
        "class": "mark",
        "x": x0,
        "y": y,
        "width": max(x1 - x0, 1.5),
        "height": LANE,
        "fill": palette.fill(prefix, state),
        "stroke": "#111111",
        "stroke-width": 1.2,
        "stroke-dasharray": "4 2" if event.pattern == "episodic" else None,
        "data-event": label(event.event_id, 80),
        "data-level": label(event.level, 20),
        "data-verdict": label(event.verdict, 20),
        "data-pattern": label(event.pattern, 20),
        "data-start": show(start),
        "data-end": "" if open_end else show(stop),
        "data-ongoing": "true" if open_end else "false",
    }
    out.append(tag("rect", bar, title(tip)))
    if open_end or stop > scale.end:
        out.append(_arrow(x1, y, 6, "open-end", "ongoing" if open_end else "ends after the window"))
    if start < scale.start:
        out.append(_arrow(x0, y, -6, "open-start", "began before the window"))
    return out


def _arrow(x: float, y: float, length: float, kind: str, tip: str) -> str:
    """A triangle at a lane's end pointing out of the window (``length`` < 0: to the left)."""
    points = (
        f"{num(x)},{num(y - 1)} {num(x + length)},{num(y + LANE / 2)} {num(x)},{num(y + LANE + 1)}"
    )
    return tag("polygon", {"class": kind, "points": points, "fill": "#111111"}, title(tip))


def _legend(prefix: str, verdicts: set[str], y: float) -> list[str]:
    """The outlines' and the arrow's keys under the labels, the verdicts' swatches under the bars."""
    solid = {
        "x": 8,
        "y": y - 9,
        "width": 18,
        "height": 10,
        "fill": "none",
        "stroke": "#111111",
        "stroke-width": 1.2,
    }
    out = [tag("rect", solid), text(30, y, "continuous", class_="legend")]
    out += [tag("rect", {**solid, "x": 98, "stroke-dasharray": "4 2"})]
    out += [text(120, y, "episodic", class_="legend"), text(176, y, "▶ ongoing", class_="legend")]
    return out + palette.legend(prefix, verdicts, LEFT + 12, y)[0]

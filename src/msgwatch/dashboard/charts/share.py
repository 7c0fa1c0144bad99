"""The share chart: a series' failing share over time against its controls.

What it draws, back to front:

- the events given, each a shaded span from its start to its end (or the chart's end while it
  is ongoing) behind the bars, and in front of them its start and end as dashed lines, a band
  above the plot (seen when the bars fill the span) and a label; start and end in its tooltip;
- y from 0 to 100 % with grid lines, x the subject's buckets in UTC;
- the subject as bars, one ``.mark`` per point: height the failing share (a 2-pixel stub where it
  is 0 or, with only inconclusive rows, unknown), filled with the look of the point's state (the
  failing verdict most of its rows show, else ok, else inconclusive), its figures in ``data-*``
  attributes and its tooltip (share, verdict counts, n, probes, mechanism);
- the other networks' shares as thin solid lines and the share of rows whose own control worked
  as a dashed line, both ``class="control"`` (not marks); a line breaks where a bucket has no share;
- a legend in words: the states drawn, the lines, the event spans.
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
    pct,
    render,
    sample,
    tag,
    text,
    title,
)
from msgwatch.dashboard.model import FAILING, Comparison, EventRow, Point, Series

HEIGHT = 360
LEFT, RIGHT = 46, WIDTH - 16
PLOT_TOP, PLOT_BOTTOM = TOP + 26, HEIGHT - FOOT - 70
MAX_EVENTS = 20
CONTROL = "#1d4ed8"
CONTROL_OK = "#111111"


def point_state(point: Point) -> str:
    """The failing verdict most of the point's rows show, else ok, else inconclusive."""
    if point.counts.failing:
        return max(FAILING, key=lambda v: (point.by_verdict.get(v, 0), -FAILING.index(v)))
    return "ok" if point.counts.ok else "inconclusive"


def share_chart(
    comparison: Comparison, events: Sequence[EventRow] = (), caption: str = ""
) -> Chart:
    """The subject's failing share as bars, its controls as lines, events as shaded spans."""
    subject = comparison.subject
    where = " ".join(x for x in (subject.probe_cc, subject.probe_asn or "all networks") if x)
    frame = Frame(
        kind="share",
        prefix=chart_id("share", comparison, tuple(events), caption),
        title=label(f"Failing share: {subject.service} {subject.function} on {where}", 110),
        desc=_desc(comparison),
        caption=caption or _caption(subject),
        height=HEIGHT,
    )
    timed = [(when, p) for p in subject.points if (when := parse_time(p.bucket)) is not None]
    if not timed:
        return empty(frame)
    grain = dt.timedelta(seconds=max(subject.grain_seconds, 1))
    scale = TimeScale(timed[0][0], timed[-1][0] + grain, LEFT, RIGHT)
    states = {point_state(p) for _, p in timed}
    body = [*_y_axis(), *time_axis(scale, PLOT_BOTTOM)]
    shades, edges = _events(scale, events[:MAX_EVENTS])
    body += shades
    body += [_bar(frame.prefix, scale, grain, when, p) for when, p in timed]
    body += edges
    body += _lines(scale, grain, comparison)
    body += _legend(frame.prefix, states, comparison, bool(events))
    defs = palette.patterns(frame.prefix, states | {"inconclusive"})
    return render(frame, defs, body, len(timed))


def _y(share: float) -> float:
    return PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * min(max(share, 0.0), 1.0)


def _y_axis() -> list[str]:
    out = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _y(tick)
        out.append(tag("line", {"x1": LEFT, "x2": RIGHT, "y1": y, "y2": y, "stroke": "#e5e7eb"}))
        out.append(text(LEFT - 4, y + 4, pct(tick), text_anchor="end", class_="tick", font_size=10))
    out.append(text(8, PLOT_TOP - 20, "failing share", class_="axis-label", font_size=10))
    return out


def _bar(prefix: str, scale: TimeScale, grain: dt.timedelta, when: dt.datetime, p: Point) -> str:
    state = point_state(p)
    x0, x1 = scale.x(when), scale.x(when + grain)
    gap = 0.5 if x1 - x0 >= 3 else 0.0
    share = p.counts.share
    top = min(_y(share or 0.0), PLOT_BOTTOM - 2)
    verdicts = ", ".join(f"{label(v, 20)}: {n}" for v, n in sorted(p.by_verdict.items()) if n)
    tip = (
        f"{show(when)} UTC · {pct(share)} failing ({verdicts or 'no verdicts'}) · "
        f"{sample(p.counts)}" + (f" · mechanism: {label(p.mechanism, 60)}" if p.mechanism else "")
    )
    attrs = {
        "class": "mark",
        "x": x0 + gap,
        "y": top,
        "width": max(x1 - x0 - 2 * gap, 0.5),
        "height": PLOT_BOTTOM - top,
        "fill": palette.fill(prefix, state),
        "stroke": "#333333" if x1 - x0 >= 3 else None,
        "stroke-width": 0.4 if x1 - x0 >= 3 else None,
        "data-bucket": show(when),
        "data-share": "" if share is None else num(share),
        "data-n": p.counts.measurements,
        "data-failing": p.counts.failing,
        "data-ok": p.counts.ok,
        "data-probes": p.counts.probes,
        "data-state": state,
        "data-mechanism": label(p.mechanism, 60) if p.mechanism else None,
    }
    return tag("rect", attrs, title(tip))


def _path(scale: TimeScale, grain: dt.timedelta, values: Sequence[tuple[str, float | None]]) -> str:
    """A path through the buckets' centres, broken where a share is missing or out of view."""
    out, pen = [], "M"
    for bucket, share in values:
        when = parse_time(bucket)
        if when is None or share is None or not scale.covers(when, when + grain):
            pen = "M"
            continue
        out.append(f"{pen}{num(scale.x(when + grain / 2))} {num(_y(share))}")
        pen = "L"
    return "".join(out)


def _lines(scale: TimeScale, grain: dt.timedelta, comparison: Comparison) -> list[str]:
    out = []
    for other in comparison.other_networks:
        d = _path(scale, grain, [(p.bucket, p.counts.share) for p in other.points])
        if d:
            name = label(other.probe_asn or other.probe_cc, 40)
            attrs = {
                "class": "control",
                "data-network": name,
                "d": d,
                "fill": "none",
                "stroke": CONTROL,
                "stroke-width": 1.2,
                "stroke-opacity": 0.8,
            }
            out.append(tag("path", attrs, title(f"{name}: failing share (other network)")))
    d = _path(scale, grain, comparison.control_ok)
    if d:
        attrs = {
            "class": "control control-ok",
            "d": d,
            "fill": "none",
            "stroke": CONTROL_OK,
            "stroke-width": 1.4,
            "stroke-dasharray": "5 3",
        }
        out.append(
            tag("path", attrs, title("share of the subject's rows whose own control worked"))
        )
    return out


def _events(scale: TimeScale, events: Sequence[EventRow]) -> tuple[list[str], list[str]]:
    """The events' shaded spans (behind the bars) and their edges and labels (in front)."""
    back: list[str] = []
    out: list[str] = []
    for event in events:
        start, end = parse_time(event.start), parse_time(event.end)
        end = scale.end if end is None or event.ongoing else end
        if start is None or not scale.covers(start, end):
            continue
        x0, x1 = scale.x(start), scale.x(end)
        tip = (
            f"event {label(event.event_id, 40)}: {label(event.verdict, 20)}, "
            f"{label(event.pattern, 20)}, from {show(start)} UTC "
            + ("(ongoing)" if event.ongoing else f"to {show(end)} UTC")
        )
        shade = {
            "class": "event",
            "x": x0,
            "y": PLOT_TOP,
            "width": max(x1 - x0, 1),
            "height": PLOT_BOTTOM - PLOT_TOP,
            "fill": "#fde68a",
            "fill-opacity": 0.35,
            "data-event": label(event.event_id, 80),
            "data-start": show(start),
            "data-end": "" if event.ongoing else show(end),
        }
        back.append(tag("rect", shade, title(tip)))
        for x in (x0, x1) if not event.ongoing else (x0,):
            edge = {
                "x1": x,
                "x2": x,
                "y1": PLOT_TOP,
                "y2": PLOT_BOTTOM,
                "stroke": "#92400e",
                "stroke-width": 1,
                "stroke-dasharray": "2 2",
            }
            out.append(tag("line", edge))
        band = {
            "class": "event-band",
            "x": x0,
            "y": PLOT_TOP - 6,
            "width": max(x1 - x0, 1),
            "height": 5,
            "fill": "#d97706",
        }
        out.append(tag("rect", band, title(tip)))
        out.append(
            text(
                x0 + 2,
                PLOT_TOP - 9,
                f"{event.verdict} from {show(start)}",
                40,
                class_="event-label",
                font_size=9,
                fill="#92400e",
            )
        )
    return back, out


def _legend(prefix: str, states: set[str], comparison: Comparison, events: bool) -> list[str]:
    """The states' swatches, then a key for each line and the event span drawn."""
    y = PLOT_BOTTOM + 56
    out, x = palette.legend(prefix, states, LEFT, y)
    keys = [
        (bool(comparison.other_networks), CONTROL, None, "other networks"),
        (bool(comparison.control_ok), CONTROL_OK, "5 3", "own control worked"),
    ]
    for shown, stroke, dash, word in keys:
        if shown:
            key = {
                "x1": x + 16,
                "x2": x + 34,
                "y1": y - 4,
                "y2": y - 4,
                "stroke": stroke,
                "stroke-width": 1.4,
                "stroke-dasharray": dash,
            }
            out += [tag("line", key), text(x + 38, y, word, class_="legend")]
            x += 38 + 7 * len(word)
    if events:
        out.append(
            tag(
                "rect",
                {
                    "x": x + 16,
                    "y": y - 9,
                    "width": 12,
                    "height": 10,
                    "fill": "#fde68a",
                    "stroke": "#d97706",
                },
            )
        )
        out.append(text(x + 32, y, "event", class_="legend"))
    return out


def _caption(subject: Series) -> str:
    times = [when for p in subject.points if (when := parse_time(p.bucket)) is not None]
    span = f"{show(times[0])} → {show(times[-1])} UTC · " if times else ""
    n = sum(p.counts.measurements for p in subject.points)
    where = f"{subject.probe_cc} · {subject.probe_asn or 'all networks'}"
    return f"{where} · {subject.service} {subject.function} · {span}n = {n} measurements"


def _desc(comparison: Comparison) -> str:
    subject = comparison.subject
    return (
        f"Bars: the share of failing verdicts per bucket of {subject.service} {subject.function} "
        f"({len(subject.points)} buckets). Solid lines: {len(comparison.other_networks)} other "
        "networks. Dashed line: the share of rows whose own control worked."
    )

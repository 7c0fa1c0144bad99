"""The heatmap: a network's service·function rows against time, each cell a state.

Rules:

- One row per :class:`~msgwatch.dashboard.model.HeatRow`, labelled ``service · function`` (cut
  to fit the label column; the whole label is the row's tooltip); columns are the view's buckets
  on a UTC time axis, each ``grain_seconds`` wide.
- Each row is a ``g.row`` with ``data-service`` and ``data-function``; each cell whose state is
  not ``no_data`` is one ``rect.mark`` coloured and patterned by its state (:mod:`.palette`),
  with ``data-bucket``, ``data-state``, ``data-n``, ``data-failing``, ``data-ok``, ``data-share``
  and a tooltip. Runs of ``no_data`` cells are drawn as one empty
  outline each (``class="nodata"``, not a mark), so a month of hours stays small.
- A cell whose bucket is not a time is not drawn. A view with no rows or no buckets is the
  "no measurements" chart.
"""

from __future__ import annotations

import datetime as dt

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
from msgwatch.dashboard.model import STATES, HeatCell, HeatRow, NetworkView

LABELS = 168  # the label column's width
LEFT, RIGHT = LABELS + 8, WIDTH - 16
ROW, GAP = 18, 3
MAX_ROWS = 60


def heatmap_chart(view: NetworkView, caption: str = "") -> Chart:
    """The network's rows × buckets, one mark per measured cell."""
    rows = view.rows[:MAX_ROWS]
    buckets = [when for b in view.buckets if (when := parse_time(b)) is not None]
    height = TOP + 14 + len(rows) * (ROW + GAP) + 68 + FOOT
    frame = Frame(
        kind="heatmap",
        prefix=chart_id("heatmap", view, caption),
        title=label(f"Services and functions on {view.probe_cc} {view.probe_asn} over time", 110),
        desc=(
            f"One row per service and function ({len(view.rows)}), one column per bucket "
            f"({len(view.buckets)}); each measured cell shows its state as colour, pattern and tooltip."
        ),
        caption=caption or _caption(view),
        height=max(height, TOP + 120 + FOOT),
    )
    if not rows or not buckets:
        return empty(frame)
    grain = dt.timedelta(seconds=max(view.grain_seconds, 1))
    scale = TimeScale(min(buckets), max(buckets) + grain, LEFT, RIGHT)
    body: list[str] = []
    marks = 0
    states: set[str] = set()
    for i, row in enumerate(rows):
        y = TOP + 14 + i * (ROW + GAP)
        drawn, row_marks = _row(frame.prefix, scale, grain, row, y)
        body += drawn
        marks += row_marks
        states |= {c.state for c in row.cells}
    bottom = TOP + 14 + len(rows) * (ROW + GAP)
    body += time_axis(scale, bottom + 2)
    if len(view.rows) > MAX_ROWS:
        body.append(
            text(8, bottom + 30, f"+{len(view.rows) - MAX_ROWS} rows not drawn", font_size=10)
        )
    body += palette.legend(frame.prefix, states | {"no_data"}, LEFT, bottom + 58)[0]
    return render(frame, palette.patterns(frame.prefix, states), body, marks)


def _row(
    prefix: str, scale: TimeScale, grain: dt.timedelta, row: HeatRow, y: float
) -> tuple[list[str], int]:
    name = f"{row.service} · {row.function}"
    out = [
        tag(
            "g",
            {"class": "row-label"},
            title(label(name, 120)),
            text(LABELS, y + ROW - 5, name, 26, text_anchor="end", font_size=11),
        )
    ]
    run: list[dt.datetime] = []
    marks = 0
    for cell in row.cells:
        when = parse_time(cell.bucket)
        if when is None:
            continue
        if cell.state == "no_data":
            run.append(when)
            continue
        out += _nodata(scale, grain, run, y)
        run = []
        out.append(_cell(prefix, scale, grain, when, cell, name, y))
        marks += 1
    out += _nodata(scale, grain, run, y)
    group = {
        "class": "row",
        "data-service": label(row.service, 40),
        "data-function": label(row.function, 20),
    }
    return [tag("g", group, *out)], marks


def _cell(
    prefix: str,
    scale: TimeScale,
    grain: dt.timedelta,
    when: dt.datetime,
    cell: HeatCell,
    name: str,
    y: float,
) -> str:
    x0, x1 = scale.x(when), scale.x(when + grain)
    state = cell.state if cell.state in STATES else "inconclusive"
    share = cell.counts.share
    tip = (
        f"{label(name, 80)} · {show(when)} UTC · {palette.look(state).word} · {pct(share)} failing · "
        f"{sample(cell.counts)}"
    )
    attrs = {
        "class": "mark",
        "x": x0,
        "y": y,
        "width": max(x1 - x0 - (0.5 if x1 - x0 >= 3 else 0), 0.5),
        "height": ROW,
        "fill": palette.fill(prefix, state),
        "data-bucket": show(when),
        "data-state": state,
        "data-n": cell.counts.measurements,
        "data-failing": cell.counts.failing,
        "data-ok": cell.counts.ok,
        "data-share": "" if share is None else num(share),
    }
    return tag("rect", attrs, title(tip))


def _nodata(scale: TimeScale, grain: dt.timedelta, run: list[dt.datetime], y: float) -> list[str]:
    if not run:
        return []
    x0, x1 = scale.x(run[0]), scale.x(run[-1] + grain)
    attrs = {
        "class": "nodata",
        "x": x0,
        "y": y + 0.5,
        "width": max(x1 - x0 - 0.5, 0.5),
        "height": ROW - 1,
        "fill": "none",
        "stroke": palette.OUTLINE,
        "stroke-width": 0.6,
        "data-state": "no_data",
    }
    return [tag("rect", attrs, title(f"no data {show(run[0])} → {show(run[-1] + grain)} UTC"))]


def _caption(view: NetworkView) -> str:
    n = sum(c.counts.measurements for r in view.rows for c in r.cells)
    return (
        f"{view.probe_cc} · {view.probe_asn} · {view.since[:16]} → {view.until[:16]} UTC · "
        f"n = {n} measurements"
    )

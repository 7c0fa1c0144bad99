"""The heatmap: a network's service·function rows against time, each cell a state.

Rules:

- One row per :class:`~msgwatch.dashboard.model.HeatRow`, labelled ``service · function`` (cut
  to fit the label column; the whole label is the row's tooltip); columns are the view's buckets
  on a UTC time axis, each ``grain_seconds`` wide.
- Each row is a ``g.row`` with ``data-service`` and ``data-function``; each cell whose state is
  not ``no_data`` is one ``rect.mark`` coloured and patterned by its state (:mod:`.palette`),
  with ``data-bucket``, ``data-state``, ``data-n``, ``data-failing``, ``data-ok``, ``data-share``.
  A cell has no ``<title>`` of its own (thousands of them made the page slow): the page's script
  shows its figures as a tooltip, and the row label's tooltip counts the row's cells per state.
  Runs of ``no_data`` cells are drawn as one empty outline each (``class="nodata"``, not a mark),
  so a month of hours stays small.
- Speed: what cells share (their columns' x and time text, their width, each state's fill) is
  formatted once per chart; a cell is one f-string of numbers, known states and formatted times,
  none of which needs escaping.
- A cell whose bucket is not a time is not drawn. A view with no rows or no buckets is the
  "no measurements" chart.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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
        prefix=_prefix(view, caption),
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
    grid = _grid(frame.prefix, scale, grain, rows)
    for i, row in enumerate(rows):
        y = TOP + 14 + i * (ROW + GAP)
        drawn, row_marks = _row(grid, scale, grain, row, y)
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


@dataclass(frozen=True)
class _Grid:
    """What every cell of one heatmap shares, formatted once: its columns' x and time text, the
    cells' width and each state's fill."""

    columns: dict[str, tuple[str, str]]  # bucket text → (x, "YYYY-MM-DD HH:MM")
    width: str
    fills: dict[str, str]


def _grid(prefix: str, scale: TimeScale, grain: dt.timedelta, rows: Sequence[HeatRow]) -> _Grid:
    columns: dict[str, tuple[str, str]] = {}
    for bucket in {c.bucket for row in rows for c in row.cells}:
        when = parse_time(bucket)
        if when is not None:
            columns[bucket] = (num(scale.x(when)), show(when))
    step = scale.x(scale.start + grain) - scale.x(scale.start)
    width = num(max(step - (0.5 if step >= 3 else 0), 0.5))
    return _Grid(columns, width, {state: palette.fill(prefix, state) for state in STATES})


def _row(
    grid: _Grid, scale: TimeScale, grain: dt.timedelta, row: HeatRow, y: float
) -> tuple[list[str], int]:
    name = f"{row.service} · {row.function}"
    out = [
        tag(
            "g",
            {"class": "row-label"},
            title(_row_tip(name, row)),
            text(LABELS, y + ROW - 5, name, 26, text_anchor="end", font_size=11),
        )
    ]
    run: list[dt.datetime] = []
    cells: list[str] = []
    head = f'<rect class="mark" y="{num(y)}" height="{ROW}" width="{grid.width}"'
    for cell in row.cells:
        column = grid.columns.get(cell.bucket)
        if column is None:
            continue
        if cell.state == "no_data":
            when = parse_time(cell.bucket)
            assert when is not None
            run.append(when)
            continue
        out += _nodata(scale, grain, run, y)
        run = []
        cells.append(_cell(grid, head, column, cell))
    out += _nodata(scale, grain, run, y)
    group = {
        "class": "row",
        "data-service": label(row.service, 40),
        "data-function": label(row.function, 20),
    }
    return [tag("g", group, *out, "".join(cells))], len(cells)


def _row_tip(name: str, row: HeatRow) -> str:
    """The row label's tooltip: the whole name and how many of its cells are in each state."""
    counts = Counter(c.state for c in row.cells if c.state != "no_data")
    states = ", ".join(f"{counts[s]} {palette.look(s).word}" for s in STATES if counts[s])
    return f"{label(name, 120)}: {sum(counts.values())} measured cells ({states or 'none'})"


def _cell(grid: _Grid, head: str, column: tuple[str, str], cell: HeatCell) -> str:
    """One measured cell: a mark with its figures as data (the page's script shows them as a
    tooltip); every value is a number, a known state or a formatted time, so none needs escaping."""
    state = cell.state if cell.state in STATES else "inconclusive"
    counts = cell.counts
    share = counts.share
    return (
        f'{head} x="{column[0]}" fill="{grid.fills[state]}" data-bucket="{column[1]}" '
        f'data-state="{state}" data-n="{int(counts.measurements)}" '
        f'data-failing="{int(counts.failing)}" data-ok="{int(counts.ok)}" '
        f'data-share="{"" if share is None else num(share)}"/>'
    )


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


def _prefix(view: NetworkView, caption: str) -> str:
    """The chart's id prefix from what tells one heatmap from another (the network, the window,
    the grain, the rows), not the repr of every cell: that took longer than drawing them."""
    names = [(row.service, row.function) for row in view.rows]
    key = (view.probe_cc, view.probe_asn, view.since, view.until, view.grain_seconds, names)
    return chart_id("heatmap", key, view.buckets, caption)


def _caption(view: NetworkView) -> str:
    n = sum(c.counts.measurements for r in view.rows for c in r.cells)
    return (
        f"{view.probe_cc} · {view.probe_asn} · {view.since[:16]} → {view.until[:16]} UTC · "
        f"n = {n} measurements"
    )

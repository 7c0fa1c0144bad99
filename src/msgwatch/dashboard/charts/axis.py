"""Time on the x axis: the model's time text read as UTC, a linear scale and its ticks.

Rules:

- The model's times are text (``YYYY-MM-DD HH:MM:SS``, or a day, or ISO with ``T``); text that is
  not a time reads as None and what it dates is not drawn. An aware time is converted to UTC.
- A :class:`TimeScale` maps [start, end) onto [x0, x1], clamping outside times to the edges.
- Ticks fall on whole multiples of a step from 1 hour to 28 days, chosen so that one label has
  85 pixels; a label is the day (``YYYY-MM-DD``) over the time (``HH:MM``, below a day's step),
  and the axis says UTC below its right end; the
  labels at the ends are aligned inward.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from msgwatch.dashboard.charts.svg import tag, text

_STEPS = (
    3600,
    7200,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    28 * 86400,
)
_TICK_PIXELS = 85
_EPOCH = dt.datetime(1970, 1, 1)


def parse_time(value: str | None) -> dt.datetime | None:
    """The model's time text as a naive UTC datetime, None when it is not a time."""
    if not value or len(value) > 40:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def show(when: dt.datetime, seconds: int = 3600) -> str:
    """A time for people, as fine as ``seconds`` needs."""
    return when.strftime("%Y-%m-%d" if seconds >= 86400 else "%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class TimeScale:
    start: dt.datetime
    end: dt.datetime
    x0: float
    x1: float

    def x(self, when: dt.datetime) -> float:
        """The x of ``when``, clamped to the scale."""
        span = (self.end - self.start).total_seconds()
        if span <= 0:
            return self.x0
        part = (when - self.start).total_seconds() / span
        return self.x0 + (self.x1 - self.x0) * min(max(part, 0.0), 1.0)

    def covers(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether [start, end) overlaps the scale."""
        return start < self.end and end > self.start

    def step(self) -> int:
        """The tick step in seconds."""
        span = (self.end - self.start).total_seconds()
        most = max(int((self.x1 - self.x0) / _TICK_PIXELS), 2)
        return next((s for s in _STEPS if span / s <= most), _STEPS[-1])

    def ticks(self) -> list[dt.datetime]:
        step = self.step()
        first = -(-int((self.start - _EPOCH).total_seconds()) // step) * step
        out: list[dt.datetime] = []
        when = _EPOCH + dt.timedelta(seconds=first)
        while when <= self.end and len(out) <= 40:
            out.append(when)
            when += dt.timedelta(seconds=step)
        return out


def time_axis(scale: TimeScale, y: float, grid_top: float | None = None) -> list[str]:
    """The axis line at ``y``, ticks with UTC labels and, from ``grid_top``, light grid lines."""
    out = [tag("line", {"x1": scale.x0, "x2": scale.x1, "y1": y, "y2": y, "stroke": "#333"})]
    step = scale.step()
    for when in scale.ticks():
        x = scale.x(when)
        if grid_top is not None:
            out.append(
                tag("line", {"x1": x, "x2": x, "y1": grid_top, "y2": y, "stroke": "#e5e7eb"})
            )
        out.append(tag("line", {"x1": x, "x2": x, "y1": y, "y2": y + 4, "stroke": "#333"}))
        lines = [when.strftime("%Y-%m-%d")] + ([when.strftime("%H:%M")] if step < 86400 else [])
        anchor = "start" if x - scale.x0 < 30 else "end" if scale.x1 - x < 30 else "middle"
        for i, line in enumerate(lines):
            out.append(
                text(x, y + 14 + 11 * i, line, text_anchor=anchor, class_="tick", font_size=10)
            )
    out.append(
        text(scale.x1, y + 37, "time (UTC)", text_anchor="end", class_="axis-label", font_size=10)
    )
    return out

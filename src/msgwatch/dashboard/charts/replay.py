"""The replay chart: a call replay's packets per interval against its bit-inverted control.

The picture that shows DPI of call traffic: the original call's packets stop arriving while the
control (the same sizes and timing, bits inverted, so no classifier recognises it) passes.

Rules:

- Two panels on one time axis (seconds from the replay's start): the original above, the control
  below, one y scale (packets) for both so their heights compare.
- Each interval is one ``g.mark`` holding the packets sent as an outline bar and the packets
  received as a filled bar inside it, with ``data-series``, ``data-t``, ``data-tx``, ``data-rx``
  and a tooltip; a lost interval shows as an empty outline.
- The legend names each series with its loss, and says which bar is sent and which received.
- An interval's width is the smallest step between its series' times (1 s when there is one).
  An interval with a time that is not finite or a negative count is not drawn; at most 600 per
  series are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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
    tag,
    text,
    title,
)
from msgwatch.dashboard.model import Interval, Replay

HEIGHT = 380
LEFT, RIGHT = 118, WIDTH - 16
PANEL = 96
PANELS = ((TOP + 20, "original"), (TOP + 20 + PANEL + 26, "control"))
MAX_INTERVALS = 600
COLOURS = {"original": "#8b1a1a", "control": "#1d4ed8"}
NAMES = {"original": "original call traffic", "control": "bit-inverted control"}


def replay_chart(replay: Replay, caption: str = "") -> Chart:
    """The original's and the control's packets per interval, one mark per interval per series."""
    series = {"original": _usable(replay.original), "control": _usable(replay.control)}
    what = f"{replay.service} {replay.function}"
    frame = Frame(
        kind="replay",
        prefix=chart_id("replay", replay, caption),
        title=label(f"Call replay: {what} to {replay.target}", 110),
        desc=(
            f"Packets sent (outline) and received (filled) per interval: original loss "
            f"{pct(replay.original_loss)}, bit-inverted control loss {pct(replay.control_loss)}."
        ),
        caption=caption or _caption(replay),
        height=HEIGHT,
    )
    times = [i.t for run in series.values() for i in run]
    if not times:
        return empty(frame)
    t0, step = min(times), _step(times)
    t1 = max(times) + step
    peak = max(max(i.tx_packets, i.rx_packets) for run in series.values() for i in run) or 1
    losses = {"original": replay.original_loss, "control": replay.control_loss}
    body: list[str] = []
    for top, name in PANELS:
        body += _panel_frame(top, name, losses[name], peak)
        for interval in series[name]:
            body.append(_mark(name, interval, top, (t0, t1, step), peak))
    body += _time_axis(t0, t1, PANELS[1][0] + PANEL)
    body += _legend(HEIGHT - FOOT - 12)
    return render(frame, (), body, sum(len(run) for run in series.values()))


def _usable(intervals: Sequence[Interval]) -> list[Interval]:
    """The first intervals with a finite time and packet counts that are not negative."""
    good = (i for i in intervals if math.isfinite(i.t) and min(i.tx_packets, i.rx_packets) >= 0)
    return list(itertools.islice(good, MAX_INTERVALS))


def _step(times: Sequence[float]) -> float:
    ordered = sorted(set(times))
    gaps = [b - a for a, b in itertools.pairwise(ordered) if b > a]
    return min(gaps) if gaps else 1.0


def _x(t: float, t0: float, t1: float) -> float:
    return LEFT + (RIGHT - LEFT) * (t - t0) / ((t1 - t0) or 1.0)


def _mark(
    name: str, interval: Interval, top: float, span: tuple[float, float, float], peak: int
) -> str:
    t0, t1, step = span
    x0, x1 = _x(interval.t, t0, t1), _x(interval.t + step, t0, t1)
    width = max(x1 - x0 - (1 if x1 - x0 >= 4 else 0), 0.5)
    bottom = top + PANEL
    tx_h, rx_h = PANEL * interval.tx_packets / peak, PANEL * min(interval.rx_packets, peak) / peak
    lost = interval.tx_packets - interval.rx_packets
    tip = (
        f"{NAMES[name]} · t = {num(interval.t)} s · sent {interval.tx_packets} · "
        f"received {interval.rx_packets}"
        + (f" ({pct(lost / interval.tx_packets)} lost)" if interval.tx_packets and lost > 0 else "")
    )
    sent = {
        "class": "tx",
        "x": x0,
        "y": bottom - tx_h,
        "width": width,
        "height": tx_h,
        "fill": "none",
        "stroke": COLOURS[name],
        "stroke-width": 0.8,
    }
    received = {
        "class": "rx",
        "x": x0,
        "y": bottom - rx_h,
        "width": width,
        "height": rx_h,
        "fill": COLOURS[name],
    }
    attrs = {
        "class": "mark",
        "data-series": name,
        "data-t": num(interval.t),
        "data-tx": interval.tx_packets,
        "data-rx": interval.rx_packets,
    }
    return tag("g", attrs, title(tip), tag("rect", sent), tag("rect", received))


def _panel_frame(top: float, name: str, loss: float | None, peak: int) -> list[str]:
    bottom = top + PANEL
    return [
        tag("line", {"x1": LEFT, "x2": RIGHT, "y1": bottom, "y2": bottom, "stroke": "#333"}),
        tag("line", {"x1": LEFT, "x2": RIGHT, "y1": top, "y2": top, "stroke": "#e5e7eb"}),
        text(LEFT - 6, top + 10, f"{peak} packets", text_anchor="end", font_size=9, class_="tick"),
        text(LEFT - 6, bottom, "0", text_anchor="end", font_size=9, class_="tick"),
        text(
            8, top + PANEL / 2, NAMES[name].split(" ")[0], font_weight="bold", class_="panel-label"
        ),
        text(8, top + PANEL / 2 + 13, f"loss {pct(loss)}", font_size=10, class_="panel-label"),
    ]


def _time_axis(t0: float, t1: float, y: float) -> list[str]:
    out = []
    step = next(
        (
            s
            for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300)
            if (t1 - t0) / s <= 10
        ),
        600,
    )
    tick = step * -(-t0 // step)
    while tick <= t1:
        x = _x(tick, t0, t1)
        out.append(tag("line", {"x1": x, "x2": x, "y1": y, "y2": y + 4, "stroke": "#333"}))
        out.append(
            text(x, y + 15, f"{num(tick)} s", text_anchor="middle", font_size=10, class_="tick")
        )
        tick += step
    out.append(
        text(RIGHT, y + 28, "seconds from the replay's start", text_anchor="end", font_size=10)
    )
    return out


def _legend(y: float) -> list[str]:
    out = []
    x = float(LEFT)
    for name in ("original", "control"):
        out.append(
            tag("rect", {"x": x, "y": y - 9, "width": 12, "height": 10, "fill": COLOURS[name]})
        )
        out.append(text(x + 16, y, NAMES[name], class_="legend"))
        x += 170
    out.append(
        tag(
            "rect",
            {"x": x, "y": y - 9, "width": 12, "height": 10, "fill": "none", "stroke": "#333"},
        )
    )
    out.append(text(x + 16, y, "outline: sent; filled: received", class_="legend"))
    return out


def _caption(replay: Replay) -> str:
    n = sum(i.tx_packets for i in replay.original) + sum(i.tx_packets for i in replay.control)
    return (
        f"{replay.service} {replay.function} · {replay.target} · original loss "
        f"{pct(replay.original_loss)} · control loss {pct(replay.control_loss)} · n = {n} packets sent"
    )

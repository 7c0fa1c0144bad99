"""How a state looks: a colour AND a pattern AND a word, so that no state is told by colour alone.

Rules:

- blocked: dark red, cross-hatched; throttled: dark orange, diagonal lines; degraded: amber,
  lines the other way; inconclusive: grey, dots; ok: green, plain; no_data: no fill, an outline
  only (never a mark).
- Patterns are ``<pattern>`` elements inside each svg (ids under the chart's prefix), drawn in
  user space so that they tile the same at every size; :func:`fill` names a state's fill.
- :func:`legend` draws a swatch and the state's word for each state it is given, in the order of
  :data:`msgwatch.dashboard.model.STATES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from msgwatch.dashboard.charts.svg import tag, text
from msgwatch.dashboard.model import STATES


@dataclass(frozen=True)
class Look:
    colour: str  # the fill behind the pattern
    ink: str  # the pattern's lines or dots
    pattern: str  # "cross" | "diagonal" | "antidiagonal" | "dots" | "plain" | "outline"
    word: str


LOOKS = {
    "blocked": Look("#8b1a1a", "#f6d5d5", "cross", "blocked"),
    "throttled": Look("#c2410c", "#fff1e6", "diagonal", "throttled"),
    "degraded": Look("#f59e0b", "#5b3400", "antidiagonal", "degraded"),
    "inconclusive": Look("#b8bcc2", "#3f434a", "dots", "inconclusive"),
    "ok": Look("#2f8f46", "#2f8f46", "plain", "ok"),
    "no_data": Look("none", "#9aa0a6", "outline", "no data"),
}
OUTLINE = "#9aa0a6"
_SIZE = 6


def look(state: str) -> Look:
    """A state's look; an unknown state looks inconclusive."""
    return LOOKS.get(state, LOOKS["inconclusive"])


def pattern_id(prefix: str, state: str) -> str:
    return f"{prefix}-{state if state in LOOKS else 'inconclusive'}"


def fill(prefix: str, state: str) -> str:
    """The value of a ``fill`` attribute drawing ``state``."""
    style = look(state)
    if style.pattern in ("plain", "outline"):
        return style.colour
    return f"url(#{pattern_id(prefix, state)})"


def patterns(prefix: str, states: Iterable[str] = STATES) -> list[str]:
    """The ``<pattern>`` definitions of the given states (plain and outline states need none)."""
    out = []
    for state in sorted({s if s in LOOKS else "inconclusive" for s in states}, key=STATES.index):
        style = LOOKS[state]
        if style.pattern in ("plain", "outline"):
            continue
        attrs = {
            "id": pattern_id(prefix, state),
            "patternUnits": "userSpaceOnUse",
            "width": _SIZE,
            "height": _SIZE,
        }
        out.append(tag("pattern", attrs, *_tile(style)))
    return out


def _tile(style: Look) -> list[str]:
    ground = tag("rect", {"width": _SIZE, "height": _SIZE, "fill": style.colour})
    line = {"stroke": style.ink, "stroke-width": 1.2}
    s = _SIZE
    if style.pattern == "dots":
        return [ground, tag("circle", {"cx": s / 2, "cy": s / 2, "r": 1.1, "fill": style.ink})]
    if style.pattern == "cross":
        return [ground, tag("path", {"d": f"M0 0L{s} {s}M{s} 0L0 {s}", **line})]
    if style.pattern == "diagonal":
        return [
            ground,
            tag("path", {"d": f"M0 {s}L{s} 0M-1 1L1 -1M{s - 1} {s + 1}L{s + 1} {s - 1}", **line}),
        ]
    return [
        ground,
        tag("path", {"d": f"M0 0L{s} {s}M{s - 1} -1L{s + 1} 1M-1 {s - 1}L1 {s + 1}", **line}),
    ]


def swatch(prefix: str, state: str, x: float, y: float, width: float, height: float) -> str:
    """A rectangle drawing ``state`` (outlined, so that a light state shows on white)."""
    stroke = OUTLINE if state == "no_data" else "#333333"
    attrs = {
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "fill": fill(prefix, state),
        "stroke": stroke,
        "stroke-width": 0.6,
    }
    return tag("rect", attrs)


def legend(prefix: str, states: Iterable[str], x: float, y: float) -> tuple[list[str], float]:
    """Swatch and word for each state, on one line from (x, y) (``y`` is the text's baseline),
    and the x where the line ends."""
    out = []
    for state in sorted(set(states) & set(LOOKS), key=STATES.index):
        out.append(swatch(prefix, state, x, y - 9, 12, 10))
        out.append(text(x + 16, y, LOOKS[state].word, class_="legend"))
        x += 24 + 7 * len(LOOKS[state].word)
    return out, x

"""The charts' SVG primitives: hostile text made safe, elements written as text, the frame every
chart shares, and :class:`Chart`, what a chart function returns.

Rules:

- Every value from the model is hostile. :func:`label` makes it safe to show: characters XML 1.0
  cannot hold, control characters and bidirectional overrides/isolates (U+202A–U+202E,
  U+2066–U+2069, the marks) are removed, and the text is cut to ``limit`` characters with an
  ellipsis. :func:`tag` escapes every attribute value and :func:`text` every text node (``&``,
  ``<``, ``>``, both quotes), so nothing from the model is ever markup.
- Text is drawn with ``direction="ltr" unicode-bidi="embed"``: a right-to-left label stays inside
  its own run and cannot reorder the caption or the figures around it.
- No ``<script>``, no ``<style>`` and no ``style`` attribute (a page's Content-Security-Policy
  forbids inline style), no event attribute, no reference outside the svg: presentation
  attributes only, ``url(#id)`` to the svg's own patterns.
- Ids start with a prefix hashed from the chart's kind and input (:func:`chart_id`), so several
  charts on one page do not share ids; the same input gives the same svg, byte for byte.
- The frame (:func:`render`): a white background, the title at the top, the caption (filters and
  sample size, up to two lines) and "msgwatch" as the mark of origin at the bottom, all drawn as
  text inside the svg so that an exported file carries them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from msgwatch.dashboard.model import Counts

WIDTH = 760
TOP = 34  # the title's band
FOOT = 46  # the caption's two lines and the origin
CAPTION_LINE = 118  # characters per caption line
_UNSAFE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"  # not XML, C0/C1 controls
    "|[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"  # bidirectional controls
)
_SPACE = re.compile(r"\s+")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


@dataclass(frozen=True)
class Chart:
    """One rendered chart: a complete ``<svg>`` element and what it shows."""

    kind: str  # "share" | "heatmap" | "timeline" | "replay"
    svg: str  # one complete, escaped <svg ...>...</svg> element; self-contained
    marks: int  # how many elements with class "mark" the svg holds
    title: str
    caption: str


@dataclass(frozen=True)
class Frame:
    """What :func:`render` draws around a chart's body."""

    kind: str
    prefix: str  # from chart_id
    title: str
    desc: str  # the longer text alternative
    caption: str
    height: int  # the whole svg's, frame included
    width: int = WIDTH


def label(value: object, limit: int = 60) -> str:
    """Hostile text made safe to show: unsafe characters out, spaces folded, cut with an ellipsis."""
    text = _SPACE.sub(" ", _UNSAFE.sub("", "" if value is None else str(value))).strip()
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def escape(text: str) -> str:
    """Text escaped for an XML attribute value or text node."""
    return _UNSAFE.sub("", text).translate(_ESCAPES)


def num(value: float) -> str:
    """A coordinate or figure: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def pct(share: float | None) -> str:
    """A share as a percentage for people: "75 %", "n/a" when there is none."""
    return "n/a" if share is None else f"{share * 100:.0f} %"


def sample(counts: Counts) -> str:
    """A group's sample size for people: "n = 4 measurements · 2 probes" (probes when known)."""
    probes = f" · {counts.probes} probes" if counts.probes else ""
    return f"n = {counts.measurements} measurements{probes}"


def tag(name: str, attrs: Mapping[str, object], *children: str) -> str:
    """An element with escaped attribute values; empty-valued (None) attributes are left out."""
    parts = [name] + [f'{key}="{escape(_value(v))}"' for key, v in attrs.items() if v is not None]
    head = " ".join(parts)
    return f"<{head}>{''.join(children)}</{name}>" if children else f"<{head}/>"


def _value(value: object) -> str:
    if isinstance(value, float):
        return num(value)
    return str(value)


def text(x: float, y: float, content: object, limit: int = 60, **attrs: object) -> str:
    """A ``<text>`` of hostile content, bounded and kept in its own left-to-right run."""
    base: dict[str, object] = {"x": x, "y": y, "direction": "ltr", "unicode-bidi": "embed"}
    base.update({key.rstrip("_").replace("_", "-"): v for key, v in attrs.items()})
    return tag("text", base, escape(label(content, limit)))


def title(content: object, limit: int = 300) -> str:
    """A ``<title>`` child: the tooltip of the element it is in."""
    return f"<title>{escape(label(content, limit))}</title>"


def chart_id(kind: str, *inputs: object) -> str:
    """An id prefix for one chart instance, the same for the same input."""
    digest = hashlib.sha256(repr((kind, *inputs)).encode("utf-8", "replace")).hexdigest()
    return f"mw{kind[:1]}{digest[:10]}"


def caption_lines(caption: str) -> list[str]:
    """The caption in at most two lines, cut at a word where it can be."""
    clean = label(caption, 2 * CAPTION_LINE)
    if len(clean) <= CAPTION_LINE:
        return [clean]
    cut = clean.rfind(" ", 0, CAPTION_LINE)
    cut = cut if cut > CAPTION_LINE // 2 else CAPTION_LINE
    return [clean[:cut].rstrip(), clean[cut:].strip()]


def render(frame: Frame, defs: Sequence[str], body: Sequence[str], marks: int) -> Chart:
    """The whole svg: frame, the chart's pattern definitions and its body."""
    p, w, h = frame.prefix, frame.width, frame.height
    lines = caption_lines(frame.caption)
    foot = [
        text(8, h - FOOT + 16 + 13 * i, line, 2 * CAPTION_LINE, class_="caption", fill="#222")
        for i, line in enumerate(lines)
    ]
    foot.append(
        text(
            w - 8,
            h - 8,
            "msgwatch",
            text_anchor="end",
            class_="origin",
            fill="#555",
            font_weight="bold",
        )
    )
    root = {
        "xmlns": "http://www.w3.org/2000/svg",
        "class": f"msgwatch-chart msgwatch-{frame.kind}",
        "data-chart": frame.kind,
        "role": "img",
        "aria-labelledby": f"{p}-title",
        "aria-describedby": f"{p}-desc",
        "viewBox": f"0 0 {w} {h}",
        "width": w,
        "height": h,
        "font-family": "sans-serif",
        "font-size": 11,
    }
    return Chart(
        kind=frame.kind,
        svg=tag(
            "svg",
            root,
            f'<title id="{p}-title">{escape(label(frame.title, 200))}</title>',
            f'<desc id="{p}-desc">{escape(label(frame.desc, 600))}</desc>',
            tag("defs", {}, *defs) if defs else "",
            tag("rect", {"x": 0, "y": 0, "width": w, "height": h, "fill": "#ffffff"}),
            text(8, 20, frame.title, 110, class_="heading", font_size=14, font_weight="bold"),
            *body,
            *foot,
        ),
        marks=marks,
        title=label(frame.title, 200),
        caption=label(frame.caption, 2 * CAPTION_LINE),
    )


def empty(frame: Frame, message: str = "no measurements") -> Chart:
    """A chart with nothing to draw: the frame and the message, no marks."""
    middle = TOP + (frame.height - TOP - FOOT) / 2
    note = text(
        frame.width / 2,
        middle,
        message,
        text_anchor="middle",
        class_="empty",
        font_size=14,
        fill="#555",
    )
    return render(frame, (), (note,), 0)

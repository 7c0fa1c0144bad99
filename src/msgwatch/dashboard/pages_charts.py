"""The charts of the pages, their SVG export (``/chart/{kind}.svg``) and their embed page
(``/embed/{kind}``).

Rules:

- A page and the chart URL build a chart with the same function here (:func:`heatmap_block` …),
  so the exported SVG is the chart of the page; every chart carries its caption (filters, window,
  sample size) and its :class:`ChartBlock` the URLs of its exports, built with ``urlencode``.
- ``/chart/{kind}.svg`` answers ``image/svg+xml`` (``attachment`` with ``?download=1``); the
  params are the page's (share: filters + ``cc``, ``asn``, ``service``, ``function``; heatmap:
  filters + ``cc``, ``asn``; timeline: filters; replay: ``uid``, ``index``).
- ``/embed/{kind}`` is the chart alone with its caption and a link to its page; it is the one
  response a foreign page may frame (``frame-ancestors *``, set by the app's headers).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from msgwatch.dashboard.charts import (
    Chart,
    heatmap_chart,
    replay_chart,
    share_chart,
    timeline_chart,
)
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import BadQuery, ViewFilters
from msgwatch.dashboard.model import Comparison, EventRow, MeasurementView, NetworkView
from msgwatch.dashboard.pages_base import (
    blocking,
    caption,
    filters_of,
    need,
    observatory,
    render,
    series_scope,
    since_text,
    time_hint,
    time_of,
)

KINDS = ("share", "heatmap", "timeline", "replay")
MAX_TIMELINE_EVENTS = 500


@dataclass(frozen=True)
class ChartBlock:
    """A chart with the URLs of its exports and of its page (paths below the app's root)."""

    chart: Chart
    kind: str
    params: tuple[tuple[str, str], ...]
    page: str  # the page the chart belongs to, with its query

    @property
    def query(self) -> str:
        return "?" + urlencode(self.params) if self.params else ""

    @property
    def svg(self) -> str:
        return f"/chart/{self.kind}.svg{self.query}"

    @property
    def download(self) -> str:
        return f"/chart/{self.kind}.svg?" + urlencode((*self.params, ("download", "1")))

    @property
    def embed(self) -> str:
        return f"/embed/{self.kind}{self.query}"

    @property
    def name(self) -> str:
        """A file name carrying the view: ``msgwatch-share-AZ-AS65001-whatsapp-voice``."""
        values = [v for k, v in self.params if k in ("cc", "asn", "service", "function", "uid")]
        return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(["msgwatch", self.kind, *values]))[:120]


def _block(kind: str, chart: Chart, params: dict[str, str], page: str) -> ChartBlock:
    return ChartBlock(chart, kind, tuple(params.items()), page)


def heatmap_block(f: ViewFilters, view: NetworkView) -> ChartBlock:
    """The network's heatmap of service-function × time."""
    n = sum(c.counts.measurements for row in view.rows for c in row.cells)
    text = caption([view.probe_cc, view.probe_asn], view.since, view.until, n)
    params = f.to_params()
    page = f"/network/{view.probe_cc}/{view.probe_asn}" + f.query_string(cc=None, asn=None)
    return _block("heatmap", heatmap_chart(view, text), params, page)


def timeline_block(
    f: ViewFilters, events: Sequence[EventRow], since: str, until: str
) -> ChartBlock:
    """The events on a timeline over the window."""
    n = sum(e.measurements for e in events)
    where = [f.cc, f.asn, f.service, f.function, f.verdict]
    text = caption([*where, f"{len(events)} events"], since, until, n)
    chart = timeline_chart(events, since, until, text)
    return _block("timeline", chart, f.to_params(), "/events" + f.query_string())


def comparison_block(comparison: Comparison, events: Sequence[EventRow] = ()) -> ChartBlock:
    """The share of failing measurements of a series against its controls."""
    subject = comparison.subject
    points = subject.points
    since = points[0].bucket if points else ""
    until = points[-1].bucket if points else ""
    n = sum(p.counts.measurements for p in points)
    where = [subject.probe_cc, subject.probe_asn or "all networks"]
    text = caption([*where, f"{subject.service} {subject.function}"], since, until, n)
    params = {"cc": subject.probe_cc, "service": subject.service, "function": subject.function}
    if subject.probe_asn:
        params["asn"] = subject.probe_asn
    if points:
        params["since"] = since_text(since)
        params["until"] = since_text(_after(until, subject.grain_seconds))
    page = "/events?" + urlencode(params)
    if subject.probe_asn:
        page = f"/network/{subject.probe_cc}/{subject.probe_asn}"
    return _block("share", share_chart(comparison, events, text), params, page)


def _after(bucket: str, seconds: int) -> str:
    """The time one grain after ``bucket`` (lake text)."""
    when = dt.datetime.strptime(bucket[:19], "%Y-%m-%d %H:%M:%S") + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def replay_block(view: MeasurementView, index: int) -> ChartBlock:
    """One call replay of a measurement: the original against its bit-inverted control."""
    replay = view.replays[index]
    n = len(replay.original) + len(replay.control)
    parts = [view.probe_cc, view.probe_asn, f"{replay.service} {replay.function}", replay.target]
    text = caption([*parts, f"{n} intervals"], view.measurement_start_time, "", 1)
    hint = time_hint(view.measurement_start_time)
    params = {"uid": view.measurement_uid, "index": str(index), **hint}
    page = f"/measurement/{quote(view.measurement_uid)}" + ("?" + urlencode(hint) if hint else "")
    return _block("replay", replay_chart(replay, text), params, page)


def _index(request: Request) -> int:
    text = request.query_params.get("index", "0")
    if not re.fullmatch(r"[0-9]{1,3}", text):
        raise BadQuery("index: expected a number")
    return int(text)


def build(request: Request, kind: str) -> ChartBlock:
    """The chart of ``kind`` for the request's params (blocking: call in a worker thread)."""
    f = filters_of(request)
    obs: Observatory = observatory(request)
    if kind == "share":
        scope = series_scope(request)
        events, _ = obs.events(scope.filters, MAX_TIMELINE_EVENTS)
        return comparison_block(scope.comparison(obs), events)
    if kind == "heatmap":
        cc, asn = need(request, "cc"), need(request, "asn")
        scoped = replace(f, cc=cc, asn=asn)
        return heatmap_block(scoped, obs.network(cc, asn, scoped))
    if kind == "timeline":
        rows, _ = obs.events(f, MAX_TIMELINE_EVENTS)
        return timeline_block(f, rows, *obs.window(f))
    uid = need(request, "uid")
    view = obs.measurement(uid, time_of(request))
    index = _index(request)
    if view is None or index >= len(view.replays):
        raise HTTPException(404, "no such replay")
    return replay_block(view, index)


def _kind(request: Request) -> str:
    kind = str(request.path_params.get("kind", ""))
    if kind not in KINDS:
        raise HTTPException(404, "no such chart")
    return kind


async def chart_svg(request: Request) -> Response:
    kind = _kind(request)
    download = request.query_params.get("download", "") == "1"
    block = await blocking(build, request, kind)
    headers = {}
    if download:
        headers["content-disposition"] = f'attachment; filename="{block.name}.svg"'
    return Response(block.chart.svg, media_type="image/svg+xml", headers=headers)


async def embed_page(request: Request) -> Response:
    kind = _kind(request)
    block = await blocking(build, request, kind)
    return render(request, "embed.html", block=block)

"""The dashboard's HTML pages: overview, network, events, event ("finding") and measurement.

Rules:

- Each handler reads its filters and path parameters first (:mod:`.pages_base`: a malformed one is
  a 400), then loads everything it shows in one worker thread, then renders one template.
- A page's tables hold exactly the rows of its exports (:mod:`.export`): a table's
  ``data-view`` names the export view, and the export links beside it carry the page's params.
- An unknown network shows an empty view; an unknown event or measurement is a 404.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from msgwatch.dashboard import export, report_words
from msgwatch.dashboard.model import Cell, EventView, MeasurementView
from msgwatch.dashboard.pages_base import (
    DEFAULT_LIMIT,
    blocking,
    cursor_of,
    events_of,
    filters_of,
    limit_of,
    need,
    observatory,
    render,
    time_hint,
    time_of,
)
from msgwatch.dashboard.pages_charts import (
    ChartBlock,
    comparison_block,
    heatmap_block,
    replay_block,
    timeline_block,
)
from msgwatch.measurement.vocab import VERDICTS

MAX_RAW_CHARS = 1_000_000


def cell_link(cell: Cell, networks: list[str], query: str) -> str:
    """Where an overview cell leads: its event, else its country's first network, else the
    events of the cell."""
    if cell.events:
        return f"/event/{cell.events[0]}"
    if networks:
        return f"/network/{cell.probe_cc}/{networks[0]}{query}"
    return "/events?" + urlencode(
        {"cc": cell.probe_cc, "service": cell.service, "function": cell.function}
    )


def measurement_query(view: MeasurementView) -> str:
    """The query naming a measurement, with its start time (the day to read: a fast lookup)."""
    return "?" + urlencode({"uid": view.measurement_uid, **time_hint(view.measurement_start_time)})


async def overview_page(request: Request) -> Response:
    f = filters_of(request)

    def load() -> dict[str, Any]:
        obs = observatory(request)
        overview = obs.overview(f)
        networks = {cc: obs.networks(cc) for cc in overview.countries}
        timeline = timeline_block(f, overview.events, *obs.window(f))
        return {"overview": overview, "networks": networks, "timeline": timeline}

    loaded = await blocking(load)
    links = {
        cell: cell_link(
            cell, loaded["networks"].get(cell.probe_cc, []), f.query_string(cc=None, asn=None)
        )
        for cell in loaded["overview"].cells
    }
    return render(request, "overview.html", f=f, verdicts=VERDICTS, links=links, **loaded)


async def network_page(request: Request) -> Response:
    cc, asn = need(request, "cc"), need(request, "asn")
    f = replace(filters_of(request), cc=cc, asn=asn)

    def load() -> tuple[Any, ChartBlock, ChartBlock, list[str]]:
        obs = observatory(request)
        view = obs.network(cc, asn, f)
        return (
            view,
            heatmap_block(f, view),
            timeline_block(f, view.events, view.since, view.until),
            obs.networks(cc),
        )

    view, heatmap, timeline, siblings = await blocking(load)
    return render(
        request,
        "network.html",
        f=f,
        verdicts=VERDICTS,
        view=view,
        heatmap=heatmap,
        timeline=timeline,
        siblings=siblings,
        cells=export.network_rows(view),
    )


async def events_page(request: Request) -> Response:
    f = filters_of(request)
    limit, cursor = limit_of(request), cursor_of(request)

    def load() -> dict[str, Any]:
        obs = observatory(request)
        rows, after = events_of(obs, f, request)
        return {"rows": rows, "after": after, "timeline": timeline_block(f, rows, *obs.window(f))}

    loaded = await blocking(load)
    size = None if limit == DEFAULT_LIMIT else str(limit)
    return render(
        request,
        "events.html",
        f=f,
        verdicts=VERDICTS,
        limit=limit,
        page_query=f.query_string(limit=size, cursor=cursor),
        next_query=f.query_string(limit=size, cursor=loaded["after"]),
        **loaded,
    )


async def event_page(request: Request) -> Response:
    event_id = need(request, "event_id")

    def load() -> tuple[EventView | None, list[ChartBlock]]:
        view = observatory(request).event(event_id)
        if view is None:
            return None, []
        return view, [comparison_block(c, (view.event,)) for c in view.comparisons]

    view, charts = await blocking(load)
    if view is None:
        raise HTTPException(404, "no event has this id")
    event = view.event
    verdict_rows = export.event_rows(view)
    return render(
        request,
        "event.html",
        view=view,
        event=event,
        charts=charts,
        meaning=report_words.mechanism_words(event.mechanism),
        elsewhere=report_words.elsewhere(event.level, event.controls),
        verdict_rows=verdict_rows,
        columns=export.columns_of(verdict_rows),
    )


async def measurement_page(request: Request) -> Response:
    uid, time = need(request, "uid"), time_of(request)

    def load() -> tuple[MeasurementView | None, list[ChartBlock]]:
        view = observatory(request).measurement(uid, time)
        if view is None:
            return None, []
        return view, [replay_block(view, i) for i in range(len(view.replays))]

    view, charts = await blocking(load)
    if view is None:
        raise HTTPException(404, "no measurement has this uid")
    raw = None if view.raw is None else export.shown_json(view.raw)
    if raw is not None and len(raw) > MAX_RAW_CHARS:
        raw = raw[:MAX_RAW_CHARS] + "\n… (cut: the measurement is longer than 1 MB)"
    return render(
        request,
        "measurement.html",
        view=view,
        here=measurement_query(view),
        charts=charts,
        raw=raw,
        steps=export.measurement_rows(view),
    )

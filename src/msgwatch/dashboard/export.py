"""CSV and JSON of every view: ``/export/{view}.{csv,json}`` with the params of the view's page.

Rules:

- The rows of an export are the rows of the page's table (the page renders them from the same
  functions, :func:`network_rows` …): overview — one per cell; network — one per heat cell with
  measurements; events — one per event of the page (same ``limit`` and ``cursor``); event — one per
  verdict row behind it; measurement — one per step of its trace; series — one per bucket of the
  subject series (``cc``, ``asn``, ``service``, ``function``).
- JSON: ``{"view", "filters", "generated", "columns", "rows"}`` plus the view's own object for
  ``event`` and ``measurement``. CSV: a header row, then the rows; a dict or list value is written as
  JSON; a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
  prefixed with ``'`` so that no spreadsheet reads it as a formula (CSV injection).
- A bad parameter answers 400 JSON ``{"error": message}`` (the app's handler).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import (
    Comparison,
    EventRow,
    EventView,
    MeasurementView,
    NetworkView,
    Overview,
)
from msgwatch.dashboard.pages_base import (
    blocking,
    check,
    events_of,
    filters_of,
    need,
    now_text,
    observatory,
    series_scope,
    time_of,
)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
Rows = list[dict[str, Any]]


def json_text(value: Any) -> str:
    """``value`` as compact JSON text (UTF-8)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def shown_json(value: Any) -> str:
    """``value`` as indented JSON for a page: non-ASCII escaped, so that no bidirectional control
    character acts on the page."""
    return json.dumps(value, indent=1, ensure_ascii=True, default=str)


def overview_rows(overview: Overview) -> Rows:
    """One row per cell of the overview."""
    return [
        {
            "probe_cc": c.probe_cc,
            "service": c.service,
            "function": c.function,
            "state": c.state,
            "mechanism": c.mechanism,
            "pattern": c.pattern,
            "networks": c.networks,
            "networks_failing": c.networks_failing,
            "probes": c.counts.probes,
            "measurements": c.counts.measurements,
            "failing": c.counts.failing,
            "ok": c.counts.ok,
            "share": c.counts.share,
            "last_measured": c.last_measured,
            "events": " ".join(c.events),
        }
        for c in overview.cells
    ]


def network_rows(view: NetworkView) -> Rows:
    """One row per heat cell of the network that has measurements."""
    return [
        {
            "service": row.service,
            "function": row.function,
            "bucket": cell.bucket,
            "state": cell.state,
            "measurements": cell.counts.measurements,
            "failing": cell.counts.failing,
            "ok": cell.counts.ok,
            "probes": cell.counts.probes,
            "share": cell.counts.share,
        }
        for row in view.rows
        for cell in row.cells
        if cell.state != "no_data"
    ]


def event_dict(event: EventRow) -> dict[str, Any]:
    return asdict(event)


def events_rows(events: list[EventRow]) -> Rows:
    """One row per event."""
    return [event_dict(e) for e in events]


def event_rows(view: EventView) -> Rows:
    """The verdict rows behind an event."""
    return [dict(row) for row in view.verdicts]


def measurement_rows(view: MeasurementView) -> Rows:
    """One row per step of the measurement's trace."""
    return [
        {
            "kind": s.kind,
            "what": s.what,
            "target": s.target,
            "role": s.role,
            "failure": s.failure,
            "t": s.t,
            "figures": s.figures,
        }
        for s in view.steps
    ]


def columns_of(rows: Rows) -> list[str]:
    """The columns of ``rows`` in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def safe_cell(value: Any) -> Any:
    """A CSV cell: JSON for a dict or list, ``'``-prefixed text when it could be a formula."""
    if isinstance(value, dict | list | tuple):
        value = json_text(value)
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(rows: Rows) -> str:
    """The rows as CSV with a header row."""
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(c) for c in columns])
    for row in rows:
        writer.writerow(["" if row.get(c) is None else safe_cell(row.get(c)) for c in columns])
    return out.getvalue()


Loaded = tuple[Rows, dict[str, Any], ViewFilters]


def _overview(request: Request, obs: Observatory) -> Loaded:
    f = filters_of(request)
    return overview_rows(obs.overview(f)), {}, f


def _network(request: Request, obs: Observatory) -> Loaded:
    cc, asn = need(request, "cc"), need(request, "asn")
    f = replace(filters_of(request), cc=cc, asn=asn)
    return network_rows(obs.network(cc, asn, f)), {}, f


def _events(request: Request, obs: Observatory) -> Loaded:
    f = filters_of(request)
    events, after = events_of(obs, f, request)
    return events_rows(events), {"next_cursor": after}, f


def _series(request: Request, obs: Observatory) -> Loaded:
    scope = series_scope(request)
    return series_rows(scope.comparison(obs)), {}, scope.filters


def _event(request: Request, obs: Observatory) -> Loaded:
    event_id = check("event_id", request.query_params.get("id"))
    found = None if event_id is None else obs.event(event_id)
    if found is None:
        raise HTTPException(404, "no event has this id")
    return event_rows(found), {"event": event_dict(found.event)}, filters_of(request)


def _measurement(request: Request, obs: Observatory) -> Loaded:
    measurement = obs.measurement(need(request, "uid"), time_of(request))
    if measurement is None:
        raise HTTPException(404, "no measurement has this uid")
    own = asdict(measurement)
    own.pop("steps")
    return measurement_rows(measurement), {"measurement": own}, filters_of(request)


LOADERS: dict[str, Callable[[Request, Observatory], Loaded]] = {
    "overview": _overview,
    "network": _network,
    "events": _events,
    "event": _event,
    "measurement": _measurement,
    "series": _series,
}


def series_rows(comparison: Comparison) -> Rows:
    """One row per bucket of the subject series, with its control's share."""
    control = dict(comparison.control_ok)
    return [
        {
            "bucket": p.bucket,
            "measurements": p.counts.measurements,
            "failing": p.counts.failing,
            "ok": p.counts.ok,
            "probes": p.counts.probes,
            "share": p.counts.share,
            "control_ok": control.get(p.bucket),
            "mechanism": p.mechanism,
        }
        for p in comparison.subject.points
    ]


async def export_view(request: Request) -> Response:
    view, fmt = str(request.path_params["view"]), str(request.path_params["fmt"])
    if view not in LOADERS or fmt not in ("csv", "json"):
        raise HTTPException(404, "no such export")
    rows, own, f = await blocking(lambda: LOADERS[view](request, observatory(request)))
    name = f"msgwatch-{view}"
    headers = {"content-disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "csv":
        return Response(csv_text(rows), media_type="text/csv; charset=utf-8", headers=headers)
    document = {
        "view": view,
        "filters": f.to_params(),
        "generated": now_text(),
        **own,
        "columns": columns_of(rows),
        "rows": rows,
    }
    body = json_text(document)
    return Response(body, media_type="application/json", headers=headers)

"""For the operator: ``/health`` (is the store writable?) and ``/metrics`` (Prometheus).

``/health`` tells the public only ``ok`` or ``unavailable`` (503, with a fixed reason); with the
admin token, when one is configured, it adds free space, counters and the last storage error.
``/metrics`` needs the admin token when one is configured; it renders the collector's counters,
the store's (its health report) and, when ``server.py`` serves the app, the transport's
(``app.state.transport``: connections, heads).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from msgwatch.collector import models
from msgwatch.collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from msgwatch.collector.models import Rejection
from msgwatch.collector.routes.common import collector_of, errors, json_response

logger = logging.getLogger("msgwatch.collector")

router = APIRouter()


@router.get(
    "/health",
    summary="200 when the archive and the index can be written, else 503",
    description="To the public only the status (and on 503 a fixed reason): free space, "
    "counters and the last storage error are for the operator, with "
    "`Authorization: Bearer <admin token>` when one is configured (also in /metrics "
    "and in the log).",
    response_model=None,
    responses={200: {"model": models.Health}, 503: {"model": models.Health}},
)
async def health(request: Request) -> Response:
    collector = collector_of(request)
    try:
        report = dict(await collector.store.health())
    except Rejection:
        report = {"status": "unavailable", "detail": "the store is not open"}
    except Exception as exc:
        logger.warning("health check failed: %s", exc)
        report = {"status": "unavailable", "detail": "the store cannot report its health"}
    ok = report.get("status") == "ok"
    if not collector.guard.is_admin(request.headers.get("authorization")):
        report = {"status": "ok"} if ok else {"status": "unavailable"}
    if ok:
        return json_response(report)
    report["status"] = "unavailable"
    report.setdefault("detail", "the archive or the index cannot be written")
    report["error"] = "storage_unavailable"
    return json_response(report, 503)


@router.get(
    "/metrics",
    summary="Prometheus text format (the admin token when one is configured)",
    response_model=None,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}, **errors(401, 403)},
)
async def get_metrics(request: Request) -> Response:
    collector = collector_of(request)
    collector.guard.check_admin(request.headers.get("authorization"))
    store_numbers: dict[str, Any] = {}
    if collector.opened is not None:
        try:
            store_numbers = dict(await collector.opened.health())
        except Exception:
            store_numbers = {}
    text = collector.metrics.render(store_numbers)
    transport = getattr(request.app.state, "transport", None)  # server.py: connections, heads
    if transport is not None:
        text += transport.render()
    return Response(text, media_type=METRICS_CONTENT_TYPE)

"""The collector's HTTP routes, one FastAPI router per concern; ``collector/app.py`` assembles them.

Routes are thin: read the raw body (bounded), validate with ``collector.models``, call the store
through the :class:`~msgwatch.collector.handlers.Collector` on ``app.state.collector``, answer
JSON (:func:`.common.json_response`).

- :mod:`.ooni`: OONI's collector protocol (open a report, add a measurement, close a report);
- :mod:`.submit`: the batch submission of msgwatch's spool;
- :mod:`.read`: the read API (summaries, one measurement);
- :mod:`.analysis`: the analysis's events, aggregates, observations and verdicts;
- :mod:`.health`: ``/health`` and ``/metrics``, for the operator;
- :mod:`.errors`: the error shape, ``{"error", "detail"}``, of every refusal FastAPI makes;
- :mod:`.openapi`: ``/openapi.json``, FastAPI's document plus the bodies the routes read as bytes.

:data:`ROUTERS` is their order in the application and in the document.
"""

from __future__ import annotations

from fastapi import APIRouter

from msgwatch.collector.routes import analysis, health, ooni, read, submit

ROUTERS: tuple[APIRouter, ...] = (
    ooni.router,
    submit.router,
    read.router,
    analysis.router,
    health.router,
)

__all__ = ["ROUTERS"]

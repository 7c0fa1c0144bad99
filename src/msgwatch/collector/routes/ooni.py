"""OONI's collector protocol: open a report, add measurements to it, close it.

Reports are stateless: ``POST /report`` makes an id from the report's header (no state is kept),
``POST /report/{report_id}`` checks the id's form and stores the measurement, ``.../close``
answers ``{}``. Adding a measurement is one of the two hot routes: the fast path
(:class:`~msgwatch.collector.handlers.FastSubmissions`) usually serves it before FastAPI, with
the same handler (:func:`~msgwatch.collector.handlers.add_measurement`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from msgwatch.collector import models
from msgwatch.collector.handlers import ADD_ROUTE, JSON, add_measurement, check_body_headers
from msgwatch.collector.routes.common import (
    body_schema,
    client_of,
    collector_of,
    errors,
    json_response,
    reader,
)

router = APIRouter()

ReportId = Annotated[
    str,
    PathParam(
        description="OONI's form; checked by the route (400 bad_report_id), not by FastAPI",
        json_schema_extra={"pattern": models.REPORT_ID_SCHEMA},
    ),
]


@router.post(
    "/report",
    summary="Open a report (OONI collector protocol)",
    response_model=None,
    responses={200: {"model": models.OpenReportResponse}, **errors(400, 401, 413)},
    openapi_extra=body_schema(models.OpenReportRequest),
)
async def open_report(request: Request) -> Response:
    collector = collector_of(request)
    collector.admit(request.headers.get("authorization"), client_of(request), counts=False)
    check_body_headers(request.headers, models.MAX_MEASUREMENT_BYTES)
    raw = await reader(request)(models.MAX_MEASUREMENT_BYTES)
    report = models.parse_open_report(raw)
    return json_response(
        {
            "report_id": models.new_report_id(report, collector.wall()),
            "backend_version": collector.backend_version,
            "supported_formats": ["json"],
        }
    )


@router.post(
    ADD_ROUTE,
    summary="Add a measurement to a report (OONI collector protocol)",
    description="Acknowledged only once durable. An `Idempotency-Key` header makes retries "
    "harmless; without one the key is sha256 of the measurement's canonical JSON.",
    response_model=None,
    responses={
        200: {"model": models.AddMeasurementResponse},
        **errors(400, 401, 413, 429, 503),
    },
    openapi_extra={
        **body_schema(models.AddMeasurementRequest),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": models.KEY_SCHEMA,
            }
        ],
    },
)
async def add_route(request: Request, report_id: ReportId) -> Response:
    answer = await add_measurement(
        collector_of(request), report_id, request.headers, reader(request), client_of(request)
    )
    return json_response(answer)


@router.post(
    "/report/{report_id}/close",
    summary="Close a report (OONI collector protocol; reports are stateless)",
    response_model=None,
    responses={200: {"content": {JSON: {"example": {}}}}, **errors(400, 401)},
)
async def close_report(request: Request, report_id: ReportId) -> Response:
    collector = collector_of(request)
    collector.admit(request.headers.get("authorization"), client_of(request), counts=False)
    models.check_report_id(report_id)
    return json_response({})

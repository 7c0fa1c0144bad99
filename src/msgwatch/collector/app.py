"""The collector's HTTP service (docs/design/002-collector.md, "Wire protocol").

``create_app(settings)`` builds a FastAPI application whose lifespan opens the store and closes it.
Routes are thin: read the raw body (bounded), validate with ``models``, call the store, answer JSON.

- **Submissions read bytes**, not a pydantic body: orjson plus top-level checks cost a fraction of
  a model's validation of a 30 KB measurement. The shapes are declared in ``/openapi.json`` all the
  same (``openapi_extra``). The handlers, and the fast path that serves the two hot routes in front
  of FastAPI, are in ``handlers.py``.
- **Errors** are JSON ``{"error", "detail"}`` with a reason code of the doc: :class:`Rejection` from
  the validators, FastAPI's own 404/405 (``not_found``) and 422 (``bad_query``), a 503
  ``storage_unavailable`` when the store cannot write (nothing is acknowledged). Anything else that
  escapes is a bug: logged, answered 500 ``internal_error`` as JSON.
- **Layers**, outermost first: the access log (``accesslog.py``: log line, latency, security
  headers), :class:`CutShort` (a request cancelled by the end of a graceful stop answers 503),
  the fast path (``fast_path=False`` leaves it out: the tests run both ways), then FastAPI with
  its middleware, router and exception handlers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from msgwatch import __version__
from msgwatch.collector import models
from msgwatch.collector.accesslog import AccessLog, Message, Receive, Scope, Send
from msgwatch.collector.handlers import (
    ADD_ROUTE,
    BATCH_ROUTE,
    JSON,
    ASGICallable,
    BodyReader,
    Collector,
    FastSubmissions,
    add_measurement,
    check_body_headers,
    read_limited,
    rejection_headers,
    submit_batch,
)
from msgwatch.collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from msgwatch.collector.metrics import Metrics
from msgwatch.collector.models import Rejection
from msgwatch.collector.settings import Settings
from msgwatch.collector.startup import describe
from msgwatch.collector.store.base import BadCursor, Query, Store, StoreUnavailable
from msgwatch.collector.summary import FunctionName, VerdictName

logger = logging.getLogger("msgwatch.collector")

StoreOpener = Callable[[Path, str | None], Awaitable[Store]]

_STATUS_REASON = {
    400: "bad_query",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "not_found",
    413: "body_too_large",
    415: "bad_encoding",
    429: "rate_limited",
    503: "storage_unavailable",
}


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(value), status_code=status, headers=dict(headers or {}), media_type=JSON
    )


# --- OpenAPI -------------------------------------------------------------------------------------


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref}}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": models.ErrorBody} for s in statuses}


ReportId = Annotated[
    str,
    PathParam(
        description="OONI's form; checked by the route (400 bad_report_id), not by FastAPI",
        json_schema_extra={"pattern": models.REPORT_ID_SCHEMA},
    ),
]


_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.OpenReportRequest,
    models.AddMeasurementRequest,
    models.BatchRequest,
)


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request bodies the routes read as bytes."""
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in _REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    # FastAPI documents 422 for its parameter validation; the collector answers it 400 bad_query
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Bad Request",
                    "content": {JSON: {"schema": error}},
                }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


# --- the application -----------------------------------------------------------------------------


class CollectorApp(FastAPI):
    """FastAPI with the access log and the fast path in front of its whole middleware stack."""

    entry: ASGICallable | None = None
    startup_failure: str | None = None
    """Set by the lifespan when the store cannot be opened (one line, already logged)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            send = self._quiet_startup_failure(send)
        if self.entry is None:
            await super().__call__(scope, receive, send)
        else:
            await self.entry(scope, receive, send)

    def _quiet_startup_failure(self, send: Send) -> Send:
        """A start-up failure whose cause the lifespan logged in one line reaches uvicorn without
        Starlette's traceback (which uvicorn would log: 30 lines for "another collector is
        using DATA")."""

        async def quiet(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.startup_failure is not None:
                message = {**message, "message": ""}
            await send(message)

        return quiet

    async def behind(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself (its middleware, router, exception handlers)."""
        await super().__call__(scope, receive, send)


class CutShort:
    """A request cancelled before its answer began gets 503 ``storage_unavailable`` in JSON.

    uvicorn cancels the requests still running when a graceful stop reaches its bound (server.py:
    a body still trickling in, a group commit not yet done). Nothing of such a request was
    acknowledged, and a retry under the same key stores it once: what a 503 says. Left to uvicorn,
    the answer would be a plain-text 500 and a traceback in the log, for a stop that went as
    designed. The cancellation is absorbed here: it was aimed at this request's task, which is
    uvicorn's and has nothing left to do after it. Once the answer has begun it cannot be changed:
    the cancellation goes on, and uvicorn closes the connection.
    """

    def __init__(self, app: ASGICallable, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if started or task is None:
                raise
            task.uncancel()
            logger.warning("a request was still running at the end of the stop: answered 503")
            self.metrics.reject("storage_unavailable")
            answer = json_response(
                {
                    "error": "storage_unavailable",
                    "detail": "the collector stopped before this request was done: nothing was "
                    "acknowledged, retry later",
                },
                503,
                {"Retry-After": "5", "Connection": "close"},
            )
            await answer(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    store_opener: StoreOpener | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    fast_path: bool = True,
) -> FastAPI:
    """The collector; ``store_opener`` defaults to ``msgwatch.collector.store.open_store``."""
    collector = Collector(settings, monotonic, wall)
    metrics = collector.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opener = store_opener
        if opener is None:
            from msgwatch.collector.store import open_store

            opener = open_store
        # uvicorn's access log prints client addresses: off, whatever handlers are attached to it
        # (server.py configures uvicorn without it; this also holds when embedded elsewhere)
        logging.getLogger("uvicorn.access").disabled = True
        try:
            collector.opened = await opener(settings.data_dir, settings.database)
        except StoreUnavailable as exc:
            assert isinstance(app, CollectorApp)
            app.startup_failure = describe(exc)
            logger.error("the collector cannot start: %s", app.startup_failure)
            raise
        try:
            yield
        finally:
            store, collector.opened = collector.opened, None
            await store.close()

    app: CollectorApp = CollectorApp(
        title="msgwatch collector",
        version=__version__,
        description="Accepts measurements in OONI's format, stores them durably, serves them. "
        "Contract: docs/design/002-collector.md.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.collector = collector

    def client_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    def reader(request: Request) -> BodyReader:
        async def read(limit: int) -> bytes:
            return await read_limited(request.stream(), limit)

        return read

    # --- errors ----------------------------------------------------------------------------------

    @app.exception_handler(Rejection)
    async def on_rejection(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Rejection)
        metrics.reject(exc.reason)
        return json_response(exc.body(), exc.status, rejection_headers(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code if 400 <= exc.status_code < 600 else 400
        reason = _STATUS_REASON.get(status, "bad_query")
        if status == 405:
            detail = f"{request.method} is not allowed here"
        elif status == 404:
            detail = "no such resource"
        else:
            detail = str(exc.detail)[:200]
        metrics.reject(reason)
        return json_response({"error": reason, "detail": detail}, status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors()[:5]:  # never the input itself: it may be anything
            where = ".".join(str(part) for part in error.get("loc", ()))
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        metrics.reject("bad_query")
        return json_response({"error": "bad_query", "detail": "; ".join(problems)[:500]}, 400)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": "internal_error", "detail": "an internal error"}, 500)

    # --- OONI collector protocol -----------------------------------------------------------------

    @app.post(
        "/report",
        summary="Open a report (OONI collector protocol)",
        response_model=None,
        responses={200: {"model": models.OpenReportResponse}, **_errors(400, 401, 413)},
        openapi_extra=_body_schema(models.OpenReportRequest),
    )
    async def open_report(request: Request) -> Response:
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

    @app.post(
        ADD_ROUTE,
        summary="Add a measurement to a report (OONI collector protocol)",
        description="Acknowledged only once durable. An `Idempotency-Key` header makes retries "
        "harmless; without one the key is sha256 of the measurement's canonical JSON.",
        response_model=None,
        responses={
            200: {"model": models.AddMeasurementResponse},
            **_errors(400, 401, 413, 429, 503),
        },
        openapi_extra={
            **_body_schema(models.AddMeasurementRequest),
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
            collector, report_id, request.headers, reader(request), client_of(request)
        )
        return json_response(answer)

    @app.post(
        "/report/{report_id}/close",
        summary="Close a report (OONI collector protocol; reports are stateless)",
        response_model=None,
        responses={200: {"content": {JSON: {"example": {}}}}, **_errors(400, 401)},
    )
    async def close_report(request: Request, report_id: ReportId) -> Response:
        collector.admit(request.headers.get("authorization"), client_of(request), counts=False)
        models.check_report_id(report_id)
        return json_response({})

    @app.post(
        BATCH_ROUTE,
        summary="Submit up to 500 measurements, accepted or refused item by item",
        response_model=None,
        responses={200: {"model": models.BatchResponse}, **_errors(400, 401, 413, 429, 503)},
        openapi_extra=_body_schema(models.BatchRequest),
    )
    async def batch_route(request: Request) -> Response:
        answer = await submit_batch(collector, request.headers, reader(request), client_of(request))
        return json_response(answer)

    # --- read API --------------------------------------------------------------------------------

    @app.get(
        "/api/v1/measurements",
        summary="Summaries of stored measurements, newest first",
        description="Every parameter is checked: an unknown or repeated parameter, or a value "
        "not of its documented form, is 400 `bad_query` (a typo never widens the answer). A "
        "page holds at most `limit` summaries and at most 1 MiB of JSON; when more follow, "
        "`next_cursor` is set.",
        response_model=None,
        responses={200: {"model": models.MeasurementsPage}, **_errors(400, 503)},
    )
    async def list_measurements(
        request: Request,
        service: Annotated[
            str | None, QueryParam(pattern=models.SERVICE_QUERY, description="a catalogue id")
        ] = None,
        function: FunctionName | None = None,
        verdict: VerdictName | None = None,
        probe_asn: Annotated[
            str | None, QueryParam(pattern=models.ASN_QUERY, description="AS<n> or <n>")
        ] = None,
        probe_cc: Annotated[
            str | None, QueryParam(pattern=models.CC_QUERY, description="two letters, any case")
        ] = None,
        test_name: Annotated[
            str | None, QueryParam(min_length=1, max_length=models.QUERY_TEXT_LIMIT)
        ] = None,
        since: Annotated[
            str | None,
            QueryParam(
                pattern=models.TIME_QUERY,
                description="on measurement_start_time, inclusive: YYYY-MM-DD or "
                "YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|±hh:mm] (UTC without an offset)",
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParam(pattern=models.TIME_QUERY, description="exclusive; as since"),
        ] = None,
        limit: Annotated[int, QueryParam(ge=1, le=1000)] = 100,
        cursor: Annotated[
            str | None,
            QueryParam(
                pattern=models.CURSOR_QUERY,
                description="next_cursor of a page: <YYYYMMDDhhmmss>~<measurement_uid>, the "
                "position after which the page starts",
            ),
        ] = None,
    ) -> Response:
        models.check_query_parameters([name for name, _ in request.query_params.multi_items()])
        query = Query(
            service=models.query_text(service, "service"),
            function=function,
            verdict=verdict,
            probe_asn=models.query_asn(probe_asn),
            probe_cc=models.query_cc(probe_cc),
            test_name=models.query_text(test_name, "test_name"),
            since=models.query_time(since, "since"),
            until=models.query_time(until, "until"),
            limit=limit,
            cursor=cursor,
        )
        try:
            page = await collector.store.query(query)
        except BadCursor:
            raise Rejection("bad_query", "the cursor is not one this collector issued") from None
        except StoreUnavailable as exc:
            logger.warning("storage unavailable on query: %s", exc)
            raise Rejection("storage_unavailable", "the index cannot be read") from None
        return json_response({"results": page.results, "next_cursor": page.next_cursor})

    @app.get(
        "/api/v1/measurements/{measurement_uid}",
        summary="One stored measurement, as stored, with the collector's measurement_uid",
        response_model=None,
        responses={200: {"model": models.Measurement}, **_errors(404, 503)},
    )
    async def get_measurement(
        measurement_uid: Annotated[str, PathParam(max_length=256)],
    ) -> Response:
        try:
            measurement = await collector.store.get(measurement_uid)
        except StoreUnavailable as exc:
            logger.warning("storage unavailable on get: %s", exc)
            raise Rejection("storage_unavailable", "the archive cannot be read") from None
        if measurement is None:
            raise Rejection("not_found", "no measurement has this uid")
        # the collector's uid, as OONI's collector adds it (one sent by the probe is replaced,
        # as in the export)
        measurement["measurement_uid"] = measurement_uid
        return json_response(measurement)

    # --- operations ------------------------------------------------------------------------------

    @app.get(
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

    @app.get(
        "/metrics",
        summary="Prometheus text format (the admin token when one is configured)",
        response_model=None,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}, **_errors(401, 403)},
    )
    async def get_metrics(request: Request) -> Response:
        collector.guard.check_admin(request.headers.get("authorization"))
        store_numbers: dict[str, Any] = {}
        if collector.opened is not None:
            try:
                store_numbers = dict(await collector.opened.health())
            except Exception:
                store_numbers = {}
        text = metrics.render(store_numbers)
        transport = getattr(app.state, "transport", None)  # server.py: connections, heads
        if transport is not None:
            text += transport.render()
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    inner: ASGICallable = (
        FastSubmissions(app.behind, collector, app.routes) if fast_path else app.behind
    )
    app.entry = AccessLog(CutShort(inner, metrics), metrics)
    return app

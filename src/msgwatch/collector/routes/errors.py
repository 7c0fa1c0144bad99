"""Every refusal FastAPI makes, in the collector's error shape: JSON ``{"error", "detail"}``.

- :class:`~msgwatch.collector.models.Rejection` (raised by the validators and the routes): its
  status, reason code and headers (``WWW-Authenticate`` on 401, ``Retry-After`` on 429 and 503);
- FastAPI's own HTTP errors: 404 and 405 are ``not_found``, and every other status its reason
  code of the design (:data:`STATUS_REASON`), else ``bad_query``;
- a query parameter FastAPI refuses (its 422) is 400 ``bad_query``, naming at most five problems
  and never the input itself;
- anything else that escapes is a bug: logged with its traceback, answered 500 ``internal_error``.

Every refusal but the last is counted in ``/metrics`` under its reason.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from msgwatch.collector.handlers import rejection_headers
from msgwatch.collector.models import Rejection
from msgwatch.collector.routes.common import collector_of, json_response

logger = logging.getLogger("msgwatch.collector")

STATUS_REASON = {
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


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(Rejection, on_rejection)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_bug)


async def on_rejection(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejection)
    collector_of(request).metrics.reject(exc.reason)
    return json_response(exc.body(), exc.status, rejection_headers(exc))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code if 400 <= exc.status_code < 600 else 400
    reason = STATUS_REASON.get(status, "bad_query")
    if status == 405:
        detail = f"{request.method} is not allowed here"
    elif status == 404:
        detail = "no such resource"
    else:
        detail = str(exc.detail)[:200]
    collector_of(request).metrics.reject(reason)
    return json_response({"error": reason, "detail": detail}, status, exc.headers)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors()[:5]:  # never the input itself: it may be anything
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    collector_of(request).metrics.reject("bad_query")
    return json_response({"error": "bad_query", "detail": "; ".join(problems)[:500]}, 400)


async def on_bug(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"error": "internal_error", "detail": "an internal error"}, 500)

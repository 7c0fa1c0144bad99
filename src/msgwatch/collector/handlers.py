"""The submissions: what the routes share, the two submission handlers, and the fast path.

Both ways into a submission — FastAPI's routes (``routes/``) and :class:`FastSubmissions` — call
:func:`add_measurement` and :func:`submit_batch` with the request's headers, a body reader and the
client's address, so they cannot answer differently.

Order of refusals: authorisation (401), rate limit (429), path and headers, declared size (413),
content type (415), and only then the body, read with its limit — the cheap refusals come before
any byte of the body is read.

**The fast path.** ``POST /report/{report_id}`` and ``POST /api/v1/submit`` — a thousand a second —
are served by :class:`FastSubmissions`, in front of FastAPI's whole middleware stack and router,
straight from the ASGI messages. Routing, dependency solving and the exception middleware cost
about as much as validating a measurement; measured in-process on the demo measurements,
160 µs a request against 236 µs through FastAPI. Everything else passes through to FastAPI.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute

from msgwatch import __version__
from msgwatch.collector import models
from msgwatch.collector.accesslog import Message, Receive, Scope, Send
from msgwatch.collector.auth import Guard, read_tokens
from msgwatch.collector.metrics import Metrics
from msgwatch.collector.models import Rejection
from msgwatch.collector.ratelimit import RateLimiter, retry_after
from msgwatch.collector.settings import Settings
from msgwatch.collector.store.base import Receipt, Store, StoreUnavailable, Submission

logger = logging.getLogger("msgwatch.collector")

ASGICallable = Callable[[Scope, Receive, Send], Awaitable[None]]
BodyReader = Callable[[int], Awaitable[bytes]]

JSON = "application/json"
ADD_ROUTE, BATCH_ROUTE = "/report/{report_id}", "/api/v1/submit"


# --- what the routes share -----------------------------------------------------------------------


class Collector:
    """Settings, store, guard, limiter, metrics and the clocks (passed in: tests move them)."""

    def __init__(
        self,
        settings: Settings,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        tokens = read_tokens(settings.probe_tokens_file) if settings.probe_tokens_file else None
        self.guard = Guard(tokens, settings.admin_token)
        self.limiter = (
            RateLimiter(settings.rate_limit, settings.rate_limit_clients)
            if settings.rate_limit > 0
            else None
        )
        self.monotonic = monotonic
        self.wall = wall
        self.backend_version = settings.backend_version or f"msgwatch-collector {__version__}"
        self.opened: Store | None = None
        self._failure_logged_at = -1e9
        self._failures_unlogged = 0

    @property
    def store(self) -> Store:
        if self.opened is None:
            raise Rejection("storage_unavailable", "the store is not open")
        return self.opened

    def admit(self, authorization: str | None, client: str | None, counts: bool) -> None:
        """Authorisation, then (for requests that carry measurements) the client's rate limit."""
        identity = self.guard.submitter(authorization)
        if counts and self.limiter is not None:
            wait = self.limiter.take(identity or client or "-", self.monotonic())
            if wait > 0:
                raise Rejection(
                    "rate_limited",
                    f"at most {self.settings.rate_limit:g} submissions per second",
                    headers={"Retry-After": retry_after(wait)},
                )

    async def put(self, items: Sequence[Submission]) -> list[Receipt]:
        """The store's ``put_many``; any failure is a 503 with nothing acknowledged."""
        metrics = self.metrics
        metrics.group_size.observe(len(items))
        try:
            receipts = await self.store.put_many(items)
        except StoreUnavailable as exc:
            metrics.storage_failures += len(items)
            self._log_failure(exc)
            raise _unavailable() from None
        except Exception:
            metrics.storage_failures += len(items)
            logger.exception("the store failed on put_many")
            raise _unavailable() from None
        if len(receipts) != len(items):  # a broken store: acknowledge nothing
            metrics.storage_failures += len(items)
            logger.error("the store answered %d receipts for %d items", len(receipts), len(items))
            raise _unavailable()
        for receipt in receipts:
            if receipt.duplicate:
                metrics.duplicates += 1
            else:
                metrics.accepted += 1
        return receipts

    def _log_failure(self, exc: StoreUnavailable) -> None:
        """At most one line a second: a full disk under load would otherwise log every request."""
        now = self.monotonic()
        if now - self._failure_logged_at < 1.0:
            self._failures_unlogged += 1
            return
        more = f" (and {self._failures_unlogged} more since)" if self._failures_unlogged else ""
        logger.warning("storage unavailable: %s%s", exc, more)
        self._failure_logged_at, self._failures_unlogged = now, 0


def _unavailable() -> Rejection:
    return Rejection(
        "storage_unavailable",
        "the archive or the index cannot be written: nothing was stored, retry later",
        headers={"Retry-After": "5"},
    )


def check_body_headers(headers: Mapping[str, str], limit: int) -> None:
    """Before reading: a declared size over ``limit`` is 413. Bodies are UTF-8 JSON; a missing or
    unusual ``Content-Type`` is tolerated (OONI's collector ignores it; ``curl -d`` sends a form
    type), but a multipart body or a declared charset other than UTF-8 is refused (415)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejection("body_too_large", f"the body is {declared} bytes, at most {limit} allowed")
    value = headers.get("content-type")
    if not value:
        return
    media, _, params = value.partition(";")
    if media.strip().lower().startswith("multipart/"):
        raise Rejection("bad_encoding", "the body must be JSON, not multipart", status=415)
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        declared_charset = charset.strip().strip('"').lower()
        if name.strip().lower() == "charset" and declared_charset not in ("utf-8", "utf8"):
            raise Rejection("bad_encoding", "the body must be UTF-8", status=415)


BODY_TIMEOUT = 30.0
"""Seconds a client has to send a whole body (uvicorn bounds the headers, not the body): a client
that trickles its body cannot hold a connection and its buffers for ever."""


async def read_limited(
    chunks: AsyncIterator[bytes], limit: int, timeout: float | None = None
) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` and with 408 when it has
    not all arrived within ``timeout`` seconds (default :data:`BODY_TIMEOUT`)."""
    timeout = BODY_TIMEOUT if timeout is None else timeout
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise Rejection("body_too_large", f"the body exceeds {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise Rejection(
            "body_timeout", f"the body did not arrive within {timeout:g} seconds"
        ) from None
    except ClientDisconnect:
        raise Rejection(
            "malformed_json", "the client went away before the end of the body"
        ) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


# --- the submission handlers (FastAPI routes and the fast path) ----------------------------------


async def add_measurement(
    collector: Collector,
    report_id: str,
    headers: Mapping[str, str],
    read: BodyReader,
    client: str | None,
) -> dict[str, Any]:
    """``POST /report/{report_id}``: ``{"measurement_uid", "status"}``."""
    collector.admit(headers.get("authorization"), client, counts=True)
    models.check_report_id(report_id)
    key = headers.get("idempotency-key")
    if key is not None:
        models.check_idempotency_key(key)
    check_body_headers(headers, models.MAX_MEASUREMENT_BYTES)
    measurement = models.parse_report_content(await read(models.MAX_MEASUREMENT_BYTES), client)
    if key is None:
        key = models.content_key(measurement)
    (receipt,) = await collector.put([Submission(key, measurement, report_id)])
    return {
        "measurement_uid": receipt.measurement_uid,
        "status": "duplicate" if receipt.duplicate else "stored",
    }


async def submit_batch(
    collector: Collector, headers: Mapping[str, str], read: BodyReader, client: str | None
) -> dict[str, Any]:
    """``POST /api/v1/submit``: ``{"results": [...]}``, item by item, in order."""
    collector.admit(headers.get("authorization"), client, counts=True)
    check_body_headers(headers, models.MAX_BATCH_BYTES)
    items = models.parse_batch(await read(models.MAX_BATCH_BYTES), client)
    accepted = [item for item in items if isinstance(item, models.BatchItem)]
    submissions = [
        Submission(item.idempotency_key, item.measurement, _report_id(item.measurement))
        for item in accepted
    ]
    receipts = iter(await collector.put(submissions) if submissions else ())
    results: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, models.BatchItem):
            receipt = next(receipts)
            results.append(
                {
                    "idempotency_key": item.idempotency_key,
                    "status": "duplicate" if receipt.duplicate else "stored",
                    "measurement_uid": receipt.measurement_uid,
                }
            )
        else:
            collector.metrics.reject(item.rejection.reason)
            results.append(
                {
                    "idempotency_key": item.idempotency_key,
                    "status": "rejected",
                    "error": item.rejection.reason,
                    "detail": item.rejection.detail,
                }
            )
    return {"results": results}


def _report_id(measurement: dict[str, Any]) -> str | None:
    value = measurement.get("report_id")
    return value if isinstance(value, str) and value else None


# --- the fast path -------------------------------------------------------------------------------


class _Headers(dict[str, str]):
    """Request headers from the ASGI scope: lower-case names (as ASGI gives them), latin-1."""

    @classmethod
    def of(cls, scope: Scope) -> _Headers:
        return cls((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])


class FastSubmissions:
    """``POST /report/{id}`` and ``POST /api/v1/submit`` straight from the ASGI messages.

    Sits inside the access log (which adds the security headers, logs and times the request) and
    in front of FastAPI and all its middleware; everything else passes through. Answers exactly
    what the FastAPI routes answer: the same handlers, the same error bodies.
    """

    def __init__(
        self, app: ASGICallable, collector: Collector, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.collector = collector
        self.all_routes = routes  # the routers' (complete once the application serves)
        self.routes: dict[str, BaseRoute] = {}

    def _route(self, template: str) -> BaseRoute | None:
        if not self.routes:
            self.routes = {
                path: r
                for r in self.all_routes
                if isinstance(path := getattr(r, "path", None), str)
            }
        return self.routes.get(template)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == BATCH_ROUTE:
                await self._serve(scope, receive, send, BATCH_ROUTE, None)
                return
            if path.startswith("/report/") and len(path) > 8 and "/" not in path[8:]:
                await self._serve(scope, receive, send, ADD_ROUTE, path[8:])
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, template: str, report_id: str | None
    ) -> None:
        collector = self.collector
        route = self._route(template)
        if route is not None:
            scope["route"] = route  # the access log's route template
        client = scope.get("client")
        address = client[0] if client else None
        headers = _Headers.of(scope)

        async def read(limit: int) -> bytes:
            return await read_limited(_chunks(receive), limit)

        try:
            if report_id is None:
                answer = await submit_batch(collector, headers, read, address)
            else:
                answer = await add_measurement(collector, report_id, headers, read, address)
        except Rejection as rejection:
            collector.metrics.reject(rejection.reason)
            await _send_json(send, rejection.status, rejection.body(), rejection_headers(rejection))
            return
        except Exception:  # a bug: nothing was acknowledged; say so in JSON, as FastAPI's would
            logger.exception("unexpected error on POST %s", template)
            await _send_json(
                send, 500, {"error": "internal_error", "detail": "an internal error"}, {}
            )
            return
        await _send_json(send, 200, answer, {})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _send_json(send: Send, status: int, value: Any, headers: Mapping[str, str]) -> None:
    body = orjson.dumps(value)
    raw_headers = [
        (b"content-type", JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})


def rejection_headers(rejection: Rejection) -> dict[str, str]:
    headers = dict(rejection.headers)
    if rejection.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="msgwatch-collector"')
    return headers

"""The access log and the per-response headers, as one pure-ASGI middleware.

One line per request: method, route *template* (``/report/{report_id}``, never the concrete path,
which could carry anything), status, duration and response bytes. Never a client address, a query
string, a header or a body. uvicorn's own access log is switched off (``server.py``).

The same middleware adds ``X-Content-Type-Options: nosniff`` (and a restrictive
``Content-Security-Policy``) to every response — the read API serves whatever probes sent: a
browser must not guess it is HTML — and feeds the latency histogram. It is the outermost layer of
the application (``app.py``), so every answer passes through it, FastAPI's own 500s included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from msgwatch.collector.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("msgwatch.collector.access")

_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def route_template(scope: Scope) -> str:
    """The template of the route that answered, ``-`` when none matched (a 404)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "-"


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                own = {name.lower() for name, _ in headers}  # a mounted app's (the dashboard) stay
                headers += [h for h in _SECURITY_HEADERS if h[0] not in own]
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe_latency(route, elapsed)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s %d %.1fms %dB", scope["method"], route, status, elapsed * 1000, sent
                )

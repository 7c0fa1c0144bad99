"""The dashboard's web app: ``create_app(config)`` is a read-only Starlette (ASGI) application,
served by ``msgwatch dashboard serve`` or mounted by the collector at ``/dashboard``.

Rules:

- Routes (all GET, HEAD included; any other method 405): ``/``, ``/network/{cc}/{asn}``,
  ``/events``, ``/event/{event_id}``, ``/measurement/{uid}``, ``/chart/{kind}.svg``,
  ``/embed/{kind}``, ``/export/{view}.{csv,json}``, ``/feed.atom``, ``/feed.json``,
  ``/static/{file}`` (the package's own CSS and JS; nothing comes from elsewhere).
- Every response carries :data:`CSP` (``frame-ancestors *`` on ``/embed/`` only, so that a chart
  may be embedded and nothing else framed), ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``. The pages hold no inline script or style.
- The lake is warmed ahead (:mod:`.pages_warm`): when the app is created and, from the views,
  whenever its committed state changes, in a background thread no request waits for.
- Errors: :class:`BadQuery` → 400 with its message (JSON for ``/export/`` and ``/feed.json``, an
  HTML page otherwise); unknown page, event, measurement → 404; a missing analysis → 503; anything
  else → 500 with a fixed message (the cause is logged, never shown).
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msgwatch.analysis.query import LakeMissing
from msgwatch.dashboard import export, feeds, pages
from msgwatch.dashboard.filters import BadQuery
from msgwatch.dashboard.pages_base import ROOT_KEY, DashboardConfig, render
from msgwatch.dashboard.pages_charts import chart_svg, embed_page
from msgwatch.dashboard.pages_warm import Warmer

logger = logging.getLogger("msgwatch.dashboard")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "form-action 'self'; frame-ancestors 'none'"
)
EMBED_CSP = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")
PLAIN_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
STATIC = Path(__file__).resolve().parent / "static"

__all__ = ["CSP", "DashboardConfig", "create_app"]


class SecurityHeaders:
    """Sets the security headers on every response (replacing any of the same name)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        scope[ROOT_KEY] = root
        embed = path.removeprefix(root).startswith("/embed/")
        policy = EMBED_CSP if embed else CSP
        own = [(b"content-security-policy", policy.encode())]
        own += [(k.encode(), v.encode()) for k, v in PLAIN_HEADERS.items()]
        names = {name for name, _ in own}

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in names]
                message["headers"] = [*kept, *own]
            await send(message)

        await self.app(scope, receive, send_headers)


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return "/export/" in path or path.endswith("/feed.json")


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)


async def bad_query(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return Response("method not allowed", status_code=405, headers={"allow": "GET, HEAD"})
    message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else "no such page"
    return _error(request, exc.status_code, str(message))


async def lake_missing(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "no analysis yet: run msgwatch analyse into this directory")


async def server_error(request: Request, exc: Exception) -> Response:
    """A bug: a fixed message; Starlette answers it outside :class:`SecurityHeaders`, so the
    headers are set here."""
    logger.error("dashboard error on %s", request.url.path, exc_info=exc)
    response = _error(request, 500, "internal error (logged)")
    response.headers.update({"content-security-policy": CSP, **PLAIN_HEADERS})
    return response


def routes() -> list[Route | Mount]:
    """The app's routes (GET; Starlette answers HEAD with them too)."""
    get = ["GET"]
    return [
        Route("/", pages.overview_page, methods=get),
        Route("/network/{cc}/{asn}", pages.network_page, methods=get),
        Route("/events", pages.events_page, methods=get),
        Route("/event/{event_id}", pages.event_page, methods=get),
        Route("/measurement/{uid}", pages.measurement_page, methods=get),
        Route("/chart/{kind}.svg", chart_svg, methods=get),
        Route("/embed/{kind}", embed_page, methods=get),
        Route("/export/{view}.{fmt}", export.export_view, methods=get),
        Route("/feed.atom", feeds.atom_feed, methods=get),
        Route("/feed.json", feeds.json_feed_view, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard over ``config.lake_dir`` (mountable under any path)."""
    app = Starlette(
        routes=routes(),
        exception_handlers={
            BadQuery: bad_query,
            HTTPException: http_error,
            LakeMissing: lake_missing,
            Exception: server_error,
        },
    )
    app.state.dashboard = config
    app.state.warmer = Warmer(config.lake_dir, config.measurements)
    app.state.warmer.poke()
    app.add_middleware(SecurityHeaders)
    return app

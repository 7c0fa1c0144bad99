"""The collector's HTTP service (docs/design/002-collector.md, "Wire protocol"): the assembly.

``create_app(settings)`` builds a FastAPI application whose lifespan opens the store and closes it,
and puts together what the other modules define:

- the **routes**, one router per concern (:mod:`msgwatch.collector.routes`: OONI's report
  protocol, the batch submission, the read API, health and metrics), sharing one
  :class:`~msgwatch.collector.handlers.Collector` on ``app.state.collector``;
- the **scheduled analysis** (``analyser.py``, ``--analyse-every``): started by the lifespan after
  the store opens, stopped (its running pass ended) before the store closes;
- the **error shape**, JSON ``{"error", "detail"}`` for every refusal (:mod:`.routes.errors`), and
  the OpenAPI document (:mod:`.routes.openapi`);
- the **layers**, outermost first: the access log (``accesslog.py``: log line, latency, security
  headers), :class:`~msgwatch.collector.cutshort.CutShort` (a request cancelled by the end of a
  graceful stop answers 503), the fast path (``handlers.py``; ``fast_path=False`` leaves it out:
  the tests run both ways), then FastAPI with its middleware, router and exception handlers.

Submissions read bytes, not a pydantic body: orjson plus top-level checks cost a fraction of a
model's validation of a 30 KB measurement. The shapes are declared in ``/openapi.json`` all the
same. A store that cannot be opened fails the start-up with one logged line (``startup.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from msgwatch import __version__
from msgwatch.collector import analyser, dashboard, routes
from msgwatch.collector.accesslog import AccessLog, Message, Receive, Scope, Send
from msgwatch.collector.cutshort import CutShort
from msgwatch.collector.handlers import ASGICallable, Collector, FastSubmissions
from msgwatch.collector.routes import errors, openapi
from msgwatch.collector.settings import Settings
from msgwatch.collector.startup import describe
from msgwatch.collector.store.base import Store, StoreUnavailable

logger = logging.getLogger("msgwatch.collector")

StoreOpener = Callable[[Path, str | None], Awaitable[Store]]


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
        app.state.analyser = analyser.start(settings)  # --analyse-every: passes in a child
        try:
            yield
        finally:
            if app.state.analyser is not None:
                await asyncio.to_thread(app.state.analyser.stop)
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
    errors.install(app)
    for router in routes.ROUTERS:
        app.include_router(router)
    openapi.install(app)
    dashboard.mount(app, settings, collector)  # --dashboard: the web dashboard at /dashboard
    # the routers' own routes: what FastAPI puts in scope["route"] (app.routes holds the routers)
    own = [route for router in routes.ROUTERS for route in router.routes]
    inner: ASGICallable = FastSubmissions(app.behind, collector, own) if fast_path else app.behind
    app.entry = AccessLog(CutShort(inner, collector.metrics), collector.metrics)
    return app

"""A request cut short by the end of a graceful stop answers 503, in JSON (``server.py``)."""

from __future__ import annotations

import asyncio
import logging

from msgwatch.collector.accesslog import Message, Receive, Scope, Send
from msgwatch.collector.handlers import ASGICallable
from msgwatch.collector.metrics import Metrics
from msgwatch.collector.routes.common import json_response

logger = logging.getLogger("msgwatch.collector")


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

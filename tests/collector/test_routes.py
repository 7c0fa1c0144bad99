"""The routes are routers assembled by ``create_app``: every documented operation comes from
exactly one router, and the routers (module-level objects) keep no state of their own, so two
applications in one process answer each with its own collector, counters and errors.

Driven in memory, straight through the ASGI interface (no server, no store: none of these
requests reaches it)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute

from msgwatch.collector.app import create_app
from msgwatch.collector.handlers import Collector
from msgwatch.collector.routes import ROUTERS
from msgwatch.collector.settings import Settings

OPEN_REPORT = {
    "probe_asn": "AS30722",
    "probe_cc": "IT",
    "software_name": "ooniprobe-cli",
    "software_version": "3.20.0",
    "test_name": "signal",
}


def call(app: FastAPI, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One request through the whole application; its status and JSON body."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(payload)


def collector(app: FastAPI) -> Collector:
    found = app.state.collector
    assert isinstance(found, Collector)
    return found


def test_every_documented_operation_comes_from_exactly_one_router(tmp_path: Path) -> None:
    document = create_app(Settings(data_dir=tmp_path)).openapi()
    documented = sorted(
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    )
    from_routers = sorted(
        (route.path, method)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    )
    assert documented == from_routers
    assert len(set(from_routers)) == len(from_routers)


def test_two_applications_share_no_state(tmp_path: Path) -> None:
    first = create_app(Settings(data_dir=tmp_path / "a", backend_version="first"))
    second = create_app(Settings(data_dir=tmp_path / "b", backend_version="second"))
    body = orjson.dumps(OPEN_REPORT)
    assert call(first, "POST", "/report", body)[1]["backend_version"] == "first"
    assert call(second, "POST", "/report", body)[1]["backend_version"] == "second"

    status, answer = call(second, "GET", "/no/such/thing")
    assert (status, answer["error"]) == (404, "not_found")
    status, answer = call(second, "POST", "/report/not-an-id/close")
    assert (status, answer["error"]) == (400, "bad_report_id")
    assert collector(second).metrics.rejected["not_found"] == 1
    assert collector(second).metrics.rejected["bad_report_id"] == 1
    assert collector(first).metrics.rejected["not_found"] == 0
    assert collector(first).metrics.rejected["bad_report_id"] == 0


def test_a_read_without_a_store_is_503_in_the_error_shape(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))  # the lifespan never ran: no store is open
    status, answer = call(app, "GET", "/api/v1/measurements/20261124000000.000000_IT_x_00")
    assert (status, answer["error"]) == (503, "storage_unavailable")
    status, answer = call(app, "GET", "/health")
    assert (status, answer) == (
        503,
        {
            "status": "unavailable",
            "detail": "the archive or the index cannot be written",
            "error": "storage_unavailable",
        },
    )

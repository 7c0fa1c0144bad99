"""A minimal in-process ASGI client for the dashboard's tests (Starlette's TestClient needs a
package this project does not install): one request, the whole response, no network."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    all_headers: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(
    app: Any,
    url: str,
    method: str = "GET",
    root_path: str = "",
    host: str = "testserver",
    reraise: bool = True,
) -> Answer:
    """``method url`` against ``app``; ``url`` is a path with an optional query (already encoded).
    ``reraise=False``: an exception the app raises after answering (Starlette re-raises a 500's
    cause) is dropped, the answer kept."""
    parts = urlsplit(url)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + parts.path,
        "raw_path": (root_path + parts.path).encode(),
        "root_path": root_path,
        "query_string": parts.query.encode("latin-1"),
        "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 50000),
        "server": (host, 80),
    }
    return asyncio.run(_call(app, scope, reraise))


async def _call(app: Any, scope: dict[str, Any], reraise: bool) -> Answer:
    sent = False
    status = 0
    headers: list[tuple[str, str]] = []
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend((k.decode().lower(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        if reraise or status == 0:
            raise
    return Answer(status, dict(headers), bytes(body), tuple(headers))

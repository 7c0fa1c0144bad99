"""The control API against malformed, oversized and hostile requests: always 4xx, never a crash."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.helper.util import config, http, raw_http, running, settings

Check = tuple[bytes, int, str | None]

BIG = 64 * 1024
HOSTILE: list[Check] = [
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"GET /v1/health HTTP/1.1\r\n\r\n", 400, "bad_request"),  # no Host
    (b"GET /v1/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    (b"GET /v1/health HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431, None),
    (b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n", 404, "not_found"),
    (b"DELETE /v1/measure HTTP/1.1\r\nHost: h\r\n\r\n", 405, "method_not_allowed"),
    (b"POST /v1/measure HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n", 413,
     "body_too_large"),
    (b"POST /v1/measure HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"4000\r\n" + b"[" * 0x4000 + b"\r\n" for _ in range(5)), 413, "body_too_large"),
    (b"POST /v1/measure HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    (b"GET /v1/udp/flows?client_port=x&local_port=1 HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "bad_query"),
    (b"GET /v1/udp/flows?client_port=1 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_query"),
    (b"GET /v1/udp/flows?client_port=1&local_port=70000 HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "bad_query"),
    (b"GET /v1/udp/flows?%%%% HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_query"),
]  # fmt: skip


def _post(body: bytes) -> bytes:
    return (b"POST /v1/measure HTTP/1.1\r\nHost: h\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


BAD_BODIES: list[tuple[Any, str]] = [
    (b"{not json", "bad_json"),
    (b"\xff\xfe\x00", "bad_json"),
    (b"[" * 30_000 + b"]" * 30_000, "bad_json"),  # too deep for the parser
    (b"1" * 5000, "bad_json"),  # an integer of 5000 digits
    ([], "bad_request"),
    ({"steps": [{"kind": "tcp", "address": "127.0.0.1", "port": 1}] * 33}, "bad_request"),
    ({"steps": [{"kind": "tcp", "address": "127.0.0.1", "port": 1}], "timeout": 16}, "bad_request"),
    ({"steps": [{"kind": "tcp", "address": "127.0.0.1", "port": 1, "evil": 1}]}, "bad_request"),
    ([{"kind": "ping", "address": "127.0.0.1"}], "bad_request"),
    ([{"kind": "tcp", "address": "127.0.0.1"}], "bad_request"),  # no port
    ([{"kind": "tcp", "address": "localhost", "port": 1}], "bad_request"),
    ([{"kind": "tcp", "host": "a b", "port": 1}], "bad_request"),
    ([{"kind": "tcp", "address": "127.0.0.1", "port": 0}], "bad_request"),
    ([{"kind": "http", "address": "127.0.0.1", "path": "/\r\nX: y"}], "bad_request"),
    ([{"kind": "http", "address": "127.0.0.1", "path": "noslash"}], "bad_request"),
    ([{"kind": "dns", "address": "127.0.0.1"}], "bad_request"),  # no host
    ("a string", "bad_request"),
    ({"steps": "x" * 60_000}, "bad_request"),
]


def test_hostile_requests_get_4xx() -> None:
    async def scenario() -> None:
        calls = {"measure": 1000, "flows": 1000, "health": 1000}
        async with running(config(control=settings(calls_per_minute=calls))) as helper:
            control = helper.bound["control"][0]
            for data, status, reason in HOSTILE:
                reply = await raw_http(control, data)
                assert reply.status == status, (data[:60], reply)
                if reason is not None:
                    assert reply.json()["error"] == reason
            for body, reason in BAD_BODIES:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                reply = await raw_http(control, _post(raw))
                assert reply.status == 400, (raw[:60], reply)
                assert reply.json()["error"] == reason
                assert "detail" in reply.json()
            # ... and the helper still answers.
            health = await http(control, "GET", "/v1/health")
            assert health.status == 200 and health.json()["status"] == "ok"

    asyncio.run(scenario())


def test_health() -> None:
    async def scenario() -> None:
        async with running() as helper:
            reply = await http(helper.bound["control"][0], "GET", "/v1/health")
            body = reply.json()
            assert reply.headers["content-type"] == "application/json"
            assert body["mode"] == "lab" and body["allowed"] == ["127.0.0.0/8", "::1/128"]
            assert body["listen"]["udp"] == [f"127.0.0.1:{helper.bound['udp'][0][1]}"]
            assert set(body["counters"]) == {"udp", "tcp", "limits", "control", "flows", "sending"}

    asyncio.run(scenario())


def test_keep_alive_and_slow_clients() -> None:
    async def scenario() -> None:
        cfg = config(control=settings(request_timeout=0.3, idle=0.3))
        async with running(cfg) as helper:
            control = helper.bound["control"][0]
            reader, writer = await asyncio.open_connection(*control)
            for _ in range(3):  # three requests on one connection
                writer.write(b"GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            # idle: closed without a word
            assert await asyncio.wait_for(reader.read(1), 1) == b""
            writer.close()
            # a slow drip: closed without a response
            reader, writer = await asyncio.open_connection(*control)
            writer.write(b"GET /v1/health HTTP/1.1\r\n")
            assert await asyncio.wait_for(reader.read(1), 1) == b""
            writer.close()

    asyncio.run(scenario())


def test_rate_limits() -> None:
    async def scenario() -> None:
        calls = {"measure": 2, "flows": 600, "health": 3}
        async with running(config(control=settings(calls_per_minute=calls))) as helper:
            control = helper.bound["control"][0]
            statuses = [(await http(control, "GET", "/v1/health", source="127.0.0.11")).status
                        for _ in range(5)]  # fmt: skip
            assert statuses == [200, 200, 200, 429, 429]
            assert (await http(control, "GET", "/v1/health", source="127.0.0.12")).status == 200
            step = [{"kind": "tcp", "address": "127.0.0.1", "port": helper.bound["tcp"][0][1]}]
            replies = [await http(control, "POST", "/v1/measure", step) for _ in range(3)]
            assert [r.status for r in replies] == [200, 200, 429]
            assert replies[2].headers["retry-after"] == "30"

    asyncio.run(scenario())


def test_connections_per_client_are_limited() -> None:
    async def scenario() -> None:
        async with running(config(control=settings(max_per_client=2))) as helper:
            control = helper.bound["control"][0]
            held = [await asyncio.open_connection(*control, local_addr=("127.0.0.13", 0))
                    for _ in range(2)]  # fmt: skip
            await asyncio.sleep(0.05)
            reply = await http(control, "GET", "/v1/health", source="127.0.0.13")
            assert reply.status is None  # closed at once
            assert (await http(control, "GET", "/v1/health", source="127.0.0.14")).status == 200
            for _, w in held:
                w.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("concurrent", [3])
def test_measurements_at_once_are_limited(concurrent: int) -> None:
    async def scenario() -> None:
        async with running(config(control=settings(max_measures=1))) as helper:
            control = helper.bound["control"][0]
            slow = [{"kind": "stun", "address": "127.0.0.1", "port": _silent_port()}]
            body = {"steps": slow, "timeout": 0.5}
            replies = await asyncio.gather(*[
                http(control, "POST", "/v1/measure", body, source=f"127.0.0.{20 + i}")
                for i in range(concurrent)
            ])  # fmt: skip
            statuses = sorted(r.status or 0 for r in replies)
            assert statuses == [200, 503, 503]

    try:
        asyncio.run(scenario())
    finally:
        while _SILENT:
            _SILENT.pop().close()


def _silent_port() -> int:
    """A UDP port on 127.0.0.1 where nothing answers (bound here and kept bound, silent)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    _SILENT.append(sock)
    return int(sock.getsockname()[1])


_SILENT: list[Any] = []

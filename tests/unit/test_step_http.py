"""HTTP GET over TCP and TLS against servers that answer, block, never stop, drip or talk nonsense."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

from msgwatch.steps import net
from msgwatch.steps.http import USER_AGENT, Get, HTTPResult, http_get
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace, TraceLimits
from tests.unit.servers import (
    HANDSHAKE_EVENTS,
    PKI,
    StreamHandler,
    close_after_first_read,
    deadline,
    http_drip,
    http_endless,
    http_response,
    operations,
    reset_after_first_read,
    send_after_first_read,
    server_tls,
    tcp_server,
)

HOST = "chat.example.test"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
BLOCK_PAGE = (
    "<html><head><title>Access denied</title></head>"
    '<body><iframe src="http://10.10.34.34/?type=Invalid Site"></iframe></body></html>'
)


def _get(
    handler: StreamHandler,
    *,
    tls: tuple[ssl.SSLContext, PKI] | None = None,
    seconds: float = 2.0,
    trace: Trace | None = None,
    max_body: int | None = None,
    keep_body: int | None = None,
) -> tuple[Trace, HTTPResult]:
    trace = trace or Trace()

    async def scenario() -> HTTPResult:
        async with tcp_server(handler, tls[0] if tls else None) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                stream: Any = conn
                if tls is not None:
                    stream = await tls_handshake(
                        conn, HOST, deadline(2.0), ca_bundle=str(tls[1].ca)
                    )
                scheme = "https" if tls else "http"
                get = Get(HOST, "/", scheme, max_body, keep_body)
                alpn = getattr(stream, "alpn", None)
                return await http_get(stream, trace, 1, get, deadline(seconds), alpn=alpn)
            finally:
                conn.close()

    return trace, asyncio.run(scenario())


def test_200_over_tcp() -> None:
    seen: list[bytes] = []
    trace, result = _get(http_response(OK, seen))
    assert result == HTTPResult(
        status=200,
        headers=[("Content-Type", "text/plain"), ("Content-Length", "5")],
        body=b"hello",
        truncated=False,
        failure=None,
        body_length=5,
    )
    assert seen == [
        b"GET / HTTP/1.1\r\nHost: chat.example.test\r\nUser-Agent: "
        + USER_AGENT.encode()
        + b"\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ]
    [record] = trace.requests
    assert record["failure"] is None
    assert (record["network"], record["alpn"], record["transaction_id"]) == ("tcp", "", 1)
    assert record["address"] == f"127.0.0.1:{trace.tcp_connect[0]['port']}"
    assert record["request"]["url"] == f"http://{HOST}/"
    assert record["request"]["method"] == "GET"
    assert record["request"]["headers_list"] == [
        ["Host", HOST],
        ["User-Agent", USER_AGENT],
        ["Accept", "*/*"],
        ["Connection", "close"],
    ]
    assert record["response"] == {
        "code": 200,
        "headers_list": [["Content-Type", "text/plain"], ["Content-Length", "5"]],
        "headers": {"Content-Type": "text/plain", "Content-Length": "5"},
        "body": "hello",
        "body_is_truncated": False,
    }
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]


def test_200_over_tls(pki: PKI) -> None:
    trace, result = _get(http_response(OK), tls=(server_tls(pki.chat), pki))
    assert (result.status, result.body, result.failure) == (200, b"hello", None)
    [record] = trace.requests
    assert record["alpn"] == "http/1.1"
    assert record["request"]["url"] == f"https://{HOST}/"
    assert record["response"]["body"] == "hello"
    assert operations(trace.network_events) == [*HANDSHAKE_EVENTS, "write", "read", "close"]


def test_block_page_is_recorded_verbatim() -> None:
    raw = (
        b"HTTP/1.1 403 Forbidden\r\nServer: censor\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BLOCK_PAGE) + BLOCK_PAGE.encode()
    )
    trace, result = _get(http_response(raw))
    assert result.failure is None  # a block page is an answer; the judge calls it blocking
    [record] = trace.requests
    assert record["response"]["code"] == 403
    assert record["response"]["body"] == BLOCK_PAGE
    assert record["response"]["headers_list"] == [
        ["Server", "censor"],
        ["Content-Type", "text/html"],
        ["Content-Length", str(len(BLOCK_PAGE))],
    ]


def test_endless_body_is_cut_at_max_body() -> None:
    sent = [0]
    trace, result = _get(http_endless(sent=sent), max_body=10_000)
    assert result.failure is None
    assert result.truncated is True
    assert result.body == b"x" * 10_000
    [record] = trace.requests
    assert record["response"]["body_is_truncated"] is True
    assert record["response"]["body"] == "x" * 10_000
    # Reading stopped right after the cut: at most one read chunk beyond it came in.
    read = sum(e.get("num_bytes", 0) for e in trace.network_events if e["operation"] == "read")
    assert 10_000 < read <= 10_000 + net.READ_CHUNK + 200
    assert operations(trace.network_events)[-1] == "close"


def test_endless_body_default_limit_comes_from_the_trace() -> None:
    trace = Trace(limits=TraceLimits(max_body=3000))
    _, result = _get(http_endless(), trace=trace)
    assert (len(result.body), result.truncated, result.failure) == (3000, True, None)


def test_slow_drip_times_out_with_the_partial_body() -> None:
    body = b"abcdefghijklmnopqrstuvwxyz"
    trace, result = _get(http_drip(body, 0.1), seconds=0.5)
    assert result.failure == "generic_timeout_error"
    assert result.status == 200
    assert 3 <= len(result.body) <= 5
    assert body.startswith(result.body)
    [record] = trace.requests
    assert record["failure"] == "generic_timeout_error"
    assert record["response"]["body"] == result.body.decode()
    assert record["response"]["body_is_truncated"] is False
    events = trace.network_events
    assert operations(events)[:2] == ["connect", "write"]
    assert set(operations(events)[2:-1]) == {"read"}
    assert [e["failure"] for e in events[2:-2]] == [None] * (len(events) - 4)
    assert events[-2]["failure"] == "generic_timeout_error"
    assert events[-1]["operation"] == "close"


def test_garbage_is_an_invalid_response() -> None:
    trace, result = _get(send_after_first_read(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", then_close=True))
    assert result == HTTPResult(failure="http_invalid_response")
    [record] = trace.requests
    assert record["failure"] == "http_invalid_response"
    assert record["response"] is None
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]


def test_garbage_without_line_end_then_close_is_an_invalid_response() -> None:
    trace, result = _get(send_after_first_read(b"\x16\x03\x01\x00\x02\x02\x28", then_close=True))
    # h11 rejects a first line that cannot become a status line without waiting for its end.
    assert result.failure == "http_invalid_response"
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]


def test_close_without_a_byte_is_eof() -> None:
    trace, result = _get(close_after_first_read)
    assert result == HTTPResult(failure="eof_error")
    assert [r["failure"] for r in trace.requests] == ["eof_error"]
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]


def test_reset_after_request() -> None:
    trace, result = _get(reset_after_first_read)
    assert result == HTTPResult(failure="connection_reset")
    assert trace.requests[0]["response"] is None
    assert [e["failure"] for e in trace.network_events] == [None, None, "connection_reset", None]


def test_close_in_the_middle_of_the_body_is_eof() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    trace, result = _get(http_response(raw))
    assert (result.status, result.body, result.failure) == (200, b"partial", "eof_error")
    assert trace.requests[0]["response"]["body"] == "partial"


def test_non_utf8_body_is_base64() -> None:
    body = b"\xff\xfe\x00\x01binary\x80"
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    trace, result = _get(http_response(raw))
    assert result.body == body
    assert trace.requests[0]["response"]["body"] == {
        "format": "base64",
        "data": base64.b64encode(body).decode(),
    }


def test_requests_are_most_recent_first() -> None:
    trace = Trace()
    _get(http_response(OK), trace=trace)
    _get(http_response(b"HTTP/1.1 204 No Content\r\n\r\n"), trace=trace)
    assert [r["response"]["code"] for r in trace.requests] == [204, 200]


def test_a_download_reads_much_and_keeps_nothing() -> None:
    trace, result = _get(http_endless(), max_body=10_000, keep_body=0)
    assert (result.body, result.body_length, result.truncated) == (b"", 10_000, True)
    response = trace.requests[0]["response"]
    assert (response["body"], response["body_length"], response["body_is_truncated"]) == (
        "",
        10_000,
        True,
    )

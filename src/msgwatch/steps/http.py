"""HTTP/1.1 GET over an established TCP or TLS stream, with h11 as the protocol engine.

What to get is a :class:`Get`: the ``Host`` it names, the path, and how much of the body is read
and kept.

Bounds: whatever h11 has not yet made into an event — the status line and headers, a chunk-size
line, the trailers — is limited to :data:`MAX_INCOMPLETE` bytes (h11's ``max_incomplete_event_size``):
beyond that the response is ``http_invalid_response``, so an endless chunk-size line costs at most
that much; the body is kept up to ``max_body`` bytes and reading stops there (``body_is_truncated``:
an endless body costs no more than that); a slow drip ends at the deadline with
``generic_timeout_error`` and what arrived so far is kept in the record. Bytes that are not HTTP/1.1
— before the status line or after it (a bad chunk-size line, a line over the bound) — give
``http_invalid_response``; a close before the first byte of the response, or in the middle of it
(what arrived so far was valid), gives ``eof_error``. Header names are kept as sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import h11

from msgwatch import __version__
from msgwatch import failures as F
from msgwatch.steps.trace import Trace, encode_bytes

USER_AGENT = f"msgwatch/{__version__}"
MAX_INCOMPLETE = 16 * 1024
"""Bytes h11 may hold without making an event of them (a header block, a chunk-size line)."""


class Stream(Protocol):
    @property
    def address(self) -> str: ...

    async def write(self, data: bytes, deadline: float) -> None: ...

    async def read(self, deadline: float, max_bytes: int = 16384) -> bytes: ...


@dataclass
class HTTPResult:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: bool = False
    failure: str | None = None
    body_length: int = 0
    """Body bytes read (more than ``body`` holds when the caller kept fewer)."""


@dataclass(frozen=True)
class Get:
    """One GET: the ``Host`` it names, the path, and how much of the answer is read and kept."""

    host: str
    """The ``Host`` header: the name, with ``:port`` when not the scheme's default (:meth:`to`)."""
    path: str = "/"
    scheme: str = "http"
    """``http`` or ``https``: only the recorded URL says it (the step is given its stream)."""
    max_body: int | None = None
    """Body bytes read at most (None: the trace's ``max_body``)."""
    keep_body: int | None = None
    """Of those, bytes kept in the result and the record (None: all; a throughput download: 0)."""

    @classmethod
    def to(
        cls, scheme: str, host: str, port: int, path: str = "/", *, max_body: int | None = None
    ) -> Get:
        """A GET of ``path`` from ``host``:``port``, the port named only when not the default."""
        default = 443 if scheme == "https" else 80
        return cls(host if port == default else f"{host}:{port}", path, scheme, max_body)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def _headers(items: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in items]


async def http_get(
    stream: Stream, trace: Trace, txid: int, get: Get, deadline: float, *, alpn: str | None = None
) -> HTTPResult:
    """``get`` on ``stream`` (``alpn``: what its TLS negotiated, for the record); records a
    ``requests`` entry; never raises."""
    limit = trace.limits.max_body if get.max_body is None else get.max_body
    keep = limit if get.keep_body is None else min(get.keep_body, limit)
    request_headers = [
        ("Host", get.host),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    result = HTTPResult()
    t0 = trace.now()
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_INCOMPLETE)
    body = bytearray()
    received = 0
    closed = False
    try:
        data = conn.send(h11.Request(method="GET", target=get.path, headers=request_headers))
        data += conn.send(h11.EndOfMessage())
        await stream.write(data, deadline)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await stream.read(deadline)
                received += len(chunk)
                closed = not chunk
                conn.receive_data(chunk)
                continue
            if isinstance(event, h11.Response):
                result.status = event.status_code
                result.headers = _headers(event.headers.raw_items())[:128]  # names as sent
            elif isinstance(event, h11.Data):
                room = limit - result.body_length
                result.body_length += min(len(event.data), room)
                body += event.data[: max(0, keep - len(body))]
                if len(event.data) > room:
                    result.truncated = True
                    break
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
            # InformationalResponse (1xx) events are skipped.
    except h11.RemoteProtocolError:
        # A close before any byte (a censor's FIN after the request), or part way through a
        # response that was valid so far, is an EOF; bytes h11 refused (not HTTP, a bad or
        # over-long chunk-size line) are an invalid response, whether or not a close followed.
        invalid = received > 0 if result.status is None else not closed
        result.failure = F.HTTP_INVALID if invalid else F.EOF_ERROR
    except Exception as exc:
        result.failure = F.classify(exc)
    result.body = bytes(body)
    response: dict[str, Any] | None = None
    if result.status is not None:
        response = {
            "code": result.status,
            "headers_list": [list(h) for h in result.headers],
            "headers": dict(result.headers),
            "body": encode_bytes(result.body),
            "body_is_truncated": result.truncated or len(result.body) < result.body_length,
        }
        if len(result.body) < result.body_length:
            response["body_length"] = result.body_length
    trace.request(
        {
            "network": "tcp",
            "address": stream.address,
            "alpn": alpn or "",
            "failure": result.failure,
            "request": {
                "url": get.url,
                "method": "GET",
                "headers_list": [list(h) for h in request_headers],
                "headers": dict(request_headers),
                "body": "",
                "body_is_truncated": False,
            },
            "response": response,
            "t0": t0,
            "t": trace.now(),
            "transaction_id": txid,
        }
    )
    return result

"""A small HTTP/1.1 client for talking to a collector: h11 over one blocking socket per request.

Why blocking: submission is sequential (one batch, wait for the answer, then the next), it runs
after the measurement's event loop has finished, and its waits (backoff, the schedule) must be
interruptible by a signal, which a plain blocking call with a timeout gives for free.

Rules:

- Every address passes :func:`msgwatch.fence.check_destination` before a socket is created (the
  ``MSGWATCH_ALLOWED_NETWORKS`` fence). A host name is resolved with the system resolver only when
  the fence is down; under the fence only address literals (and ``localhost``) can be used.
- One deadline per request, computed at the top; each socket operation waits at most
  ``io_timeout`` and never past the deadline.
- The response is bounded: headers by h11 (16 KiB), the body by ``max_response`` bytes.
- ``https://``: TLS with the system's trust store, or only the CAs in ``ca_file`` when one is given
  (``--collector-ca``: a self-hosted collector's own CA); the host name (or IP) is verified.
- One connection per request (``Connection: close``): a collector is contacted once per batch, so
  keep-alive would save little and add states.

Errors (all :class:`ClientError`, with a stable failure string as in the probe's measurements):
``destination_not_allowed``, ``connection_refused``, ``generic_timeout_error``, ``eof_error``,
``connection_reset``, ``ssl_*``, ``http_invalid_response``, ``response_too_large``,
``dns_lookup_error``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

from msgwatch import __version__
from msgwatch import failures as F
from msgwatch.fence import FENCE_VARIABLE, NOT_ALLOWED, check_destination

USER_AGENT = f"msgwatch/{__version__}"
MAX_RESPONSE = 8 * 1024 * 1024
RECV_CHUNK = 64 * 1024
RESPONSE_TOO_LARGE, DNS_LOOKUP_ERROR = F.RESPONSE_TOO_LARGE, F.DNS_LOOKUP_ERROR


class ClientError(Exception):
    """A request that got no (complete, valid) HTTP response; ``failure`` is its stable string."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(detail or failure)
        self.failure = failure


@dataclass(frozen=True)
class URL:
    scheme: str
    host: str
    """A name, or an address literal without brackets."""
    port: int
    base_path: str
    """The path before the API's own (``""`` or ``/prefix``, no trailing slash)."""

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")

    def __str__(self) -> str:
        return self.origin + self.base_path


def redact_url(text: str) -> str:
    """``text`` with whatever stands before an ``@`` (a user name, a password) replaced by
    ``***``: how every URL a user gave is shown in a message. Deliberately coarse: a password
    may hold ``/`` or ``:`` unencoded, so everything up to the last ``@`` goes."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" not in rest:
        return text
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


def parse_url(text: str) -> URL:
    """``http[s]://host[:port][/base]``; raises ``ValueError`` with a reason otherwise (the URL
    in the reason with its credentials redacted: :func:`redact_url`)."""
    shown = repr(redact_url(text))
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown}: the scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError(
            f"{shown}: credentials in the URL are not supported (a token goes in a file: "
            "--collector-token-file)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{shown}: no query or fragment allowed")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown}: bad port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"{shown}: no host")
    default = 443 if parts.scheme == "https" else 80
    return URL(parts.scheme, host, port or default, parts.path.rstrip("/"))


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Addresses for ``host``: a literal as is; ``localhost`` as loopback; a name through the
    system resolver, which the fence forbids (it would ask whatever server the host uses)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host.lower().rstrip(".") == "localhost":
        return ["127.0.0.1", "::1"]
    if os.environ.get(FENCE_VARIABLE):  # the same test as msgwatch.steps.net
        raise ClientError(NOT_ALLOWED, "the system resolver is outside the fence")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ClientError(DNS_LOOKUP_ERROR, f"{host}: {exc.strerror}") from exc
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


class Client:
    """Blocking HTTP/1.1 requests, one connection each. Reusable and stateless."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        io_timeout: float = 30.0,
        request_timeout: float = 300.0,
        max_response: int = MAX_RESPONSE,
        resolver: Resolver = resolve,
    ) -> None:
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.request_timeout = request_timeout
        self.max_response = max_response
        self.resolver = resolver
        self._tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # With cafile, only that file's CAs are trusted; without, the system's.
            self._tls = ssl.create_default_context(cafile=self.ca_file)
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def request(
        self,
        method: str,
        url: URL,
        path: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Send one request to ``url``'s origin at ``url.base_path + path``; raises
        :class:`ClientError` when no complete response arrives."""
        deadline = time.monotonic() + self.request_timeout
        sock = self._connect(url, deadline)
        try:
            return self._exchange(sock, method, url, path, body, headers, deadline)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def post_json(
        self, url: URL, path: str, payload: Any, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return self.request("POST", url, path, body=body, headers=headers)

    # -- internals -------------------------------------------------------------------------------

    def _remaining(self, deadline: float, cap: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientError(F.TIMEOUT, "the request's deadline passed")
        return min(left, cap)

    def _connect(self, url: URL, deadline: float) -> socket.socket:
        addresses = self.resolver(url.host, url.port)
        if not addresses:
            raise ClientError(DNS_LOOKUP_ERROR, f"{url.host}: no address")
        error: ClientError | None = None
        for ip in addresses:
            sock: socket.socket | None = None
            try:
                check_destination(ip)
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(self._remaining(deadline, self.connect_timeout))
                sock.connect((ip, url.port))
                if url.scheme == "https":
                    sock = self.tls_context().wrap_socket(sock, server_hostname=url.host)
                return sock
            except ClientError as exc:
                error = exc
            except Exception as exc:
                error = ClientError(F.classify(exc), str(exc))
            if sock is not None:
                sock.close()
            if error.failure.startswith("ssl_"):
                break  # a certificate problem is the same on every address
        assert error is not None
        raise error

    def _exchange(
        self,
        sock: socket.socket,
        method: str,
        url: URL,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        deadline: float,
    ) -> Response:
        conn = h11.Connection(h11.CLIENT)
        host = f"[{url.host}]" if ":" in url.host else url.host
        default = 443 if url.scheme == "https" else 80
        request_headers = [
            ("Host", host if url.port == default else f"{host}:{url.port}"),
            ("User-Agent", USER_AGENT),
            ("Accept", "application/json"),
            ("Connection", "close"),
            *headers,
        ]
        if body or method in ("POST", "PUT"):
            request_headers.append(("Content-Length", str(len(body))))
        received = 0
        status: int | None = None
        response_headers: list[tuple[str, str]] = []
        content = bytearray()
        try:
            data = conn.send(
                h11.Request(method=method, target=url.base_path + path, headers=request_headers)
            )
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            view = memoryview(data)
            while view:
                sock.settimeout(self._remaining(deadline, self.io_timeout))
                sent = sock.send(view)
                view = view[sent:]
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    sock.settimeout(self._remaining(deadline, self.io_timeout))
                    chunk = sock.recv(RECV_CHUNK)
                    received += len(chunk)
                    conn.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = [
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in event.headers.raw_items()
                    ][:128]
                elif isinstance(event, h11.Data):
                    if len(content) + len(event.data) > self.max_response:
                        raise ClientError(
                            RESPONSE_TOO_LARGE, f"more than {self.max_response} bytes"
                        )
                    content += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
                # 1xx (InformationalResponse) is skipped.
        except ClientError:
            raise
        except h11.RemoteProtocolError as exc:
            # Nothing at all, or a response cut short: the peer closed; else it is not HTTP.
            failure = F.EOF_ERROR if received == 0 or status is not None else F.HTTP_INVALID
            raise ClientError(failure, str(exc)) from exc
        except h11.LocalProtocolError as exc:  # pragma: no cover - our own request is valid
            raise ClientError(F.HTTP_INVALID, str(exc)) from exc
        except Exception as exc:
            raise ClientError(F.classify(exc), str(exc)) from exc
        if status is None:  # pragma: no cover - h11 ends with a Response or raises
            raise ClientError(F.EOF_ERROR)
        return Response(status, response_headers, bytes(content))

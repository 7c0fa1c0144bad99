"""The collector's HTTP transport under hostile clients: admission, bounded request heads, a
lingering close after an early answer, and the client's address behind a trusted proxy.

uvicorn bounds neither the size nor the time of a request head, nor the number of connections
(``limit_concurrency`` answers 503 only once a head is complete: a client that never completes one
is never counted). Four requests with 200 MB heads took the collector to 1.4 GB; 1,100 slow
connections made every submission fail for 40 s. So the collector serves HTTP with
:class:`GuardedProtocol`, uvicorn's httptools protocol with these rules added, each bounding memory
or time per connection and the number of connections:

- **Admission** (:class:`Admission`, at ``connection_made``, before a byte is read): at most
  ``max_per_client`` connections per client address (an IPv6 client is its /64: one host holds a
  whole /64), and at most ``max_connections`` in all. Trusted proxies are exempt from the per-client
  bound (every client behind them shares their address; the proxy bounds them, e.g. nginx's
  ``limit_conn``). When the whole table is full, the connection that has waited longest for a
  request head (a slow head, or an idle keep-alive connection) is closed to make room: connections
  that are sending a head slowly cannot keep out those that send one at once, and a connection
  with a request in flight is never closed for another. Only when every connection has a request
  in flight is the new one refused. A refused connection is closed at once, unanswered.
- **The head** (request line and header fields): at most ``max_head_bytes`` (64 KiB, counted as
  the bytes arrive, before the parser buffers them) and ``max_headers`` fields (100), answered 431
  ``headers_too_large`` / ``too_many_headers``; it must be complete within ``header_timeout``
  seconds of the connection (or of its first byte, for the next request on a keep-alive
  connection), else the connection is closed unanswered. The body has its own bound (30 s,
  ``handlers.BODY_TIMEOUT``) and idle keep-alive uvicorn's (``timeout_keep_alive``).
- **Lingering close** (issue 9, item 15). When the answer goes out before the request is all read
  — a 413 for a body over the limit, a 431, an early 401 — the answer says ``Connection: close``,
  and the close that follows is not an immediate one: closing a socket with unread bytes makes
  the kernel send a reset, which can reach the client before the answer does, and a client that
  sees only a reset retries the same oversized body for ever. So the write side is shut (FIN
  after the answer) and what the client still sends is read and thrown away, up to
  ``drain_bytes`` (64 MiB) and ``drain_seconds`` (10 s), until the client closes its side. Such a
  connection still counts against the limits, and a graceful stop does not wait for it.
- **Forwarded address** (:class:`ForwardedFor`). Only from a configured proxy address
  (``--forwarded-allow-ips``) is ``X-Forwarded-For`` read: the client is the rightmost entry that
  is not itself a trusted proxy (entries to its left were written by the client and prove
  nothing). That address is then the one scrubbed from bodies and rate-limited, as a direct
  client's would be. From anyone else the header is ignored. An entry that is not an address
  leaves the proxy's own address as the client (counted: a misconfigured proxy).

Every refusal and cut is counted in ``/metrics`` (:meth:`Admission.render`) and said in the log,
at once for the first and then at most one line per reason every 10 s with the count (never an
address: the collector's logs hold none).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from msgwatch.collector.accesslog import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("msgwatch.collector")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOG_EVERY = 10.0
"""Seconds between two log lines about the same kind of refusal."""
FD_RESERVE = 128
"""File descriptors kept for everything but client connections (store, logs, a database pool)."""


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1024
    """Connections held at once, in all (the operator's ``--max-connections``)."""
    max_per_client: int = 64
    """Connections held at once per client address (``--max-connections-per-client``)."""
    header_timeout: float = 10.0
    """Seconds a request head may take to arrive (``--header-timeout``)."""
    max_head_bytes: int = 64 * 1024
    """Bytes of request line and header fields."""
    max_headers: int = 100
    """Header fields in one request."""
    drain_bytes: int = 64 * 1024 * 1024
    """After an early answer, bytes of the request still read and thrown away."""
    drain_seconds: float = 10.0
    """After an early answer, seconds the client has to stop sending."""


# --- trusted proxies and the forwarded address ---------------------------------------------------


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``), comma- or space-separated;
    ``ValueError`` naming the first that is neither."""
    networks: list[Network] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(host: str) -> str:
    """What the per-client bound counts: the address, an IPv6 address's /64."""
    address = _address(host)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else host


class Proxies:
    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        address = _address(host)
        return address is not None and any(address in n for n in self.networks)

    def client(self, forwarded: str) -> str | None:
        """The client named by an ``X-Forwarded-For`` value that a trusted proxy sent: the rightmost
        entry that is not a trusted proxy; ``None`` when that entry is not an address."""
        entries = [e.strip() for e in forwarded.split(",") if e.strip()]
        for entry in reversed(entries):
            address = _address(_strip_port(entry))
            if address is None:
                return None
            if str(address) not in self:
                return str(address)
        return str(_address(_strip_port(entries[0]))) if entries else None


def _strip_port(entry: str) -> str:
    if entry.startswith("["):  # [v6]:port
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:  # v4:port
        return entry.partition(":")[0]
    return entry


class ForwardedFor:
    """ASGI middleware: the client of a request that came through a trusted proxy is the one it
    names in ``X-Forwarded-For`` (module notes); every other request keeps its socket's peer."""

    def __init__(self, app: ASGIApp, proxies: Proxies, admission: Admission) -> None:
        self.app = app
        self.proxies = proxies
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer and peer[0] in self.proxies:
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
            if values:
                client = self.proxies.client(",".join(values))
                if client is None:
                    self.admission.event("forwarded_invalid")
                else:
                    scope["client"] = (client, 0)
        await self.app(scope, receive, send)


# --- admission and the counters ------------------------------------------------------------------

_REFUSALS = ("max_connections", "max_connections_per_client")
_CUTS = (
    "evicted",
    "header_timeout",
    "headers_too_large",
    "too_many_headers",
    "invalid_request",
    "drain_limit",
    "drain_timeout",
)
_SAYS = {
    "max_connections": "connections refused, every connection has a request in flight "
    "(--max-connections {max_connections})",
    "max_connections_per_client": "connections refused, over the per-client limit "
    "(--max-connections-per-client {max_per_client})",
    "evicted": "connections waiting for a request head closed to make room "
    "(--max-connections {max_connections} reached)",
    "header_timeout": "connections closed, request head not complete within {header_timeout:g} s "
    "(--header-timeout)",
    "headers_too_large": "requests answered 431, head over {max_head_bytes} bytes",
    "too_many_headers": "requests answered 431, over {max_headers} header fields",
    "invalid_request": "requests answered 400, not HTTP/1.1 the parser accepts",
    "drain_limit": "connections cut, over {drain_bytes} bytes still sent after an early answer",
    "drain_timeout": "connections cut, still sending {drain_seconds:g} s after an early answer",
    "forwarded_invalid": "requests from a trusted proxy whose X-Forwarded-For names no address "
    "(the proxy's address was used)",
}


@dataclass
class _Said:
    unsaid: int = 0
    scheduled: bool = False


@dataclass
class Admission:
    """The connection table (per client and in all), the counters, and the log about them."""

    limits: Limits = field(default_factory=Limits)
    proxies: Proxies = field(default_factory=Proxies)
    monotonic: Callable[[], float] = time.monotonic
    open: int = 0
    peak: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SAYS, 0))
    _per_client: dict[str, int] = field(default_factory=dict)
    _waiting: dict[GuardedProtocol, None] = field(default_factory=dict)  # oldest first
    _said: dict[str, _Said] = field(default_factory=dict)

    def admit(self, conn: GuardedProtocol, host: str | None) -> bool:
        """Count ``conn`` in (``True``), or refuse it (``False``, counted and logged)."""
        key = client_key(host) if host else "-"
        limits = self.limits
        if host not in self.proxies and self._per_client.get(key, 0) >= limits.max_per_client:
            self.event("max_connections_per_client")
            return False
        if self.open >= limits.max_connections:
            if not self._waiting:
                self.event("max_connections")
                return False
            victim = next(iter(self._waiting))
            self.event("evicted")
            victim.cut()
        self.open += 1
        self.peak = max(self.peak, self.open)
        self._per_client[key] = self._per_client.get(key, 0) + 1
        conn.admitted_as = key
        self._waiting[conn] = None
        return True

    def release(self, conn: GuardedProtocol) -> None:
        key, conn.admitted_as = conn.admitted_as, None
        if key is None:
            return
        self._waiting.pop(conn, None)
        self.open -= 1
        left = self._per_client.get(key, 1) - 1
        if left > 0:
            self._per_client[key] = left
        else:
            self._per_client.pop(key, None)

    def waiting(self, conn: GuardedProtocol) -> None:
        """``conn`` waits for a request head: it may be closed to make room."""
        if conn.admitted_as is not None:
            self._waiting[conn] = None

    def busy(self, conn: GuardedProtocol) -> None:
        """``conn`` has a request in flight."""
        self._waiting.pop(conn, None)

    def event(self, kind: str) -> None:
        """Count one refusal or cut; the log says so at once, then one line per 10 s at most."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        said = self._said.setdefault(kind, _Said())
        if said.scheduled:
            said.unsaid += 1
            return
        logger.warning("%s", self._say(kind, 1))
        said.scheduled = True
        try:
            asyncio.get_running_loop().call_later(LOG_EVERY, self._flush, kind)
        except RuntimeError:  # no loop (a unit test): say every one
            said.scheduled = False

    def _flush(self, kind: str) -> None:
        said = self._said[kind]
        if said.unsaid:
            logger.warning("%s in the last %g s", self._say(kind, said.unsaid), LOG_EVERY)
            said.unsaid = 0
            asyncio.get_running_loop().call_later(LOG_EVERY, self._flush, kind)
        else:
            said.scheduled = False

    def _say(self, kind: str, count: int) -> str:
        limits = self.limits
        text = _SAYS[kind].format(**{f: getattr(limits, f) for f in limits.__dataclass_fields__})
        return f"{text}: {count}"

    def render(self) -> str:
        """The transport's lines of ``/metrics`` (Prometheus text format)."""
        p = "msgwatch_collector"
        lines = [
            f"# HELP {p}_connections_open Client connections held now.",
            f"# TYPE {p}_connections_open gauge",
            f"{p}_connections_open {self.open}",
            f"# HELP {p}_connections_peak Most client connections held at once.",
            f"# TYPE {p}_connections_peak gauge",
            f"{p}_connections_peak {self.peak}",
            f"# HELP {p}_connections_limit The connection limits, in all and per client.",
            f"# TYPE {p}_connections_limit gauge",
            f'{p}_connections_limit{{scope="total"}} {self.limits.max_connections}',
            f'{p}_connections_limit{{scope="per_client"}} {self.limits.max_per_client}',
            f"# HELP {p}_connections_refused_total Connections refused at once, by limit.",
            f"# TYPE {p}_connections_refused_total counter",
            *(f'{p}_connections_refused_total{{reason="{r}"}} {self.counts[r]}' for r in _REFUSALS),
            f"# HELP {p}_connections_cut_total Connections closed or requests refused by the "
            "transport's bounds, by reason.",
            f"# TYPE {p}_connections_cut_total counter",
            *(f'{p}_connections_cut_total{{reason="{r}"}} {self.counts[r]}' for r in _CUTS),
            f"# HELP {p}_forwarded_invalid_total Requests from a trusted proxy without a usable "
            "X-Forwarded-For.",
            f"# TYPE {p}_forwarded_invalid_total counter",
            f"{p}_forwarded_invalid_total {self.counts['forwarded_invalid']}",
        ]
        return "\n".join(lines) + "\n"


def fit_file_limit(limits: Limits) -> Limits:
    """Raise the soft limit on open files towards the hard one so that ``max_connections`` fit
    (systemd's default soft limit is 1024); when they still do not, fewer connections (warned)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(1, soft - FD_RESERVE)
        logger.warning(
            "only %d open files allowed: at most %d connections (not %d); raise LimitNOFILE",
            soft,
            fitted,
            limits.max_connections,
        )
        return dataclasses.replace(limits, max_connections=fitted)
    return limits


# --- the protocol --------------------------------------------------------------------------------


class _Transport:
    """The connection's transport as uvicorn's code sees it: the real one, except that ``close``
    lingers when the request is not all read (module notes)."""

    def __init__(self, real: asyncio.Transport, protocol: GuardedProtocol) -> None:
        self.real = real
        self.protocol = protocol

    def close(self) -> None:
        self.protocol.close_after_answer()

    def is_closing(self) -> bool:
        return self.real.is_closing() or self.protocol.draining

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _HeadRefused(Exception):
    pass


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the module's bounds. ``admission`` is set on a subclass
    made per server by :func:`protocol_class`."""

    admission: ClassVar[Admission]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admitted_as: str | None = None
        self.real: asyncio.Transport | None = None
        self.draining = False
        self.refusal: str | None = None
        self._head_bytes = 0
        self._header_count = 0
        self._in_head = True  # waiting for, or reading, a request head
        self._request_open = False  # a request whose bytes are still arriving
        self._answered = False  # an answer to that request has begun
        self._drained = 0
        self._timer: asyncio.TimerHandle | None = None

    # --- the connection ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = cast(asyncio.Transport, transport)
        self.real = real
        peer = real.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        if not self.admission.admit(self, host):
            real.close()
            return
        super().connection_made(cast(asyncio.Transport, _Transport(real, self)))
        self._arm(self.admission.limits.header_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.admitted_as is None and self.transport is None:  # refused: uvicorn never saw it
            return
        self.admission.release(self)
        super().connection_lost(exc)

    def cut(self) -> None:
        """Close at once, unanswered (evicted; a head too slow)."""
        self.admission.release(self)
        if self.real is not None:
            self.real.close()

    # --- bytes in ---

    def data_received(self, data: bytes) -> None:
        if self.draining:
            self._drained += len(data)
            if self._drained > self.admission.limits.drain_bytes:
                self._end_drain("drain_limit")
            return
        if not self._in_head:
            self._feed(data)
            return
        if self._timer is None:  # the first byte of a keep-alive connection's next request
            self._arm(self.admission.limits.header_timeout, self._head_timeout)
        room = self.admission.limits.max_head_bytes - self._head_bytes
        self._head_bytes += len(data)
        if len(data) <= room:
            self._feed(data)
            return
        self._feed(data[:room])  # the head may end within the room; if not, it is too large
        if self.draining or self.real is None or self.real.is_closing():
            return
        if self._in_head:
            self.refusal = "headers_too_large"
            limit = self.admission.limits.max_head_bytes
            self._answer_431(f"a request head may take at most {limit} bytes")
        else:
            self._feed(data[room:])

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with a 431 for a head over the bounds."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self.refusal is not None:
                limits = self.admission.limits
                self._answer_431(f"a request may carry at most {limits.max_headers} header fields")
            else:
                self.admission.event("invalid_request")
                self.send_400_response("Invalid HTTP request received.")

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_open = True
        self._answered = False
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.admission.limits.max_headers:
            self.refusal = "too_many_headers"
            raise _HeadRefused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        self.admission.busy(self)
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is before:
            return
        send = cycle.send

        async def send_closing(message: Message) -> None:
            """An answer that begins before the request is all read closes the connection."""
            if message["type"] == "http.response.start" and self.cycle is cycle:
                self._answered = True
                if self._request_open:
                    cycle.keep_alive = False
            await send(message)  # type: ignore[arg-type]

        cycle.send = send_closing  # type: ignore[assignment,method-assign]

    def on_message_complete(self) -> None:
        self._request_open = False
        self._in_head = True  # what follows is the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.draining or self.real is None or self.real.is_closing():
            return
        if self._request_open:  # answered early on a keep-alive connection: close after it
            self.close_after_answer()
        elif not self.pipeline:
            self.admission.waiting(self)

    # --- closing ---

    def send_400_response(self, msg: str) -> None:
        self._answered = True
        super().send_400_response(msg)

    def _answer_431(self, detail: str) -> None:
        reason = self.refusal or "headers_too_large"
        self.admission.event(reason)
        body = b'{"error": "%s", "detail": "%s"}' % (reason.encode(), detail.encode())
        self._answered = True
        self._request_open = True
        if self.real is not None:
            self.real.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"x-content-type-options: nosniff\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.close_after_answer()

    def close_after_answer(self) -> None:
        """Every close uvicorn asks for. Lingers when an answer went out before its request was
        all read; otherwise closes at once."""
        real = self.real
        if real is None or real.is_closing() or self.draining:
            return
        if not (self._request_open and self._answered):
            real.close()
            return
        self.draining = True
        self._disarm()
        self._unset_keepalive_if_required()
        self.connections.discard(self)  # a graceful stop need not wait for it
        self.admission.busy(self)
        if real.can_write_eof():
            real.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self._arm(self.admission.limits.drain_seconds, lambda: self._end_drain("drain_timeout"))

    def _end_drain(self, reason: str) -> None:
        self.admission.event(reason)
        self._disarm()
        if self.real is not None:
            self.real.close()

    def _head_timeout(self) -> None:
        self._timer = None
        if self.real is None or self.real.is_closing() or self.draining or not self._in_head:
            return
        self.admission.event("header_timeout")
        self.cut()

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(admission: Admission) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` bound to one server's admission (its table and counters)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"admission": admission})

"""The control API: HTTP/1.1 + JSON on the control port, with h11 as the protocol engine.

Routes (every response is JSON; the shapes are the wire contract's,
:mod:`msgwatch.wire.helper_api`, and ``docs/helper.md`` shows them):

==========================  ===========================================================================
``GET /v1/health``          status, version, mode, allowed prefixes, listeners, counters
``GET /v1/udp/flows``       ``?client_port=P&local_port=Q``: the helper's counts for the flow from
                            **the requesting connection's address** with source port P to local port
                            Q (:mod:`msgwatch.helper.flows`), and what it declined to answer,
                            by reason — a client sees only its own flows
``POST /v1/measure``        steps run from the helper (:mod:`msgwatch.helper.measure`)
``POST /v1/udp/send``       a downstream replay: call-shaped traffic sent by the helper to the
                            requesting connection's address, on a flow it opened
                            (:mod:`msgwatch.helper.downstream`); 202 once scheduled
==========================  ===========================================================================

Why h11 and not a web framework: the API is four routes, h11 is already a dependency (the probe's
HTTP step), and a sans-I/O parser with explicit limits is easy to bound — no new dependency, a
start in well under a second, and nothing between the socket and the limits below.

Every request is hostile until parsed:

- the request line and headers together at most 16 KiB (h11's ``max_incomplete_event_size``),
  the body at most 64 KiB (a larger ``Content-Length`` is refused before reading: 413), the whole
  request within ``request_timeout`` seconds (a slow drip is closed: no response), an idle
  keep-alive connection closed after ``idle`` seconds, at most ``max_requests`` per connection;
- at most ``max_connections`` connections, ``max_per_client`` from one address (then closed);
- calls per client and route limited (:class:`~msgwatch.helper.limits.CallLimits`): over → 429
  with ``Retry-After``; at most ``max_measures`` measurements at once for everyone: over → 503;
- malformed HTTP → 400; unknown path → 404; wrong method → 405; a body that is not JSON, or JSON
  that is not a valid request (too deep, too many steps, unknown fields, bad addresses) → 400 with
  a reason (the ``Content-Type`` is not looked at: the body must be JSON whatever it says). A
  request never gets a 5xx for its content: a 500 means a bug in the helper (logged, the
  connection closed, the server goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
from pydantic import ValidationError

from msgwatch import __version__
from msgwatch.helper.conns import Slots, client_of, close
from msgwatch.helper.downstream import Downstream, SendModel, SendRefused
from msgwatch.helper.flows import FlowTable
from msgwatch.helper.limits import CallLimits
from msgwatch.helper.logs import ClientNames, logger
from msgwatch.helper.measure import MeasureConfig, measure, parse_request
from msgwatch.wire import helper_api as api

MAX_HEADERS = 16 * 1024
MAX_BODY = 64 * 1024
READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class ControlSettings:
    max_body: int = MAX_BODY
    request_timeout: float = 10.0
    idle: float = 15.0
    max_requests: int = 100
    max_connections: int = 128
    max_per_client: int = 8
    max_measures: int = 8
    calls_per_minute: dict[str, int] = field(
        default_factory=lambda: {"measure": 10, "flows": 600, "health": 120, "send": 120}
    )


@dataclass
class Response:
    status: int
    body: Mapping[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


def error(status: int, reason: str, detail: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"error": reason}
    if detail:
        body["detail"] = detail
    return Response(status, body, **extra)


class _TooLarge(Exception):
    pass


@dataclass
class ControlAPI:
    """The connection handler for the control port (the socket is made by the server module)."""

    flows: FlowTable
    measure_config: MeasureConfig
    health: Callable[[], dict[str, Any]]
    names: ClientNames = field(default_factory=lambda: ClientNames(reveal=False))
    settings: ControlSettings = field(default_factory=ControlSettings)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    calls: CallLimits = field(init=False)
    counters: Counter[str] = field(default_factory=Counter)
    downstream: Downstream | None = None
    """Downstream sends (``POST /v1/udp/send``); None: the route is not served."""
    _slots: Slots = field(default_factory=Slots)
    _measures: int = 0

    def __post_init__(self) -> None:
        self.calls = CallLimits(dict(self.settings.calls_per_minute))

    # -- connections --------------------------------------------------------------------------

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = client_of(writer)
        limits = self.settings
        if not self._slots.take(client, limits.max_connections, limits.max_per_client):
            self.counters["refused_connections"] += 1
            writer.close()
            return
        sockname = writer.get_extra_info("sockname")
        local = str(sockname[0]) if sockname else None
        try:
            await self._serve(client, reader, writer, local)
        except OSError:
            pass  # the client reset the connection
        except Exception:
            logger.exception("control: connection failed")
        finally:
            self._slots.give_back(client)
            await close(writer)

    async def _serve(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        local: str | None = None,
    ) -> None:  # fmt: skip
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        for number in range(self.settings.max_requests):
            try:
                got = await self._read_request(conn, reader, writer, first=number == 0)
            except TimeoutError:
                return  # a silent or slow client: close without a word
            except h11.RemoteProtocolError as exc:
                self.counters["bad_requests"] += 1
                await self._send(conn, writer, error(exc.error_status_hint, "bad_request",
                                                     "malformed HTTP/1.1", close=True))  # fmt: skip
                return
            except _TooLarge:
                self.counters["bad_requests"] += 1
                await self._send(conn, writer, error(413, "body_too_large",
                                 f"at most {self.settings.max_body} bytes", close=True))  # fmt: skip
                return
            if got is None:
                return
            request, body = got
            self.counters["requests"] += 1
            try:
                response = await self.dispatch(client, request, body, local)
            except Exception:
                logger.exception("control: internal error")
                response = error(500, "internal_error", close=True)
            if response.status >= 400:
                self.counters[f"status_{response.status}"] += 1
            last = number == self.settings.max_requests - 1
            await self._send(conn, writer, response, close=response.close or last)
            if conn.our_state is h11.MUST_CLOSE or response.close or last:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        first: bool,
    ) -> tuple[h11.Request, bytes] | None:  # fmt: skip
        """The next request and its body, or None when the client closed."""
        loop = asyncio.get_running_loop()
        request: h11.Request | None = None
        body = bytearray()
        # Until the first byte of a request: the keep-alive idle time; then the request's time.
        wait_until = loop.time() + (self.settings.request_timeout if first else self.settings.idle)
        started = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout_at(wait_until):
                    data = await reader.read(READ_CHUNK)
                if data and not started:
                    started = True
                    wait_until = loop.time() + self.settings.request_timeout
                conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                return None
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                request = event
                length = _content_length(event)
                if length is not None and length > self.settings.max_body:
                    raise _TooLarge
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.settings.max_body:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response, close: bool = False) -> None:  # fmt: skip
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        payload = json.dumps(response.body, separators=(",", ":")).encode() + b"\n"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Server", f"msgwatch-helper/{__version__}"),
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = conn.send(h11.Response(status_code=response.status, headers=headers))
            data += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.settings.idle)

    # -- routes -------------------------------------------------------------------------------

    async def dispatch(
        self, client: str, request: h11.Request, body: bytes, local: str | None = None
    ) -> Response:
        """The response to one request from ``client``, which reached the helper at ``local``."""
        target = request.target.decode("ascii", errors="replace")
        path, _, query = target.partition("?")
        method = request.method.decode("ascii", errors="replace")
        routes = {api.HEALTH_PATH: ("GET", "health"), api.FLOWS_PATH: ("GET", "flows"),
                  api.MEASURE_PATH: ("POST", "measure")}  # fmt: skip
        if self.downstream is not None:
            routes[api.SEND_PATH] = ("POST", "send")
        if path not in routes:
            return error(404, "not_found")
        allowed, kind = routes[path]
        if method != allowed:
            return error(405, "method_not_allowed", headers=[("Allow", allowed)])
        if not self.calls.allow(client, kind, self.clock()):
            retry = str(self.calls.retry_after(kind))
            return error(429, "rate_limited", f"at most {self.calls.per_minute[kind]} a minute",
                         headers=[("Retry-After", retry)])  # fmt: skip
        if kind == "health":
            return Response(200, self.health())
        if kind == "flows":
            return self._flows(client, query)
        if kind == "send":
            return self._udp_send(client, body, local)
        return await self._measure(client, request, body)

    def _flows(self, client: str, query: str) -> Response:
        try:
            fields = urllib.parse.parse_qs(query, strict_parsing=True, max_num_fields=8)
        except ValueError:
            return error(400, "bad_query", "expected client_port=P&local_port=Q")
        ports: list[int] = []
        for name in api.FLOW_QUERY:
            values = fields.get(name, [])
            if len(values) != 1 or not values[0].isdigit() or not _port(int(values[0])):
                detail = f"{name} must be one port number ({api.MIN_PORT}-{api.MAX_PORT})"
                return error(400, "bad_query", detail)
            ports.append(int(values[0]))
        key = (client, ports[0], ports[1])
        view = self.flows.view(key, self.clock(), self.wall())
        if view is None:
            return error(404, "no_such_flow", "no datagram from you with that port lately")
        return Response(200, view)

    def _udp_send(self, client: str, body: bytes, local: str | None) -> Response:
        assert self.downstream is not None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return error(400, "bad_json", "the body is not JSON")
        try:
            request = SendModel.model_validate(data).request()
        except ValidationError as exc:
            return error(400, "bad_request", _problems(exc))
        try:
            return Response(202, self.downstream.start(client, local, request))
        except SendRefused as exc:
            headers = [("Retry-After", "5")] if exc.status in (409, 429, 503) else []
            return error(exc.status, exc.reason, exc.detail, headers=headers)

    async def _measure(self, client: str, request: h11.Request, body: bytes) -> Response:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            return error(400, "bad_json", "the body is not JSON")
        try:
            parsed = parse_request(data)
        except ValidationError as exc:
            return error(400, "bad_request", _problems(exc))
        except (ValueError, RecursionError):
            return error(400, "bad_request", "not a measure request")
        if self._measures >= self.settings.max_measures:
            return error(503, "busy", "too many measurements at once",
                         headers=[("Retry-After", "5")])  # fmt: skip
        self._measures += 1
        started = self.clock()
        try:
            out = await measure(parsed, self.measure_config)
        finally:
            self._measures -= 1
        kinds = ",".join(sorted({s.kind for s in parsed.steps}))
        logger.info("measure: %s, %d steps (%s), %.2f s", self.names.name(client),
                    len(parsed.steps), kinds, self.clock() - started)  # fmt: skip
        return Response(200, out)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)[:5]
    )


def _port(number: int) -> bool:
    return api.MIN_PORT <= number <= api.MAX_PORT


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def _content_length(request: h11.Request) -> int | None:
    value = _header(request, b"content-length")
    if value is None or not value.isdigit():
        return None  # h11 itself refuses a malformed Content-Length
    return int(value)

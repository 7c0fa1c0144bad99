"""The test helper as one process: the only module of :mod:`msgwatch.helper` that opens sockets.

::

    config = HelperConfig(listen=("198.18.3.10",), udp_ports=(3478, 40000), tcp_ports=(443,),
                          policy=Policy.lab())
    async with Helper(config) as helper:     # every socket bound, or an error naming the one
        ...                                  # that failed (nothing is left open then)

What it binds (never more than it is told):

- UDP echo/STUN (:mod:`~msgwatch.helper.udp`) on every ``listen`` address × ``udp_ports``, plus
  every ``udp_listen`` ADDR:PORT;
- TCP echo (:mod:`~msgwatch.helper.tcp`) on every ``listen`` address × ``tcp_ports``, plus every
  ``tcp_listen`` ADDR:PORT (the lab's TCP-only service endpoints);
- protocol responders (:mod:`~msgwatch.helper.responders`) on every ``mtproto_listen`` and
  ``whatsapp_listen`` ADDR:PORT (the lab's Telegram data centres and WhatsApp chat endpoints);
- the control API (:mod:`~msgwatch.helper.control`) on every ``listen`` address × ``control_port``.

Port 0 binds an ephemeral port (the tests use it); :attr:`Helper.bound` says what was bound. IPv6
sockets are IPv6-only, so ``0.0.0.0`` and ``::`` can be bound side by side. With a wildcard address
replies leave from whatever address the kernel picks: on a host with several addresses, list them.

The state the sockets share — the flow table, the budgets, the counters — lives in one
:class:`Helper`; a background task logs counters once a minute (no client addresses) and
forgets idle flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from msgwatch import __version__
from msgwatch.helper.control import ControlAPI, ControlSettings
from msgwatch.helper.downstream import Downstream
from msgwatch.helper.flows import FlowTable
from msgwatch.helper.limits import DEFAULT_BUDGET_BYTES, DEFAULT_RATE_PPS, Limits
from msgwatch.helper.logs import ClientNames, logger
from msgwatch.helper.measure import MeasureConfig
from msgwatch.helper.policy import Policy
from msgwatch.helper.responders import Kind, Responder
from msgwatch.helper.tcp import TCPEcho
from msgwatch.helper.udp import UDPEndpoint, UDPService
from msgwatch.wire.helper_api import CALL_PORTS, CONTROL_PORT

STATS_EVERY = 60.0

Endpoint = tuple[str, int]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HelperError(RuntimeError):
    """The helper could not start (a socket could not be bound, a bad address)."""


def parse_endpoint(text: str) -> Endpoint:
    """``198.18.3.10:7`` or ``[2001:db8:3::10]:443`` → (address, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"not ADDRESS:PORT: {text!r}")
    return parse_address(host), int(port)


def parse_address(text: str) -> str:
    """An IP address literal (brackets allowed), normalized; a name is refused."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class HelperConfig:
    """Everything ``msgwatch helper serve`` takes; see ``docs/helper.md``."""

    listen: Sequence[str] = ("0.0.0.0", "::")
    udp_ports: Sequence[int] = CALL_PORTS
    tcp_ports: Sequence[int] = CALL_PORTS
    udp_listen: Sequence[Endpoint] = ()
    tcp_listen: Sequence[Endpoint] = ()
    mtproto_listen: Sequence[Endpoint] = ()
    """Sockets answering MTProto's req_pq_multi with a resPQ (the lab's Telegram data centres)."""
    whatsapp_listen: Sequence[Endpoint] = ()
    """Sockets answering WhatsApp's chat opening with a ServerHello (the lab's chat endpoints)."""
    control_port: int | None = CONTROL_PORT
    """None: no control API."""
    policy: Policy = field(default_factory=Policy.production)
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    rate_pps: int = DEFAULT_RATE_PPS
    global_budget_bytes: int | None = None
    resolver: Endpoint | None = None
    ca_bundle: str | None = None
    tcp_max_bytes: int = 16 * 1024 * 1024
    control: ControlSettings = field(default_factory=ControlSettings)
    reveal_clients: bool | None = None
    """Log client addresses; None: only in lab mode."""

    def udp_endpoints(self) -> list[Endpoint]:
        return _endpoints(self.listen, self.udp_ports, self.udp_listen)

    def tcp_endpoints(self) -> list[Endpoint]:
        return _endpoints(self.listen, self.tcp_ports, self.tcp_listen)

    def responder_endpoints(self, kind: Kind) -> list[Endpoint]:
        listed = self.mtproto_listen if kind == "mtproto" else self.whatsapp_listen
        return _endpoints((), (), listed)

    def control_endpoints(self) -> list[Endpoint]:
        if self.control_port is None:
            return []
        return _endpoints(self.listen, [self.control_port], ())


def _endpoints(
    listen: Sequence[str], ports: Sequence[int], extra: Sequence[Endpoint]
) -> list[Endpoint]:
    found = [(parse_address(a), p) for a in listen for p in ports]
    found += [(parse_address(a), p) for a, p in extra]
    return list(dict.fromkeys(found))


RECEIVE_BUFFER = 4 * 1024 * 1024
"""Bytes of kernel receive buffer each UDP socket asks for (capped by ``net.core.rmem_max``). All
clients of a port share its socket: while the helper's loop is busy, their datagrams must wait
there. A full buffer drops them before the helper counts them, and the probe would read that as
loss on the path (the probe asks as much for its own replay sockets)."""


def _socket(kind: socket.SocketKind, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if 0 < port < 1024 else ""
        raise HelperError(f"cannot bind {proto} {hostport(address, port)}: "
                          f"{exc.strerror or exc}{hint}") from exc  # fmt: skip
    return sock


def _ended_quietly(handler: Handler) -> Handler:
    """``handler``, ending normally when cancelled (at shutdown): Python 3.11's stream server
    logs a cancelled connection task as an unhandled error. Nothing awaits these tasks."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            writer.close()

    return run


class Helper:
    """The running helper: its sockets and shared state (see the module's notes)."""

    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        reveal = config.reveal_clients
        self.names = ClientNames(reveal=config.policy.mode == "lab" if reveal is None else reveal)
        self.flows = FlowTable()
        self.limits = Limits(config.budget_bytes, config.rate_pps, config.global_budget_bytes)
        self.started = time.monotonic()
        udp_ports = {p for _, p in config.udp_endpoints()}
        self.udp = UDPService(self.flows, self.limits, frozenset(udp_ports), self.names)
        self.tcp = TCPEcho(self.limits, max_bytes=config.tcp_max_bytes, names=self.names)
        kinds: tuple[Kind, ...] = ("mtproto", "whatsapp")
        self.responders = {
            kind: Responder(kind, self.limits, names=self.names)
            for kind in kinds
            if config.responder_endpoints(kind)
        }
        measure = MeasureConfig(config.policy, config.resolver, config.ca_bundle)
        self.downstream = Downstream(self.udp)
        self.control = ControlAPI(self.flows, measure, self.health, self.names, config.control,
                                  downstream=self.downstream)  # fmt: skip
        self.bound: dict[str, list[Endpoint]] = {"udp": [], "tcp": [], "control": []}
        self.bound |= {kind: [] for kind in self.responders}
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Helper:
        """Bind everything; on any failure close what was bound and raise :class:`HelperError`."""
        loop = asyncio.get_running_loop()
        try:
            for address, port in self.config.udp_endpoints():
                sock = _socket(socket.SOCK_DGRAM, address, port)
                actual = sock.getsockname()[1]
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(UDPEndpoint, self.udp, actual), sock=sock
                )
                self._transports.append(transport)
                self.bound["udp"].append((address, actual))
            streams: list[tuple[str, Handler, list[Endpoint]]] = [
                ("tcp", self.tcp, self.config.tcp_endpoints()),
                ("control", self.control, self.config.control_endpoints()),
            ]
            streams += [(kind, responder, self.config.responder_endpoints(kind))
                        for kind, responder in self.responders.items()]  # fmt: skip
            for role, handler, endpoints in streams:
                for address, port in endpoints:
                    sock = _socket(socket.SOCK_STREAM, address, port)
                    server = await asyncio.start_server(_ended_quietly(handler), sock=sock,
                                                        backlog=256)  # fmt: skip
                    self._servers.append(server)
                    self.bound[role].append((address, sock.getsockname()[1]))
        except BaseException:
            await self.close()
            raise
        # Ports 0 became real ports: datagrams from any of them get no answer (no loops).
        self.udp.own_ports = frozenset(p for _, p in self.bound["udp"])
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self.flows.lag.start()
        return self

    async def close(self) -> None:
        await self.downstream.close()
        await self.flows.lag.stop()
        for task in self._tasks:
            task.cancel()
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._tasks, self._transports, self._servers = [], [], []

    async def __aenter__(self) -> Helper:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "mode": self.config.policy.mode,
            "allowed": self.config.policy.describe(),
            "uptime": round(time.monotonic() - self.started, 3),
            "listen": {role: [hostport(a, p) for a, p in eps] for role, eps in self.bound.items()},
            "limits": {
                "budget_bytes_per_minute": self.limits.budget_bytes,
                "rate_pps": self.limits.rate_pps,
                "control_calls_per_minute": dict(self.config.control.calls_per_minute),
            },
            "counters": {
                "udp": self.udp.counters.as_dict(),
                "tcp": self.tcp.counters.as_dict(),
                "limits": self.limits.counters.as_dict() | self.control.calls.counters.as_dict(),
                "control": dict(self.control.counters),
                "flows": len(self.flows),
                "sending": self.downstream.running,
            }
            | {kind: r.counters.as_dict() for kind, r in self.responders.items()},
        }

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            self.flows.expire_idle(time.monotonic())
            udp, tcp = self.udp.counters, self.tcp.counters
            logger.info(
                "stats: udp rx %d/%d B tx %d/%d B stun %d over-limit %d; tcp conns %d rx %d B "
                "tx %d B; flows %d; clients %d; %s",
                udp.rx_packets, udp.rx_bytes, udp.tx_packets, udp.tx_bytes, udp.stun_answers,
                udp.over_limits, tcp.connections, tcp.rx_bytes, tcp.tx_bytes, len(self.flows),
                self.limits.clients, self.limits.counters.as_dict(),
            )  # fmt: skip


async def serve(config: HelperConfig, ready: asyncio.Event | None = None) -> None:
    """Run the helper until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Helper(config) as helper:
        logger.info(
            "msgwatch helper %s (%s mode; targets: %s): udp %s; tcp %s; control %s%s",
            __version__, config.policy.mode, ", ".join(config.policy.describe()),
            _summary(helper.bound["udp"]), _summary(helper.bound["tcp"]),
            _summary(helper.bound["control"]),
            "".join(f"; {kind} {_summary(helper.bound[kind])}" for kind in helper.responders),
        )  # fmt: skip
        if ready is not None:
            ready.set()
        await stop.wait()
        logger.info("msgwatch helper: stopping")


def _summary(endpoints: Sequence[Endpoint]) -> str:
    """The sockets of one kind in a line: the largest addresses × ports grid, then the rest."""
    if not endpoints:
        return "none"
    ports_of: dict[str, set[int]] = {}
    for address, port in endpoints:
        ports_of.setdefault(address, set()).add(port)
    groups: dict[frozenset[int], list[str]] = {}
    for address, ports in ports_of.items():
        groups.setdefault(frozenset(ports), []).append(address)
    grid, addresses = max(groups.items(), key=lambda kv: len(kv[0]) * len(kv[1]))
    rest = [hostport(a, p) for a, p in endpoints if a not in addresses]
    text = f"{_some(addresses)} × ports {', '.join(map(str, sorted(grid)))}"
    return f"{text}; {_some(rest)}" if rest else text


def _some(items: Sequence[str], at_most: int = 4) -> str:
    more = f" and {len(items) - at_most} more" if len(items) > at_most else ""
    return ", ".join(items[:at_most]) + more

"""The one module of the probe that opens sockets.

Everything above it (the steps) receives connections from here and never touches ``socket`` or
asyncio transports itself, so tests and the benchmark see the same code paths as a field run.

- :func:`tcp_connect` opens a TCP connection to one ``ip:port``; :class:`TCPConn` reads and writes it
  and records every ``connect``/``read``/``write``/``close`` into the trace (df-008). Reads are
  bounded by the caller's ``max_bytes``.
- :func:`udp_open` gives a connected UDP socket (:class:`UDPSocket`) whose received datagrams queue
  up to a bound; ICMP errors the kernel reports (port unreachable) surface as the next receive's
  exception. ``write_to``/``read_from`` events are recorded.

All waits are bounded by an absolute ``deadline`` in the event loop's clock (``loop.time()``).

The safety fence (:mod:`msgwatch.fence`) is checked before every socket and before the system
resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from msgwatch.failures import TIMEOUT, ProbeFailure, classify
from msgwatch.fence import NOT_ALLOWED, check_destination, check_fence
from msgwatch.steps.trace import Trace
from msgwatch.wire.helper_api import CALL_PORTS

MAX_QUEUED_DATAGRAMS = 64
SO_MEMINFO = 55
"""Linux's ``SO_MEMINFO`` (include/uapi/asm-generic/socket.h): the socket's ``sk_meminfo``."""
SK_MEMINFO_VARS = 9
"""``sk_meminfo``'s length; ``RMEM_ALLOC`` is its first value and ``DROPS`` its last."""
READ_CHUNK = 16 * 1024
_Protocol = TypeVar("_Protocol")


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def remaining(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())


class TCPConn:
    """A traced TCP connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        trace: Trace,
        txid: int,
        address: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.trace = trace
        self.txid = txid
        self.address = address
        self.closed = False

    async def write(self, data: bytes, deadline: float) -> None:
        t0 = self.trace.now()
        try:
            self.trace.spend(len(data))
            async with asyncio.timeout_at(deadline):
                self._writer.write(data)
                await self._writer.drain()
        except Exception as exc:
            self.trace.event(
                "write", txid=self.txid, t0=t0, address=self.address, proto="tcp",
                num_bytes=0, failure=classify(exc),
            )  # fmt: skip
            raise
        self.trace.event(
            "write", txid=self.txid, t0=t0, address=self.address, proto="tcp",
            num_bytes=len(data),
        )  # fmt: skip

    async def read(self, deadline: float, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes``; ``b""`` at EOF. Raises on error or when the deadline passes."""
        t0 = self.trace.now()
        try:
            async with asyncio.timeout_at(deadline):
                data = await self._reader.read(max(1, min(max_bytes, READ_CHUNK)))
        except Exception as exc:
            self.trace.event(
                "read", txid=self.txid, t0=t0, address=self.address, proto="tcp",
                failure=classify(exc),
            )  # fmt: skip
            raise
        self.trace.received(len(data))
        self.trace.event(
            "read", txid=self.txid, t0=t0, address=self.address, proto="tcp",
            num_bytes=len(data), failure=None if data else "eof_error",
        )  # fmt: skip
        return data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        t0 = self.trace.now()
        with contextlib.suppress(Exception):
            self._writer.close()
        self.trace.event("close", txid=self.txid, t0=t0, address=self.address, proto="tcp")


def bound_socket(ip: str, kind: socket.SocketKind, device: str) -> socket.socket:
    """A non-blocking socket for ``ip``'s family bound to network device ``device``
    (``SO_BINDTODEVICE``): the kernel sends its packets out of that device (a VPN's TUN device)
    even when no route names it."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode()[:15] + b"\0")
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open_on_device(
    ip: str, port: int, device: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = bound_socket(ip, socket.SOCK_STREAM, device)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)


async def tcp_connect(
    trace: Trace, txid: int, ip: str, port: int, deadline: float, *, device: str | None = None
) -> TCPConn:
    """Connect to ``ip:port``; records a ``connect`` event and a ``tcp_connect`` entry.
    ``device``: through that network device only (``SO_BINDTODEVICE``; a tunnel's TUN device)."""
    t0 = trace.now()
    address = endpoint(ip, port)
    try:
        check_destination(ip)
        async with asyncio.timeout_at(deadline):
            if device is None:
                reader, writer = await asyncio.open_connection(ip, port, limit=READ_CHUNK)
            else:
                reader, writer = await _open_on_device(ip, port, device)
    except Exception as exc:
        failure = classify(exc)
        trace.event("connect", txid=txid, t0=t0, address=address, proto="tcp", failure=failure)
        trace.tcp(txid=txid, t0=t0, ip=ip, port=port, failure=failure)
        raise
    sockname = writer.get_extra_info("sockname")
    if sockname:
        trace.note_probe_address(str(sockname[0]))
    trace.event("connect", txid=txid, t0=t0, address=address, proto="tcp")
    trace.tcp(txid=txid, t0=t0, ip=ip, port=port, failure=None)
    return TCPConn(reader, writer, trace, txid, address)


class _DatagramQueue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.items: deque[bytes | Exception] = deque(maxlen=MAX_QUEUED_DATAGRAMS)
        self.ready = asyncio.Event()
        self.overflowed = 0
        """Datagrams read from the socket and pushed out of the full queue unread (the probe's
        own drops, not the network's)."""

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(self.items) == self.items.maxlen:
            self.overflowed += 1
        self.items.append(data)
        self.ready.set()

    def error_received(self, exc: Exception) -> None:
        self.items.append(exc)
        self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready.set()


class UDPSocket:
    """A connected, traced UDP socket."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _DatagramQueue,
        trace: Trace,
        txid: int,
        address: str,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self.trace = trace
        self.txid = txid
        self.address = address

    def send(self, data: bytes, quiet: bool = False) -> None:
        """Send one datagram; raises ``ProbeFailure(budget_exceeded)`` past the run's budget.
        ``quiet``: no per-datagram event (a replay records its own summary)."""
        t0 = self.trace.now()
        failure: str | None = None
        try:
            self.trace.spend(len(data))
        except ProbeFailure as exc:
            if not quiet:
                self.trace.event(
                    "write_to", txid=self.txid, t0=t0, address=self.address, proto="udp",
                    num_bytes=0, failure=exc.failure,
                )  # fmt: skip
            raise
        try:
            self._transport.sendto(data)
        except Exception as exc:
            failure = classify(exc)
        if not quiet:
            self.trace.event(
                "write_to", txid=self.txid, t0=t0, address=self.address, proto="udp",
                num_bytes=len(data) if failure is None else 0, failure=failure,
            )  # fmt: skip

    async def recv(self, deadline: float, quiet: bool = False) -> bytes:
        """The next datagram. Raises ``TimeoutError`` at the deadline, or the ICMP error.
        ``quiet``: no per-datagram event."""
        t0 = self.trace.now()
        queue = self._protocol
        failure: str | None = None
        size: int | None = None
        try:
            async with asyncio.timeout_at(deadline):
                while not queue.items:
                    queue.ready.clear()
                    await queue.ready.wait()
        except TimeoutError:
            failure = TIMEOUT
            raise
        else:
            item = queue.items.popleft()
            if isinstance(item, Exception):
                failure = classify(item)
                raise item
            size = len(item)
            self.trace.received(size)
            return item
        finally:
            if not quiet:
                self.trace.event(
                    "read_from", txid=self.txid, t0=t0, address=self.address, proto="udp",
                    num_bytes=size, failure=failure,
                )  # fmt: skip

    @property
    def queue_drops(self) -> int:
        """Datagrams this socket received that its full queue discarded unread."""
        return self._protocol.overflowed

    @property
    def queued(self) -> int:
        """Datagrams (and errors) read from the kernel and not yet taken by :meth:`recv`."""
        return len(self._protocol.items)

    def set_receive_buffer(self, size: int) -> None:
        """Ask for a kernel receive buffer of ``size`` bytes (capped by the system; best effort):
        a replay's echoes must wait there while the probe's event loop is late."""
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def kernel_counters(self) -> tuple[int, int] | None:
        """(bytes waiting in the kernel's receive buffer, datagrams the kernel dropped for this
        socket, e.g. a full receive buffer) from ``SO_MEMINFO`` (Linux 4.12+: ``sk_meminfo``'s
        ``RMEM_ALLOC`` and ``DROPS``); None where the system does not say."""
        sock = self._transport.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
        except (OSError, AttributeError, TypeError):
            return None
        if not isinstance(raw, bytes) or len(raw) < 4 * SK_MEMINFO_VARS:
            return None
        values = struct.unpack(f"={SK_MEMINFO_VARS}I", raw[: 4 * SK_MEMINFO_VARS])
        return values[0], values[SK_MEMINFO_VARS - 1]

    @property
    def local_port(self) -> int | None:
        """The socket's own port (the helper names the flow by it)."""
        sockname = self._transport.get_extra_info("sockname")
        return int(sockname[1]) if sockname else None

    def close(self) -> None:
        self._transport.close()


REFUSED_LOCAL_PORTS = frozenset(CALL_PORTS)
"""Local ports a UDP socket never keeps: a test helper answers nothing from its own ports
(:mod:`msgwatch.wire.helper_api`), so a flow from one of them would look lost."""
LOCAL_PORT_ATTEMPTS = 16


async def udp_open(
    trace: Trace, txid: int, ip: str, port: int, *, avoid_ports: Collection[int] = (),
    device: str | None = None,
) -> UDPSocket:  # fmt: skip
    """A connected UDP socket to ``ip:port`` whose local port is neither ``port`` nor one of
    :data:`REFUSED_LOCAL_PORTS` nor in ``avoid_ports`` (the kernel's pick is rejected and
    another taken, the rejected sockets held open meanwhile so that the kernel cannot pick the
    same port again). ``device``: through that network device only (``SO_BINDTODEVICE``)."""
    check_destination(ip)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET

    async def make() -> tuple[asyncio.DatagramTransport, _DatagramQueue]:
        if device is None:
            return await loop.create_datagram_endpoint(
                _DatagramQueue, remote_addr=(ip, port), family=family
            )
        sock = bound_socket(ip, socket.SOCK_DGRAM, device)
        try:
            sock.connect((ip, port))
        except BaseException:
            sock.close()
            raise
        return await loop.create_datagram_endpoint(_DatagramQueue, sock=sock)

    transport, protocol = await fresh_local_port(
        make, REFUSED_LOCAL_PORTS | {port} | set(avoid_ports)
    )
    sockname = transport.get_extra_info("sockname")
    if sockname:
        trace.note_probe_address(str(sockname[0]))
    return UDPSocket(transport, protocol, trace, txid, endpoint(ip, port))


async def fresh_local_port(
    make: Callable[[], Awaitable[tuple[asyncio.DatagramTransport, _Protocol]]],
    avoid: Collection[int],
    attempts: int = LOCAL_PORT_ATTEMPTS,
) -> tuple[asyncio.DatagramTransport, _Protocol]:
    """``make()`` until the transport's local port is not in ``avoid`` (at most ``attempts``
    times; the last one is kept whatever its port). Rejected transports stay open until the
    choice is made, then are closed."""
    rejected: list[asyncio.DatagramTransport] = []
    try:
        while True:
            transport, protocol = await make()
            sockname = transport.get_extra_info("sockname")
            if not sockname or int(sockname[1]) not in avoid or len(rejected) + 1 >= attempts:
                return transport, protocol
            rejected.append(transport)
    finally:
        for transport in rejected:
            transport.close()


async def system_resolve(host: str, deadline: float) -> list[str]:
    """getaddrinfo through the event loop's executor, bounded by the deadline."""
    if check_fence() is not None:
        raise ProbeFailure(NOT_ALLOWED, "the system resolver is outside the fence")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout_at(deadline):
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out

"""Clients for proxies: SOCKS5 (RFC 1928, with RFC 1929 username/password and UDP ASSOCIATE) and
HTTP/1.1 CONNECT, on top of :mod:`msgwatch.steps.net`'s traced connections.

Rules:

- The destination is checked against the fence (:func:`msgwatch.fence.check_destination`) before
  anything is sent, the proxy's own address by :func:`~msgwatch.steps.net.tcp_connect`; a UDP
  relay address the proxy names is checked too (by :func:`~msgwatch.steps.net.udp_open`).
- Destinations are IP literals only (the fence needs an address; no name goes to a proxy).
- Every read is bounded: SOCKS replies have fixed lengths (read exactly, never more, so the
  returned :class:`~msgwatch.steps.net.TCPConn` is positioned right after the reply); an HTTP
  CONNECT answer's head is taken from the connection's buffer up to its blank line
  (``readuntil``: as many bytes at once as the proxy sent, and whatever follows the blank line
  stays buffered for the tunnel), at most :data:`MAX_HTTP_HEAD` bytes used (and the reader's
  limit, 16 KiB, read). Every wait ends at the caller's ``deadline``.
- A proxy that answers something else fails with a stable string (:mod:`msgwatch.failures`):
  ``socks_bad_reply``, ``socks_no_acceptable_method``, ``socks_auth_failed``, ``socks_refused``,
  ``socks_command_not_supported``, ``http_connect_refused``, ``http_connect_bad_reply``; a proxy
  that closes or resets gives the connection's own failure (``eof_error``, ``connection_reset``).
  The connection is closed on every failure.

The codec (``greeting`` … ``parse_udp``) is pure: bytes in, bytes or values out.

The SOCKS5 UDP association (:func:`socks5_udp`) gives a :class:`SocksUDPSocket`, a stand-in for
:class:`~msgwatch.steps.net.UDPSocket` that the call replay can use: it adds the RFC 1928 §7
header to what it sends, removes it from what it receives, drops fragments, malformed datagrams
and datagrams from anyone but the destination through the relay (the kernel drops those from
anyone but the relay: the socket is connected to it), and keeps the TCP control connection open
for its life (its end is reported once as ``socks_udp_association_closed``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from msgwatch.failures import (
    EOF_ERROR,
    HTTP_CONNECT_BAD_REPLY,
    HTTP_CONNECT_REFUSED,
    SOCKS_AUTH_FAILED,
    SOCKS_BAD_REPLY,
    SOCKS_COMMAND_NOT_SUPPORTED,
    SOCKS_NO_ACCEPTABLE_METHOD,
    SOCKS_REFUSED,
    SOCKS_UDP_CLOSED,
    TIMEOUT,
    ProbeFailure,
    classify,
)
from msgwatch.fence import check_destination
from msgwatch.steps.net import TCPConn, UDPSocket, endpoint, tcp_connect, udp_open
from msgwatch.steps.trace import Trace

VERSION = 5
NO_AUTH = 0x00
USER_PASS = 0x02
NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
CMD_UDP_ASSOCIATE = 0x03
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
REP_NAMES = {
    1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired",
    7: "command not supported", 8: "address type not supported",
}  # fmt: skip
MAX_HTTP_HEAD = 8 * 1024
"""Bytes of an HTTP CONNECT answer's status line and headers read at most."""
HTTP_TERMINATOR = b"\r\n\r\n"
MAX_CONTROL_BYTES = 4096
"""Bytes a SOCKS proxy may send on a UDP association's control connection (it should send none)
before the association is given up."""

Address = tuple[str, int]


# -- the codec (pure) ------------------------------------------------------------------------


def _ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(ip)
    except ValueError as exc:
        raise ValueError(f"not an IP address: {ip!r}") from exc


def check_credentials(username: str | None, password: str | None) -> list[str]:
    """Problems with a username/password pair for RFC 1929 ([] when fine or both absent)."""
    if username is None and password is None:
        return []
    if username is None or password is None:
        return ["username and password go together"]
    problems = []
    for what, value in (("username", username), ("password", password)):
        if not 1 <= len(value.encode()) <= 255:
            problems.append(f"{what} must be 1 to 255 bytes")
    return problems


def greeting(with_password: bool) -> bytes:
    """The client's method selection message."""
    methods = bytes([NO_AUTH, USER_PASS]) if with_password else bytes([NO_AUTH])
    return bytes([VERSION, len(methods)]) + methods


def parse_method(data: bytes, with_password: bool) -> int:
    """The method the proxy chose (2 bytes); raises ProbeFailure for anything not offered."""
    if len(data) != 2 or data[0] != VERSION:
        raise ProbeFailure(SOCKS_BAD_REPLY, f"method selection {data[:2].hex()}")
    if data[1] == NO_ACCEPTABLE:
        raise ProbeFailure(SOCKS_NO_ACCEPTABLE_METHOD)
    if data[1] == NO_AUTH or (with_password and data[1] == USER_PASS):
        return data[1]
    raise ProbeFailure(SOCKS_BAD_REPLY, f"method {data[1]:#04x} was not offered")


def auth_request(username: str, password: str) -> bytes:
    """RFC 1929's username/password request."""
    if check_credentials(username, password):
        raise ValueError("; ".join(check_credentials(username, password)))
    user, pw = username.encode(), password.encode()
    return bytes([1, len(user)]) + user + bytes([len(pw)]) + pw


def parse_auth(data: bytes) -> None:
    """RFC 1929's answer (2 bytes): returns when accepted."""
    if len(data) != 2 or data[0] != 1:
        raise ProbeFailure(SOCKS_BAD_REPLY, f"auth reply {data[:2].hex()}")
    if data[1] != 0:
        raise ProbeFailure(SOCKS_AUTH_FAILED, f"status {data[1]}")


def pack_address(ip: str, port: int) -> bytes:
    """ATYP, address and port of an IP literal."""
    address = _ip(ip)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return bytes([atyp]) + address.packed + struct.pack("!H", port)


def request(command: int, ip: str, port: int) -> bytes:
    """A request (CONNECT, UDP ASSOCIATE) for ``ip:port``."""
    return bytes([VERSION, command, 0]) + pack_address(ip, port)


def address_length(atyp: int, first: int) -> int:
    """Bytes of BND.ADDR + BND.PORT after the reply's ATYP, given the address's first byte
    (a domain's length)."""
    if atyp == ATYP_IPV4:
        return 4 + 2
    if atyp == ATYP_IPV6:
        return 16 + 2
    if atyp == ATYP_DOMAIN:
        return 1 + first + 2
    raise ProbeFailure(SOCKS_BAD_REPLY, f"address type {atyp}")


def parse_reply_head(data: bytes) -> tuple[int, int]:
    """VER, REP, RSV, ATYP (4 bytes) → (REP, ATYP); raises for a reply that is not SOCKS5."""
    if len(data) != 4 or data[0] != VERSION or data[2] != 0:
        raise ProbeFailure(SOCKS_BAD_REPLY, f"reply {data[:4].hex()}")
    if data[3] not in (ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6):
        raise ProbeFailure(SOCKS_BAD_REPLY, f"address type {data[3]}")
    return data[1], data[3]


def reply_failure(rep: int) -> ProbeFailure | None:
    """The failure for reply code ``rep`` (None for success)."""
    if rep == 0:
        return None
    name = REP_NAMES.get(rep, f"reply {rep}")
    if rep == 7:
        return ProbeFailure(SOCKS_COMMAND_NOT_SUPPORTED, name)
    return ProbeFailure(SOCKS_REFUSED, name)


def parse_bound(atyp: int, data: bytes) -> Address:
    """BND.ADDR and BND.PORT (``data`` as long as :func:`address_length` said)."""
    if atyp == ATYP_IPV4:
        return str(ipaddress.IPv4Address(data[:4])), struct.unpack("!H", data[4:6])[0]
    if atyp == ATYP_IPV6:
        return str(ipaddress.IPv6Address(data[:16])), struct.unpack("!H", data[16:18])[0]
    name = data[1 : 1 + data[0]].decode("ascii", "replace")
    return name, struct.unpack("!H", data[-2:])[0]


def udp_header(ip: str, port: int) -> bytes:
    """RFC 1928 §7's header (RSV, FRAG 0) for a datagram to ``ip:port``."""
    return b"\x00\x00\x00" + pack_address(ip, port)


def parse_udp(data: bytes) -> tuple[Address, bytes] | None:
    """(source, payload) of a relayed datagram; None for a fragment or a malformed header."""
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0:
        return None
    atyp = data[3]
    if atyp == ATYP_IPV4:
        end = 4 + 4 + 2
    elif atyp == ATYP_IPV6:
        end = 4 + 16 + 2
    else:  # a domain as the source of a reply is nothing a connected socket can match
        return None
    if len(data) < end:
        return None
    return parse_bound(atyp, data[4:end]), data[end:]


def connect_request(ip: str, port: int) -> bytes:
    """HTTP/1.1 CONNECT for ``ip:port``."""
    _ip(ip)
    target = endpoint(ip, port)
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii")


def parse_connect_status(head: bytes) -> int:
    """The status of an HTTP CONNECT answer's head (status line and headers)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise ProbeFailure(HTTP_CONNECT_BAD_REPLY, f"status line {line[:60]!r}")
    return int(parts[1])


# -- I/O -------------------------------------------------------------------------------------


async def read_exactly(conn: TCPConn, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes (never more); ``eof_error`` when the peer closes first."""
    out = bytearray()
    while len(out) < size:
        data = await conn.read(deadline, size - len(out))
        if not data:
            raise ProbeFailure(EOF_ERROR, f"closed after {len(out)} of {size} bytes")
        out += data
    return bytes(out)


async def socks5_handshake(
    conn: TCPConn, deadline: float, username: str | None = None, password: str | None = None
) -> int:
    """The method selection, and RFC 1929's sub-negotiation when the proxy chose it; returns the
    method (0 no authentication, 2 username/password)."""
    with_password = username is not None and password is not None
    await conn.write(greeting(with_password), deadline)
    method = parse_method(await read_exactly(conn, 2, deadline), with_password)
    if method == USER_PASS and username is not None and password is not None:
        await conn.write(auth_request(username, password), deadline)
        parse_auth(await read_exactly(conn, 2, deadline))
    return method


async def socks5_request(
    conn: TCPConn, command: int, ip: str, port: int, deadline: float
) -> Address:
    """Send a request, read its reply; returns BND.ADDR, BND.PORT. A CONNECT's destination is
    checked against the fence first (a UDP ASSOCIATE's is the client's own, unspecified, address)."""
    if command == CMD_CONNECT:
        check_destination(ip)
    await conn.write(request(command, ip, port), deadline)
    rep, atyp = parse_reply_head(await read_exactly(conn, 4, deadline))
    failure = reply_failure(rep)
    if failure is not None:
        raise failure
    first = await read_exactly(conn, 1, deadline)
    rest = await read_exactly(conn, address_length(atyp, first[0]) - 1, deadline)
    return parse_bound(atyp, first + rest)


async def socks5_connect(
    trace: Trace,
    txid: int,
    proxy_ip: str,
    proxy_port: int,
    ip: str,
    port: int,
    deadline: float,
    *,
    username: str | None = None,
    password: str | None = None,
) -> TCPConn:
    """A traced TCP connection to ``ip:port`` through the SOCKS5 proxy, positioned after the
    proxy's reply."""
    check_destination(ip)
    _ip(ip)
    conn = await tcp_connect(trace, txid, proxy_ip, proxy_port, deadline)
    try:
        await socks5_handshake(conn, deadline, username, password)
        await socks5_request(conn, CMD_CONNECT, ip, port, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


async def _read_head(conn: TCPConn, deadline: float) -> bytes:
    """The answer's head up to and with its blank line, nothing past it (module notes), traced
    as one ``read``. The status line's first bytes are checked as soon as they come: a proxy
    that answers something else than HTTP fails at once, not at the deadline."""
    reader = conn._reader  # the connection's own buffer: no byte past the head is consumed
    trace, t0 = conn.trace, conn.trace.now()
    head = b""
    failure: str | None = None
    try:
        async with asyncio.timeout_at(deadline):
            head = await reader.readexactly(len(b"HTTP/"))
            if head != b"HTTP/":
                raise ProbeFailure(HTTP_CONNECT_BAD_REPLY, f"status line {head!r}")
            head += await reader.readuntil(HTTP_TERMINATOR)
        if len(head) > MAX_HTTP_HEAD:
            raise ProbeFailure(HTTP_CONNECT_BAD_REPLY, f"a head of {len(head)} bytes")
        return head
    except asyncio.IncompleteReadError as exc:
        head += exc.partial
        if head:
            failure = HTTP_CONNECT_BAD_REPLY
            raise ProbeFailure(failure, f"closed after {len(head)} bytes") from exc
        failure = EOF_ERROR
        raise ProbeFailure(failure, "closed before answering") from exc
    except asyncio.LimitOverrunError as exc:
        failure = HTTP_CONNECT_BAD_REPLY
        raise ProbeFailure(failure, f"no end of head in {MAX_HTTP_HEAD} bytes") from exc
    except Exception as exc:
        failure = classify(exc)
        raise
    finally:
        trace.received(len(head))
        trace.event(
            "read", txid=conn.txid, t0=t0, address=conn.address, proto="tcp",
            num_bytes=len(head), failure=failure,
        )  # fmt: skip


async def http_connect_exchange(conn: TCPConn, ip: str, port: int, deadline: float) -> int:
    """Send CONNECT for ``ip:port`` and read the answer's head, never past its blank line;
    returns the 2xx status, raises ``http_connect_refused`` for another one."""
    check_destination(ip)
    await conn.write(connect_request(ip, port), deadline)
    status = parse_connect_status(await _read_head(conn, deadline))
    if not 200 <= status <= 299:
        raise ProbeFailure(HTTP_CONNECT_REFUSED, f"status {status}")
    return status


async def http_connect(
    trace: Trace, txid: int, proxy_ip: str, proxy_port: int, ip: str, port: int, deadline: float
) -> TCPConn:
    """A traced TCP connection to ``ip:port`` through the HTTP proxy's CONNECT."""
    check_destination(ip)
    _ip(ip)
    conn = await tcp_connect(trace, txid, proxy_ip, proxy_port, deadline)
    try:
        await http_connect_exchange(conn, ip, port, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


# -- UDP ASSOCIATE ---------------------------------------------------------------------------


class SocksUDPSocket(UDPSocket):
    """A connected UDP "socket" to one destination through a SOCKS5 relay, with
    :class:`~msgwatch.steps.net.UDPSocket`'s methods (what the call replay calls). It wraps a
    real ``UDPSocket`` connected to the relay and the association's TCP control connection, and
    owns both: :meth:`close` closes them. ``address`` is the destination's."""

    def __init__(self, relay: UDPSocket, control: TCPConn, ip: str, port: int) -> None:
        # The state lives in ``relay``; UDPSocket.__init__ (which takes a transport) is not run.
        self._relay = relay
        self._control = control
        self._header = udp_header(ip, port)
        self._source = (str(_ip(ip)), port)
        self.trace = relay.trace
        self.txid = relay.txid
        self.address = endpoint(ip, port)
        self.dropped = 0
        """Datagrams from the relay that were fragments, malformed, or from someone else."""
        self.control_failure: str | None = None
        self._reported = False
        self._watch = asyncio.ensure_future(self._watch_control())

    async def _watch_control(self) -> None:
        """Wait for the control connection's end (a proxy sends nothing on it)."""
        loop = asyncio.get_running_loop()
        seen = 0
        try:
            while seen <= MAX_CONTROL_BYTES:
                data = await self._control.read(loop.time() + 86400.0)
                if not data:
                    break
                seen += len(data)
            self.control_failure = SOCKS_UDP_CLOSED
        except Exception as exc:
            self.control_failure = f"{SOCKS_UDP_CLOSED}: {classify(exc)}"

    def send(self, data: bytes, quiet: bool = False) -> None:
        t0 = self.trace.now()
        try:
            self._relay.send(self._header + data, quiet=True)
        except ProbeFailure as exc:
            if not quiet:
                self.trace.event(
                    "write_to", txid=self.txid, t0=t0, address=self.address, proto="udp",
                    num_bytes=0, failure=exc.failure,
                )  # fmt: skip
            raise
        if not quiet:
            self.trace.event(
                "write_to", txid=self.txid, t0=t0, address=self.address, proto="udp",
                num_bytes=len(data),
            )  # fmt: skip

    async def recv(self, deadline: float, quiet: bool = False) -> bytes:
        t0 = self.trace.now()
        failure: str | None = None
        size: int | None = None
        try:
            while True:
                if self.control_failure is not None and not self._reported:
                    self._reported = True
                    raise ProbeFailure(SOCKS_UDP_CLOSED, self.control_failure)
                try:
                    data = await self._relay.recv(deadline, quiet=True)
                except TimeoutError:
                    failure = TIMEOUT
                    raise
                parsed = parse_udp(data)
                if parsed is None or parsed[0] != self._source:
                    self.dropped += 1
                    continue
                size = len(parsed[1])
                return parsed[1]
        except ProbeFailure as exc:
            failure = exc.failure
            raise
        except Exception as exc:
            failure = failure or classify(exc)
            raise
        finally:
            if not quiet:
                self.trace.event(
                    "read_from", txid=self.txid, t0=t0, address=self.address, proto="udp",
                    num_bytes=size, failure=failure,
                )  # fmt: skip

    @property
    def queue_drops(self) -> int:
        return self._relay.queue_drops

    @property
    def queued(self) -> int:
        return self._relay.queued

    def set_receive_buffer(self, size: int) -> None:
        self._relay.set_receive_buffer(size)

    def kernel_counters(self) -> tuple[int, int] | None:
        return self._relay.kernel_counters()

    @property
    def local_port(self) -> int | None:
        return self._relay.local_port

    def close(self) -> None:
        self._watch.cancel()
        self._relay.close()
        self._control.close()


def relay_address(bound: Address, proxy_ip: str) -> str:
    """The relay's IP from a UDP ASSOCIATE reply: the proxy's own when it names the unspecified
    address; ``socks_bad_reply`` for a name."""
    try:
        address = ipaddress.ip_address(bound[0])
    except ValueError as exc:
        raise ProbeFailure(SOCKS_BAD_REPLY, "UDP relay named by a host name") from exc
    if address.is_unspecified:
        return proxy_ip
    return str(address)


async def socks5_udp(
    trace: Trace,
    txid: int,
    proxy_ip: str,
    proxy_port: int,
    ip: str,
    port: int,
    deadline: float,
    *,
    username: str | None = None,
    password: str | None = None,
) -> SocksUDPSocket:
    """A UDP association through the SOCKS5 proxy for datagrams to ``ip:port``."""
    check_destination(ip)
    _ip(ip)
    control = await tcp_connect(trace, txid, proxy_ip, proxy_port, deadline)
    relay: UDPSocket | None = None
    try:
        await socks5_handshake(control, deadline, username, password)
        unspecified = "::" if ":" in proxy_ip else "0.0.0.0"
        bound = await socks5_request(control, CMD_UDP_ASSOCIATE, unspecified, 0, deadline)
        if not 1 <= bound[1] <= 0xFFFF:
            raise ProbeFailure(SOCKS_BAD_REPLY, f"UDP relay port {bound[1]}")
        relay = await udp_open(trace, txid, relay_address(bound, proxy_ip), bound[1])
        return SocksUDPSocket(relay, control, ip, port)
    except BaseException:
        if relay is not None:
            relay.close()
        control.close()
        raise

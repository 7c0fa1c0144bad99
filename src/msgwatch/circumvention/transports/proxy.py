"""SOCKS5 and HTTP CONNECT proxies, stage by stage (:mod:`msgwatch.steps.socks` does the talking).

Stages (:data:`msgwatch.circumvention.model.STAGES`):

- ``resolve``: only when the entry's address is a name (:func:`vpnkit.resolve`);
- ``connect``: TCP to the proxy;
- ``handshake``: SOCKS5's method selection (and RFC 1929's username/password when the entry has
  them); for HTTP CONNECT, the ``CONNECT`` exchange for the test helper's echo (HTTP has no other);
- ``tunnel``: SOCKS5's ``CONNECT`` to the helper's echo, then, for both, a short echo round trip
  (:data:`PROBE_BYTES` printable bytes back unchanged): a proxy that answers "success" for any
  address without connecting fails here (``generic_timeout_error``, ``eof_error`` or
  ``tunnel_echo_mismatch``), not in ``transfer``.

Then, for SOCKS5 unless ``params.udp`` is false, UDP ASSOCIATE is tried (bounded by
:data:`UDP_CHECK_SECONDS`) and one datagram sent to the helper's UDP echo: the test key
``udp_associate`` records ``{"failure": ..., "echo": bool}`` and the tunnel carries UDP only when
the echo came back. A proxy without UDP (microsocks) answers ``socks_command_not_supported``.

The tunnel opens a fresh proxied connection (or association) for each stream (or UDP socket);
it owns no process and nothing to stop. A tunnel through a local proxy (``local``: Shadowsocks's
``ss-local`` on 127.0.0.1) reports any failure of the exchange with that proxy as
``client_failed``: a refused connection to it, a SOCKS answer it did not give, are the client
program's, never the network's (a failure of the data once through it still is).

Params: ``username``, ``password`` (SOCKS5 only, together, 1–255 bytes each), ``udp`` (bool,
SOCKS5 only). HTTP CONNECT takes none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from msgwatch.circumvention.model import Context, Entry, Run, Tunnel
from msgwatch.circumvention.transfer import ECHO_MISMATCH, pattern
from msgwatch.circumvention.transports import vpnkit
from msgwatch.failures import NOT_ALLOWED, ProbeFailure, classify
from msgwatch.fence import check_destination
from msgwatch.steps import socks
from msgwatch.steps.net import TCPConn, UDPSocket, tcp_connect
from msgwatch.steps.trace import Trace

PROBE_BYTES = 32
"""Bytes of the tunnel stage's echo round trip."""
UDP_CHECK_SECONDS = 4.0
"""At most this long for the UDP ASSOCIATE check (association and one echoed datagram)."""
UDP_NOT_CARRIED = "udp_not_carried"
CLIENT_FAILED = vpnkit.CLIENT_FAILED
KNOWN_PARAMS = {"socks5": {"username", "password", "udp"}, "http_connect": set()}


def check_params(entry: Entry) -> list[str]:
    """Problems with the entry's params ([] when fine)."""
    if entry.type not in KNOWN_PARAMS:
        return [f"not a proxy type: {entry.type!r}"]
    params = entry.params
    problems = [f"unknown param {key!r}" for key in sorted(set(params) - KNOWN_PARAMS[entry.type])]
    username, password = params.get("username"), params.get("password")
    if username is not None and not isinstance(username, str):
        problems.append("username must be a string")
    elif password is not None and not isinstance(password, str):
        problems.append("password must be a string")
    else:
        problems += socks.check_credentials(username, password)
    if "udp" in params and not isinstance(params["udp"], bool):
        problems.append("udp must be true or false")
    if entry.protocol != "tcp":
        problems.append("a proxy is reached over tcp")
    return problems


async def echo_once(conn: TCPConn, deadline: float) -> None:
    """Send :data:`PROBE_BYTES` and read them back unchanged."""
    probe = pattern(0, PROBE_BYTES)
    await conn.write(probe, deadline)
    got = await socks.read_exactly(conn, PROBE_BYTES, deadline)
    if got != probe:
        raise ProbeFailure(ECHO_MISMATCH, "the echo differs from what was sent")


@dataclass
class ProxyTunnel:
    """Streams (and, for SOCKS5 with UDP, datagrams) through one proxy."""

    kind: str
    ip: str
    port: int
    username: str | None = None
    password: str | None = None
    udp: bool = False
    local: bool = False
    """The proxy is a client program of the probe's (module notes): its failures are local."""

    @property
    def carries_udp(self) -> bool:
        return self.udp

    async def open_stream(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> TCPConn:
        if self.kind == "http_connect":
            return await socks.http_connect(trace, txid, self.ip, self.port, ip, port, deadline)
        check_destination(ip)
        with self._local_hop():
            return await socks.socks5_connect(
                trace, txid, self.ip, self.port, ip, port, deadline,
                username=self.username, password=self.password,
            )  # fmt: skip

    async def open_udp(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> UDPSocket:
        if not self.udp:
            raise ProbeFailure(UDP_NOT_CARRIED, f"{self.kind} proxy carries no UDP here")
        check_destination(ip)
        with self._local_hop():
            return await socks.socks5_udp(
                trace, txid, self.ip, self.port, ip, port, deadline,
                username=self.username, password=self.password,
            )  # fmt: skip

    @contextlib.contextmanager
    def _local_hop(self) -> Iterator[None]:
        """For a local proxy: its failures as ``client_failed`` (the fence's stay)."""
        try:
            yield
        except Exception as exc:
            failure = classify(exc)
            if not self.local or failure == NOT_ALLOWED:
                raise
            where = f"{self.ip}:{self.port}"
            raise ProbeFailure(CLIENT_FAILED, f"the local proxy at {where}: {failure}") from exc


async def udp_check(tunnel: ProxyTunnel, ctx: Context, trace: Trace) -> dict[str, Any]:
    """One datagram through a UDP association to the helper's UDP echo: ``{"failure", "echo",
    "seconds"}`` (never raises)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + UDP_CHECK_SECONDS
    result: dict[str, Any] = {"failure": None, "echo": False}
    sock: UDPSocket | None = None
    try:
        sock = await tunnel.open_udp(
            trace, trace.new_transaction(), ctx.helper, ctx.helper_port, deadline
        )
        payload = pattern(0, PROBE_BYTES)
        sock.send(payload)
        while True:  # the helper may echo stray datagrams of others: wait for ours
            if await sock.recv(deadline) == payload:
                result["echo"] = True
                break
    except Exception as exc:
        result["failure"] = classify(exc)
    finally:
        if sock is not None:
            sock.close()
    result["seconds"] = round(loop.time() - started, 3)
    return result


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Connect, negotiate, CONNECT to the helper's echo and check it answers; yields the tunnel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.budget(entry.type)
    problems = check_params(entry)
    if problems:
        raise vpnkit.bad_params(run, problems)
    username, password = entry.params.get("username"), entry.params.get("password")
    ip = await vpnkit.resolve(entry, ctx, run, deadline)
    trace = run.trace
    txid = trace.new_transaction()
    async with run.stage("connect") as detail:
        detail["address"] = ip
        conn = await tcp_connect(trace, txid, ip, entry.port, deadline)
    try:
        async with run.stage("handshake") as detail:
            if entry.type == "http_connect":
                detail["status"] = await socks.http_connect_exchange(
                    conn, ctx.helper, ctx.helper_port, deadline
                )
            else:
                detail["method"] = await socks.socks5_handshake(conn, deadline, username, password)
        async with run.stage("tunnel") as detail:
            if entry.type == "socks5":
                bound = await socks.socks5_request(
                    conn, socks.CMD_CONNECT, ctx.helper, ctx.helper_port, deadline
                )
                detail["bound"] = list(bound) if not entry.private else None
            await echo_once(conn, deadline)
            detail["echo_bytes"] = PROBE_BYTES
    finally:
        conn.close()
    tunnel = ProxyTunnel(entry.type, ip, entry.port, username, password)
    if entry.type == "socks5" and entry.params.get("udp", True):
        tunnel.udp = True
        check = await udp_check(tunnel, ctx, trace)
        tunnel.udp = bool(check["echo"])
        run.keys["udp_associate"] = check
    yield tunnel

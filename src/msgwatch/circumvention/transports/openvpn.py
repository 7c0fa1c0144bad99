"""OpenVPN over UDP or TCP with Debian's ``openvpn`` client, stage by stage from its log.

The client runs in the probe's namespace with a TUN device of its own (:mod:`.vpnkit`) and is told
to change nothing else: ``--route-nopull`` and ``--pull-filter ignore`` for pushed routes,
redirect-gateway and DNS, ``--ifconfig-noexec`` so that it configures no address either (a server
pushing ``ifconfig 10.0.0.2 255.0.0.0`` would otherwise get a connected route for a /8). The probe
gives the device the pushed address as a ``/32`` and sends through it by binding its sockets to it.

Stages, read from the client's output (``--verb 3``), each line bounded (:class:`OpenVPNLog`, pure):

- ``connect`` (TCP only): "Attempting to establish TCP connection" → "TCP connection
  established"; a refusal, reset or unreachable network ends it with that failure;
- ``handshake``: the control channel's TLS up to "Peer Connection Initiated" (over UDP it starts
  with the process: there is no connect); "TLS key negotiation failed" (no answer) is a timeout,
  a certificate the client rejects an ``ssl_*`` failure, an ICMP refusal ``connection_refused``;
- ``tunnel``: the pushed options up to "Initialization Sequence Completed", then the address set
  (only a private one, :func:`vpnkit.address_problem`; another is ``openvpn_no_address``).

An OpenSSL or certificate error the client reports before anything came from the server (before
"TCP connection established" or "TLS: Initial packet from") is its own: a local ca/cert/key file
it cannot load ("PEM ... no start line"), not the network's: ``client_failed``, like "Cannot
load", "Options error" and a fatal exit. (A "TLS Error" then, e.g. garbage that fails the HMAC,
came from the network and stays ``ssl_failed_handshake``.)

The test keys follow OONI's ``openvpn`` (ts-040): ``tunnel`` = ``"openvpn"`` and one
``openvpn_handshake`` record (endpoint, ip, port, transport, provider, ``openvpn_options``
(cipher, auth, compression), t0, t, handshake_time, transaction_id, failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention.model import Context, Entry, Run, StageFailed, Tunnel
from msgwatch.circumvention.transports import vpnkit as V
from msgwatch.failures import ProbeFailure

CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305", "AES-256-CBC", "AES-128-CBC")
AUTHS = ("SHA1", "SHA256", "SHA384", "SHA512")
PARAMS = {"ca", "cert", "key", "cipher", "auth"}
MAX_FILE = 1024 * 1024
"""Bytes a certificate or key file may have."""
AUTH_FAILED = "openvpn_auth_failed"
NO_ADDRESS = "openvpn_no_address"
"""The server completed the tunnel without pushing a usable IPv4 address (``ifconfig``)."""

_SOCKET_ERRORS = (
    ("Connection refused", F.CONNECTION_REFUSED), ("Connection reset", F.CONNECTION_RESET),
    ("Connection timed out", F.TIMEOUT), ("No route to host", F.HOST_UNREACHABLE),
    ("Network is unreachable", F.NETWORK_UNREACHABLE),
)  # fmt: skip
_LOCAL_ERRORS = ("Cannot load", "Cannot open", "Error: private key password", "Options error",
                 "Exiting due to fatal error")  # fmt: skip
"""Phrases of errors that are the client's own (its files, its options), whenever they come."""
_IFCONFIG = re.compile(r"(?:^|,)ifconfig (\S+) (\S+)(?:,|'|$)")


@dataclass
class OpenVPNLog:
    """What the client's output says so far. :meth:`feed` takes one line; no I/O, no clock."""

    connecting: bool = False
    connected: bool = False
    initial_packet: bool = False
    handshake_done: bool = False
    tunnel_up: bool = False
    address: str | None = None
    """The IPv4 address pushed (``ifconfig``), when it is a usable one."""
    failure: str | None = None
    """The first failure the client reported."""
    evidence: list[str] = field(default_factory=list)
    """The lines that carried a failure (at most 5)."""

    def feed(self, line: str) -> None:
        text = line[:4096]
        failure = self._failure(text)
        if failure is not None:
            if self.failure is None:
                self.failure = failure
            if len(self.evidence) < 5:
                self.evidence.append(text[:300])
            return
        if self.failure is not None:  # no progress after a failure: it happened at that stage
            return
        if "Attempting to establish TCP connection" in text:
            self.connecting = True
        elif "TCP connection established" in text:
            self.connected = True
        elif "TLS: Initial packet from" in text:
            self.initial_packet = True
        elif "Peer Connection Initiated" in text:
            self.handshake_done = True
        elif "PUSH_REPLY" in text and "Received control message" in text:
            self.address = pushed_address(text)
        elif "Initialization Sequence Completed" in text:
            self.tunnel_up = True

    @property
    def started(self) -> bool:
        """Whether anything came from the server yet (a TCP connection, a first packet)."""
        return self.connected or self.initial_packet

    def _failure(self, text: str) -> str | None:
        failure = self._kind(text)
        local = "OpenSSL: error" in text or "VERIFY" in text
        if failure is not None and failure.startswith("ssl_") and local and not self.started:
            return V.CLIENT_FAILED  # nothing came from the server: the client's own files
        return failure

    def _kind(self, text: str) -> str | None:
        if any(phrase in text for phrase in _LOCAL_ERRORS):
            return V.CLIENT_FAILED
        if "AUTH_FAILED" in text:
            return AUTH_FAILED
        if "VERIFY" in text and "ERROR" in text:
            if "unable to get local issuer" in text or "self-signed" in text:
                return F.SSL_UNKNOWN_AUTHORITY
            return F.SSL_INVALID_CERTIFICATE
        if "TLS key negotiation failed" in text or "Server poll timeout" in text:
            return F.TIMEOUT  # no answer within the hand window, or over UDP: nothing came back
        if "TLS Error" in text or "TLS_ERROR" in text or "OpenSSL: error" in text:
            return F.SSL_FAILED_HANDSHAKE
        for phrase, failure in _SOCKET_ERRORS:
            if phrase in text:
                return failure
        return None


def pushed_address(text: str) -> str | None:
    """The address of a ``PUSH_REPLY``'s ``ifconfig`` option, if it is an IPv4 address a tunnel
    may have (:func:`vpnkit.address_problem`: a private one; a server pushing a public address,
    or the helper's, would take over the probe's traffic to it)."""
    match = _IFCONFIG.search(text)
    if match is None:
        return None
    try:
        address = ipaddress.IPv4Address(match.group(1))
    except ValueError:
        return None
    if V.address_problem(str(address)) is not None:
        return None
    return str(address)


def _file_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value or value.startswith("-") or "\n" in value:
        return f"{name}: a file path is needed"
    if not os.path.isabs(value):
        return f"{name}: the path must be absolute"
    try:
        size = os.path.getsize(value)
    except OSError:
        return f"{name}: {value} cannot be read"
    if size > MAX_FILE:
        return f"{name}: {value} is larger than {MAX_FILE} bytes"
    return None


def check_params(entry: Entry) -> list[str]:
    """Problems with an ``openvpn`` entry: ``ca``, ``cert``, ``key`` (absolute paths of readable
    PEM files), optional ``cipher`` (:data:`CIPHERS`) and ``auth`` (:data:`AUTHS`)."""
    problems = []
    if entry.protocol not in ("udp", "tcp"):
        problems.append(f"protocol: udp or tcp, not {entry.protocol!r}")
    if not 0 < entry.port < 65536:
        problems.append(f"port: {entry.port} is not a port")
    params = entry.params
    unknown = sorted(str(k) for k in params if k not in PARAMS)
    if unknown:
        problems.append(f"unknown params: {', '.join(unknown)[:200]}")
    for name in ("ca", "cert", "key"):
        problem = _file_problem(name, params.get(name))
        if problem:
            problems.append(problem)
    if params.get("cipher", CIPHERS[0]) not in CIPHERS:
        problems.append(f"cipher: one of {', '.join(CIPHERS)}")
    if params.get("auth", "SHA256") not in AUTHS:
        problems.append(f"auth: one of {', '.join(AUTHS)}")
    return problems


def client_argv(exe: str, entry: Entry, ip: str, device: str, budget: float) -> list[str]:
    """The client's command line: no route, no DNS, no address set by the client itself."""
    p, v6 = entry.params, ":" in ip
    proto = (
        f"udp{'6' if v6 else '4'}" if entry.protocol == "udp" else f"tcp{'6' if v6 else '4'}-client"
    )
    seconds = str(max(1, int(budget)))
    argv = [
        exe, "--client", "--nobind", "--dev", device, "--dev-type", "tun", "--proto", proto,
        "--remote", ip, str(entry.port), "--ca", p["ca"], "--cert", p["cert"], "--key", p["key"],
        "--remote-cert-tls", "server", "--data-ciphers", p.get("cipher", CIPHERS[0]),
        "--auth", p.get("auth", "SHA256"),
        "--route-nopull", "--ifconfig-noexec", "--script-security", "1",
        "--pull-filter", "ignore", "redirect-gateway", "--pull-filter", "ignore", "dhcp-option",
        "--pull-filter", "ignore", "route", "--pull-filter", "ignore", "block-outside-dns",
        "--connect-retry-max", "1", "--resolv-retry", "0", "--connect-timeout", seconds,
        "--hand-window", seconds, "--auth-nocache", "--verb", "3", "--suppress-timestamps",
    ]  # fmt: skip
    if entry.protocol == "udp":
        argv += ["--explicit-exit-notify", "1"]
    return argv


async def until(
    client: V.Client, log: OpenVPNLog, done: Callable[[], bool], deadline: float
) -> None:
    """Wait until ``done()`` (read from the log); a failure the client reported, its exit or the
    deadline ends the wait with that failure."""
    while True:
        if done():  # reached before any failure (the log stops progressing at one)
            return
        if log.failure is not None:
            raise ProbeFailure(log.failure, "; ".join(log.evidence))
        if client.exited:
            await client.drain()  # its last lines may say why it stopped: they decide first
            if done():
                return
            if log.failure is not None:
                raise ProbeFailure(log.failure, "; ".join(log.evidence))
            raise await client.exit_failure()
        await client.wait_change(deadline)


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Start ``openvpn``, record connect/handshake/tunnel, yield a tunnel on its TUN device."""
    loop = asyncio.get_running_loop()
    budget = ctx.budget(entry.type)
    deadline = loop.time() + budget
    first = "connect" if entry.protocol == "tcp" else "handshake"
    problems = check_params(entry)
    if problems:
        raise V.bad_params(run, problems, first)
    ip = await V.resolve(entry, ctx, run, deadline)
    txid = run.trace.new_transaction()
    handshake: dict[str, Any] = {
        "endpoint": f"openvpn://{entry.name}/?address={ip}:{entry.port}&transport={entry.protocol}",
        "ip": ip, "port": entry.port, "transport": entry.protocol, "provider": entry.name,
        "openvpn_options": {"cipher": entry.params.get("cipher", CIPHERS[0]),
                            "auth": entry.params.get("auth", "SHA256"), "compression": "none"},
        "t0": run.trace.now(), "t": None, "handshake_time": None, "transaction_id": txid,
        "failure": None,
    }  # fmt: skip
    run.keys["tunnel"] = "openvpn"
    run.keys.setdefault("openvpn_handshake", []).append(handshake)
    log = OpenVPNLog()
    client = V.Client("openvpn", log.feed)
    device = V.device_name()
    directory = V.workdir(ctx, entry)
    ip_exe = V.find_program("ip") or "ip"
    try:
        try:
            async with run.stage(first) as detail:
                argv = client_argv(V.executable(ctx, "openvpn"), entry, ip, device, budget)
                detail["device"] = device
                await client.start(argv, directory, [ip])
                if entry.protocol == "tcp":
                    await until(client, log, lambda: log.connected, deadline)
                else:
                    await until(client, log, lambda: log.handshake_done, deadline)
            if entry.protocol == "tcp":
                async with run.stage("handshake"):
                    await until(client, log, lambda: log.handshake_done, deadline)
            handshake["t"] = run.trace.now()
            handshake["handshake_time"] = round(handshake["t"] - handshake["t0"], 6)
            async with run.stage("tunnel") as detail:
                await until(client, log, lambda: log.tunnel_up, deadline)
                if log.address is None:
                    raise ProbeFailure(NO_ADDRESS, "no usable ifconfig in PUSH_REPLY")
                await V.set_address(ip_exe, device, log.address, 1500, deadline,
                                    avoid=(ip, ctx.helper))  # fmt: skip
                detail["device"], detail["address"] = device, log.address
        except StageFailed as exc:
            handshake["t"] = handshake["t"] or run.trace.now()
            handshake["failure"] = handshake["failure"] or exc.record.failure
            exc.record.detail.setdefault("log", client.tail(5))
            raise
        yield V.DeviceTunnel(device)
    finally:
        await V.release(client, directory, ip_exe, device)

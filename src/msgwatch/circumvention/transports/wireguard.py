"""WireGuard with Debian's ``wireguard-go`` (user space, on TUN) and ``wg``, stage by stage.

The client is ``wireguard-go -f <device>`` in the probe's namespace (:mod:`.vpnkit`: a TUN device
of its own, stopped on every way out); ``wg set`` gives it the private key (a file), the peer's
public key, the endpoint and the peer's allowed IPs (``wg`` adds no route: only ``wg-quick``
would); the device gets the tunnel address as a host prefix (``/32``, ``/128``; a private address
only, :func:`vpnkit.address_problem`) and is brought up. Nothing else changes.

That set-up is local (the program, its control socket, ``wg set``, ``ip addr``) and done before
any stage, within :data:`SETUP_SECONDS`: trouble there is ``client_failed`` (or
``client_not_found``) on the ``handshake`` stage, never a timeout of the network's. The allowed
IPs must cover the test helper (else nothing would go through the tunnel): ``bad_params``.

WireGuard has no connection and says nothing until a packet must go through, so the stages are
made by sending one:

- ``handshake``: one UDP datagram to the test helper's echo, sent through the device (a socket
  bound to it), makes ``wireguard-go`` send its handshake initiation; the stage ends when
  ``wg show <device> latest-handshakes`` is non-zero (the server's response came back and was
  accepted), and fails at the budget (no response: ``generic_timeout_error``);
- ``tunnel``: that datagram's echo came back through the tunnel (a fresh datagram each second
  meanwhile: the helper does not answer the same bytes over and over).

Test keys (no OONI test exists): ``tunnel`` = ``"wireguard"`` and ``wireguard_handshake``
(``endpoint``, ``ip``, ``port``, ``transport``, ``t0``, ``t``, ``handshake_time``,
``latest_handshake`` (the unix time ``wg`` reported), ``transaction_id``, ``failure``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from msgwatch.circumvention.model import Context, Entry, Run, StageFailed, Tunnel
from msgwatch.circumvention.transports import vpnkit as V
from msgwatch.failures import ProbeFailure
from msgwatch.steps.net import UDPSocket, endpoint, udp_open

PARAMS = {"private_key", "public_key", "tunnel_address", "allowed_ips"}
MAX_ALLOWED_IPS = 32
MTU = 1420
POLL = 0.2
"""Seconds between two looks at ``wg show`` (and between two datagrams in the ``tunnel`` stage)."""
RESEND = 1.0
SETUP_SECONDS = 8.0
"""At most this long (and never past the budget) for the local set-up before the handshake."""
SOCKET_DIR = Path("/var/run/wireguard")
"""Where ``wireguard-go`` puts its control socket (``<device>.sock``), fixed in its source."""


def _key(value: Any) -> bytes | None:
    """A WireGuard key (base64 of 32 bytes, as ``wg genkey`` writes) or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def check_params(entry: Entry) -> list[str]:
    """Problems with a ``wireguard`` entry: ``private_key`` (absolute path of a file holding the
    client's key, base64), ``public_key`` (the server's, base64), ``tunnel_address`` (the client's
    address inside the tunnel; a ``/prefix`` is ignored) and ``allowed_ips`` (the prefixes the
    peer may carry, at most :data:`MAX_ALLOWED_IPS`; no route is made from them)."""
    problems = []
    params = entry.params
    if entry.protocol != "udp":
        problems.append(f"protocol: WireGuard runs over udp, not {entry.protocol!r}")
    if not 0 < entry.port < 65536:
        problems.append(f"port: {entry.port} is not a port")
    unknown = sorted(str(k) for k in params if k not in PARAMS)
    if unknown:
        problems.append(f"unknown params: {', '.join(unknown)[:200]}")
    path = params.get("private_key")
    if not isinstance(path, str) or not os.path.isabs(path) or "\n" in path:
        problems.append("private_key: the absolute path of a key file is needed")
    else:
        try:
            if _key(V.read_bounded(path, 256)) is None:
                problems.append(f"private_key: {path} holds no WireGuard key")
        except OSError:
            problems.append(f"private_key: {path} cannot be read")
    if _key(params.get("public_key")) is None:
        problems.append("public_key: the server's key, base64 of 32 bytes")
    address = tunnel_address(params.get("tunnel_address"))
    if address is None:
        problems.append("tunnel_address: an IP address is needed")
    elif (problem := V.address_problem(address, [entry.address])) is not None:
        problems.append(f"tunnel_address: {problem}")
    if allowed_ips(params.get("allowed_ips")) is None:
        problems.append(f"allowed_ips: a list of 1 to {MAX_ALLOWED_IPS} prefixes is needed")
    return problems


def tunnel_address(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_interface(value).ip)
    except ValueError:
        return None


def allowed_ips(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ALLOWED_IPS:
        return None
    out = []
    for item in value:
        if not isinstance(item, str) or len(item) > 64:
            return None
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            return None
    return out


def latest_handshake(output: str) -> int:
    """The newest handshake time in ``wg show <dev> latest-handshakes`` output (0: none yet)."""
    newest = 0
    for line in output.splitlines()[:64]:
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit() and len(fields[1]) < 16:
            newest = max(newest, int(fields[1]))
    return newest


def covers(prefixes: Sequence[str], address: str) -> bool:
    """Whether one of ``prefixes`` holds ``address`` (what the peer may carry: the helper)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(prefix, strict=False) for prefix in prefixes)


async def _ok(argv: Sequence[str], deadline: float) -> str:
    status, out = await V.command(argv, deadline)
    if status != 0:
        raise ProbeFailure(V.CLIENT_FAILED, f"{Path(argv[0]).name} {argv[1]}: {out.strip()[:200]}")
    return out


async def _control_socket(client: V.Client, device: str, deadline: float) -> None:
    """Until ``wireguard-go`` has made its device (its control socket exists)."""
    sock = SOCKET_DIR / f"{device}.sock"
    loop = asyncio.get_running_loop()
    while not sock.exists():
        if client.exited:
            raise await client.exit_failure()
        if loop.time() >= deadline:
            raise ProbeFailure(V.CLIENT_FAILED, "wireguard-go made no device in time")
        await asyncio.sleep(0.05)


async def _echo(sock: UDPSocket, first: bytes, deadline: float) -> bytes:
    """Until the echo of ``first`` or of a fresh datagram (one per :data:`RESEND` s) comes back
    through the tunnel."""
    loop = asyncio.get_running_loop()
    sent = {first}
    while True:
        nonce = b"msgwatch-wg-" + secrets.token_bytes(12)
        sent.add(nonce)
        sock.send(nonce)
        until = min(deadline, loop.time() + RESEND)
        while loop.time() < until:
            try:
                data = await sock.recv(until)
            except TimeoutError:
                break
            if data in sent:
                return data
        if loop.time() >= deadline:
            raise TimeoutError("no echo through the tunnel")


async def _set_up(
    client: V.Client, ctx: Context, entry: Entry, ip: str, device: str, directory: Path,
    ip_exe: str, deadline: float,
) -> tuple[str, str]:  # fmt: skip
    """The local set-up (module notes): (the ``wg`` program, the tunnel address)."""
    params = entry.params
    wg = V.executable(ctx, "wg")
    go = V.executable(ctx, "wireguard-go")
    address = tunnel_address(params["tunnel_address"])
    assert address is not None
    await client.start([go, "-f", device], directory, [ip])
    await _control_socket(client, device, deadline)
    await _ok([wg, "set", device, "private-key", params["private_key"],
               "peer", params["public_key"], "endpoint", endpoint(ip, entry.port),
               "allowed-ips", ",".join(allowed_ips(params["allowed_ips"]) or [])],
              deadline)  # fmt: skip
    await V.set_address(ip_exe, device, address, MTU, deadline, avoid=(ip, ctx.helper))
    return wg, address


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Set ``wireguard-go`` up, record handshake/tunnel, yield the tunnel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.budget(entry.type)
    problems = check_params(entry)
    if not problems and not covers(allowed_ips(entry.params["allowed_ips"]) or [], ctx.helper):
        problems.append(f"allowed_ips: none covers the test helper {ctx.helper}")
    if problems:
        raise V.bad_params(run, problems, "handshake")
    ip = await V.resolve(entry, ctx, run, deadline)
    txid = run.trace.new_transaction()
    record: dict[str, Any] = {
        "endpoint": endpoint(ip, entry.port), "ip": ip, "port": entry.port, "transport": "udp",
        "t0": run.trace.now(), "t": None, "handshake_time": None, "latest_handshake": None,
        "transaction_id": txid, "failure": None,
    }  # fmt: skip
    run.keys["tunnel"] = "wireguard"
    run.keys["wireguard_handshake"] = record
    client = V.Client("wireguard-go")
    device = V.device_name()
    directory = V.workdir(ctx, entry)
    ip_exe = V.find_program("ip") or "ip"
    sock: UDPSocket | None = None
    try:
        try:
            setup_deadline = min(deadline - 1.0, loop.time() + SETUP_SECONDS)
            try:
                wg, address = await _set_up(client, ctx, entry, ip, device, directory, ip_exe,
                                            setup_deadline)  # fmt: skip
            except (ProbeFailure, OSError) as exc:
                failure = exc.failure if isinstance(exc, ProbeFailure) else V.CLIENT_FAILED
                if failure != V.CLIENT_NOT_FOUND:
                    failure = V.CLIENT_FAILED
                raise run.fail("handshake", failure, device=device, error=str(exc)[:300]) from exc
            record["t0"] = run.trace.now()
            async with run.stage("handshake") as detail:
                detail["device"] = device
                sock = await udp_open(run.trace, txid, ctx.helper, ctx.helper_port, device=device)
                first = b"msgwatch-wg-" + secrets.token_bytes(12)
                sock.send(first)  # makes wireguard-go start its handshake
                async with asyncio.timeout_at(deadline):  # no handshake in time: the network's
                    while not (newest := latest_handshake(
                            await _ok([wg, "show", device, "latest-handshakes"], deadline))):  # fmt: skip
                        if client.exited:
                            raise ProbeFailure(V.CLIENT_FAILED, "wireguard-go exited")
                        await asyncio.sleep(POLL)
                record["latest_handshake"] = newest
                record["t"] = run.trace.now()
                record["handshake_time"] = round(record["t"] - record["t0"], 6)
            async with run.stage("tunnel") as detail:
                async with asyncio.timeout_at(deadline):
                    await _echo(sock, first, deadline)
                detail["device"], detail["address"] = device, address
        except StageFailed as exc:
            record["t"] = record["t"] or run.trace.now()
            record["failure"] = record["failure"] or exc.record.failure
            if client.lines:
                exc.record.detail.setdefault("log", client.tail(5))
            raise
        sock.close()
        sock = None
        yield V.DeviceTunnel(device)
    finally:
        if sock is not None:
            sock.close()
        await V.release(client, directory, ip_exe, device, [SOCKET_DIR / f"{device}.sock"])

"""Shadowsocks through Debian's ``ss-local`` (shadowsocks-libev), stage by stage.

``ss-local`` runs in a private directory of its own (:func:`vpnkit.workdir`) with a configuration
file (mode 0600: it holds the password, which is never on a command line nor in the
measurement), listening as a SOCKS5 server on 127.0.0.1 at a free port, with its UDP relay
(``mode: tcp_and_udp``) unless ``params.udp`` is false. It is always stopped and its directory
(with the password file) removed, also on cancellation and on exceptions
(:func:`vpnkit.release`).

Stages:

- ``resolve``: only when the entry's address is a name;
- ``connect``: a plain TCP connect from the probe to the server's port (what ``ss-local`` does
  first for every stream; a censor blocking the port or address shows here);
- no ``handshake``: Shadowsocks has none of its own (the first bytes of a stream already carry the
  salt, the encrypted target address and data), so none is recorded;
- ``tunnel``: a SOCKS5 CONNECT through ``ss-local`` to the test helper's echo and a short echo
  round trip (:func:`proxy.echo_once`). ``ss-local`` answers the CONNECT before it reaches the
  server, so only the echo says the server relayed: a fully-encrypted-traffic censor shows here
  (a reset or a timeout).

``ss-local`` is started on a port held for it (:func:`reserve_port`), and must say it listens
and take a connection within :data:`START_SECONDS`, between
``connect`` and ``tunnel``: a client that is missing, exits or is silent fails the ``tunnel``
stage with ``client_not_found``/``client_failed`` (the probe's own, never the network's). So does
trouble on the hop to ``ss-local`` itself (a refused connection to its 127.0.0.1 port, its SOCKS
answer), there and for everything later through the tunnel (:attr:`proxy.ProxyTunnel.local`).

Then, when UDP is on, one datagram through ``ss-local``'s UDP relay to the helper's UDP echo
(:func:`proxy.udp_check`, test key ``udp_associate``); the tunnel carries UDP when it came back.

Params: ``method`` (one of :data:`METHODS`, the AEAD ciphers), ``password`` (1–1024 characters,
no control characters), ``udp`` (bool, default true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from msgwatch.circumvention.model import Context, Entry, Run, Tunnel
from msgwatch.circumvention.transports import proxy, vpnkit
from msgwatch.failures import ProbeFailure
from msgwatch.steps.net import tcp_connect

METHODS = ("chacha20-ietf-poly1305", "xchacha20-ietf-poly1305", "aes-128-gcm", "aes-192-gcm",
           "aes-256-gcm")  # fmt: skip
"""The AEAD ciphers ``ss-local`` 3.3 supports (the stream ciphers are deprecated and not tested)."""
MAX_PASSWORD = 1024
LOCAL = "127.0.0.1"
START_SECONDS = 5.0
"""At most this long (within the budget) for ``ss-local`` to say it listens."""
LISTENING = "listening at"


def check_params(entry: Entry) -> list[str]:
    """Problems with the entry's params ([] when fine)."""
    params = entry.params
    problems = [f"unknown param {k!r}" for k in sorted(set(params) - {"method", "password", "udp"})]
    if params.get("method") not in METHODS:
        problems.append(f"method must be one of {', '.join(METHODS)}")
    password = params.get("password")
    if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD:
        problems.append(f"password must be a string of 1 to {MAX_PASSWORD} characters")
    elif any(ord(c) < 32 or ord(c) == 127 for c in password):
        problems.append("password must hold no control characters")
    if "udp" in params and not isinstance(params["udp"], bool):
        problems.append("udp must be true or false")
    if entry.protocol != "tcp":
        problems.append("shadowsocks is reached over tcp (its UDP relay is the udp param)")
    return problems


def reserve_port() -> socket.socket:
    """A TCP port on 127.0.0.1 (the kernel's pick), held by a socket bound with ``SO_REUSEADDR``
    and not listening: ``ss-local``, which binds with ``SO_REUSEADDR`` too, can take the port,
    while no other socket (an outgoing connection of another program among them) can until the
    holder is closed. Picking a port and closing it at once left that window open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCAL, 0))
    except OSError:
        sock.close()
        raise
    return sock


def write_config(directory: Path, entry: Entry, ip: str, local_port: int, udp: bool) -> Path:
    """ss-local's configuration, readable by its owner only."""
    config = {
        "server": ip, "server_port": entry.port, "local_address": LOCAL,
        "local_port": local_port, "password": entry.params["password"],
        "method": entry.params["method"], "mode": "tcp_and_udp" if udp else "tcp_only",
        "timeout": 60,
    }  # fmt: skip
    path = directory / "ss-local.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    return path


async def wait_listening(client: vpnkit.Client, deadline: float) -> None:
    """Until ``ss-local`` says it listens; ``client_failed`` if it exits first or says nothing
    by ``deadline``."""
    while not any(LISTENING in line for line in client.lines):
        if client.exited:
            await client.drain()
            if any(LISTENING in line for line in client.lines):
                return  # it said so before it exited: wait_accepting reports the exit
            raise await client.exit_failure()
        try:
            await client.wait_change(deadline)
        except TimeoutError as exc:
            raise ProbeFailure(vpnkit.CLIENT_FAILED, "ss-local did not say it listens") from exc


async def wait_accepting(client: vpnkit.Client, port: int, deadline: float) -> None:
    """Until ``ss-local`` accepts a connection on ``port``: it prints "listening at" *before* it
    binds, so the line alone does not mean a connection would be taken. ``client_failed`` if it
    exits first (its bind failed) or does not accept by ``deadline``."""
    loop = asyncio.get_running_loop()
    pause = 0.01
    while True:
        if client.exited:
            raise await client.exit_failure()
        try:
            async with asyncio.timeout_at(deadline):
                _, writer = await asyncio.open_connection(LOCAL, port)
        except TimeoutError as exc:
            raise ProbeFailure(
                vpnkit.CLIENT_FAILED, "ss-local does not accept connections"
            ) from exc
        except OSError:
            if loop.time() + pause > deadline:
                raise ProbeFailure(
                    vpnkit.CLIENT_FAILED, "ss-local does not accept connections"
                ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
            continue
        writer.close()
        return


async def start(
    client: vpnkit.Client, ctx: Context, entry: Entry, ip: str, directory: Path, udp: bool,
    deadline: float,
) -> int:  # fmt: skip
    """Start ``ss-local`` and wait until it takes connections: its local SOCKS port."""
    exe = vpnkit.executable(ctx, "ss-local")
    with reserve_port() as holder:
        local_port = int(holder.getsockname()[1])
        config = write_config(directory, entry, ip, local_port, udp)
        await client.start([exe, "-c", str(config)], directory, [ip])
        await wait_listening(client, deadline)
        await wait_accepting(client, local_port, deadline)
    return local_port


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Connect, start ``ss-local``, CONNECT through it to the helper's echo; yields the tunnel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.budget(entry.type)
    problems = check_params(entry)
    if problems:
        raise vpnkit.bad_params(run, problems)
    udp = bool(entry.params.get("udp", True))
    ip = await vpnkit.resolve(entry, ctx, run, deadline)
    trace = run.trace
    async with run.stage("connect") as detail:
        detail["address"] = ip
        conn = await tcp_connect(trace, trace.new_transaction(), ip, entry.port, deadline)
        conn.close()
    client = vpnkit.Client("ss-local")
    directory = vpnkit.workdir(ctx, entry)
    try:
        started = loop.time()
        try:
            local_port = await start(client, ctx, entry, ip, directory, udp,
                                     min(deadline, started + START_SECONDS))  # fmt: skip
        except (ProbeFailure, OSError) as exc:
            failure = exc.failure if isinstance(exc, ProbeFailure) else vpnkit.CLIENT_FAILED
            if failure != vpnkit.CLIENT_NOT_FOUND:
                failure = vpnkit.CLIENT_FAILED
            log = client.tail(5)
            raise run.fail("tunnel", failure, error=str(exc)[:300], log=log) from exc
        tunnel = proxy.ProxyTunnel("socks5", LOCAL, local_port, local=True)
        async with run.stage("tunnel") as detail:
            detail["client_start"] = round(loop.time() - started, 3)
            stream = await tunnel.open_stream(
                trace, trace.new_transaction(), ctx.helper, ctx.helper_port, deadline
            )
            try:
                await proxy.echo_once(stream, deadline)
            except Exception as exc:
                if client.exited:  # ss-local died under the stream: its failure, not the path's
                    raise ProbeFailure(vpnkit.CLIENT_FAILED, "ss-local exited") from exc
                raise
            finally:
                stream.close()
            detail["echo_bytes"] = proxy.PROBE_BYTES
        if udp:
            tunnel.udp = True
            check = await proxy.udp_check(tunnel, ctx, trace)
            tunnel.udp = bool(check["echo"])
            run.keys["udp_associate"] = check
        yield tunnel
    finally:
        await vpnkit.release(client, directory)

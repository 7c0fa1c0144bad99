"""Tor as a circumvention transport: types ``tor`` (vanilla bootstrap) and ``obfs4`` (through an
obfs4 bridge), with the real ``tor`` client (and Debian's ``obfs4proxy`` as its pluggable transport).

How it works: the client runs in a private directory under ``ctx.workdir`` with a configuration
written from the entry's checked params only (:func:`check_params`: ``DirAuthority`` values, an
allow-list of testing-network options, the bridge line), ``SocksPort 127.0.0.1:auto``, no control
port, its log on stdout and ``__OwningControllerProcess`` (tor exits if the probe dies). The log is
read as it comes (:mod:`.torlog`, bounded) and the stages follow the bootstrap progress:
``connect`` (10 %, ``conn_done``), ``handshake`` (15 %, ``handshake_done``), ``tunnel`` (100 %,
``done``). A bootstrap that stops fails in the stage of its last progress, with tor's reason when
it gave one, else ``generic_timeout_error`` once ``ctx.budget(entry.type)`` has passed. The SOCKS
port tor picked is read from its "Opened Socks listener" line. Test keys follow OONI's
``vanilla_tor`` (:func:`test_keys`).

The tunnel is tor's SOCKS port: :meth:`TorTunnel.open_stream` is a SOCKS5 CONNECT through it
(:func:`msgwatch.steps.socks.socks5_connect`, which checks the fence); tor carries no UDP. The
client is always stopped (SIGTERM to its process group, SIGKILL after a grace) and its directory
removed, also on cancellation. The fence: every first hop (authority, bridge) is checked before tor
starts; tor's own later hops (relays from the consensus) cannot be, so with the fence up the public
network (no ``dir_authorities``) is refused as ``destination_not_allowed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention.model import Context, Entry, Run, Tunnel
from msgwatch.circumvention.transports.torlog import (
    CONNECTED,
    HANDSHAKE_DONE,
    LineSplitter,
    TorLog,
)
from msgwatch.fence import check_destination, check_fence
from msgwatch.steps.net import TCPConn, UDPSocket
from msgwatch.steps.socks import socks5_connect
from msgwatch.steps.trace import Trace

SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
STOP_GRACE = 3.0
READ_CHUNK = 4096
MAX_DIR_AUTHORITIES, MAX_TORRC_LINES = 16, 32
_ADDRESS = r"(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]{2,39}\]):(\d{1,5})"
DIR_AUTHORITY = re.compile(
    r"^[A-Za-z0-9]{1,19}(?: [a-z0-9-]{1,20}(?:=[0-9A-Za-z]{1,64})?){0,8} " + _ADDRESS
    + r" ([0-9A-F]{40})$"
)  # fmt: skip
BRIDGE = re.compile(
    r"^obfs4 " + _ADDRESS + r" ([0-9A-F]{40}) cert=([A-Za-z0-9+/]{70}) iat-mode=([012])$"
)  # fmt: skip
TORRC_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9]{0,63})(?: ([\x20-\x7e]{1,200}))?$")
OPTIONS = frozenset({"TestingTorNetwork", "AssumeReachable", "PathsNeededToBuildCircuits",
                     "UseMicrodescriptors", "EnforceDistinctSubnets"})  # fmt: skip
"""Options an entry's ``torrc`` may set (besides ``Testing*``): nothing that opens a port, writes
a file, runs a program or names an address."""
PARAMS = {"tor": {"dir_authorities", "torrc"}, "obfs4": {"dir_authorities", "torrc", "bridge"}}


def _ip_port(host: str, port: str) -> tuple[str, int] | None:
    try:
        ip = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
    number = int(port)
    return (ip, number) if 0 < number < 65536 else None


def _strings(value: Any, name: str, limit: int, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{name}: a list of strings")
        return []
    if len(value) > limit:
        problems.append(f"{name}: at most {limit} items")
        return []
    return list(value)


def check_params(entry: Entry) -> list[str]:
    """Problems with the entry's params ([] when fine)."""
    params, problems = entry.params, []
    unknown = sorted(set(params) - PARAMS.get(entry.type, set()))
    if entry.type not in PARAMS:
        return [f"type {entry.type!r} is not tor's"]
    if unknown:
        problems.append(f"unknown params: {', '.join(unknown[:5])}")
    for i, value in enumerate(_strings(params.get("dir_authorities", []), "dir_authorities",
                                       MAX_DIR_AUTHORITIES, problems)):  # fmt: skip
        found = DIR_AUTHORITY.match(value)
        if not found or _ip_port(found.group(1), found.group(2)) is None:
            problems.append(f"dir_authorities.{i}: not 'nickname [flags] ip:dirport FINGERPRINT'")
    for i, line in enumerate(_strings(params.get("torrc", []), "torrc", MAX_TORRC_LINES, problems)):
        found = TORRC_LINE.match(line)
        if not found or not (found.group(1) in OPTIONS or found.group(1).startswith("Testing")):
            problems.append(f"torrc.{i}: not an allowed option ({', '.join(sorted(OPTIONS))}, "
                            "Testing*)")  # fmt: skip
    if entry.type == "obfs4":
        bridge = params.get("bridge")
        found = BRIDGE.match(bridge) if isinstance(bridge, str) else None
        if not found or _ip_port(found.group(1), found.group(2)) is None:
            problems.append("bridge: not 'obfs4 ip:port FINGERPRINT cert=... iat-mode=N'")
    return problems


def first_hops(entry: Entry) -> list[str]:
    """The addresses tor connects to first (the bridge, or the directory authorities)."""
    if entry.type == "obfs4":
        found = BRIDGE.match(str(entry.params.get("bridge", "")))
        return [found.group(1).strip("[]")] if found else []
    found_all = (DIR_AUTHORITY.match(d) for d in entry.params.get("dir_authorities", []))
    return [f.group(1).strip("[]") for f in found_all if f]


def torrc(entry: Entry, workdir: Path, executables: Mapping[str, str]) -> str:
    """The client's configuration (from checked params only)."""
    lines = [f"DataDirectory {workdir / 'data'}", "SocksPort 127.0.0.1:auto", "ControlPort 0",
             "Log notice stdout", "RunAsDaemon 0", "ClientOnly 1", "AvoidDiskWrites 1",
             f"__OwningControllerProcess {os.getpid()}", "GeoIPFile ", "GeoIPv6File "]  # fmt: skip
    lines += [f"DirAuthority {d}" for d in entry.params.get("dir_authorities", [])]
    lines += list(entry.params.get("torrc", []))
    if entry.type == "obfs4":
        lines += ["UseBridges 1", f"Bridge {entry.params['bridge']}",
                  f"ClientTransportPlugin obfs4 exec {_exe('obfs4proxy', executables)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _exe(name: str, executables: Mapping[str, str]) -> str:
    return executables.get(name) or shutil.which(name, path=SEARCH) or name


@dataclass
class TorTunnel:
    """Streams through tor's SOCKS port; no UDP."""

    socks_port: int

    @property
    def carries_udp(self) -> bool:
        return False

    async def open_stream(self, trace: Trace, txid: int, ip: str, port: int,
                          deadline: float) -> TCPConn:  # fmt: skip
        return await socks5_connect(trace, txid, "127.0.0.1", self.socks_port, ip, port, deadline)

    async def open_udp(self, trace: Trace, txid: int, ip: str, port: int,
                       deadline: float) -> UDPSocket:  # fmt: skip
        raise F.ProbeFailure(F.UDP_NOT_CARRIED, "tor carries no UDP")


class _Client:
    """The running tor: its log read as it comes, an event on every change."""

    def __init__(self, proc: asyncio.subprocess.Process, log: TorLog) -> None:
        self.proc, self.log = proc, log
        self.changed = asyncio.Event()
        self.ended = False
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        lines = LineSplitter()
        while True:
            data = await self.proc.stdout.read(READ_CHUNK)
            for line in lines.feed(data) if data else lines.flush():
                self.log.feed(line)
            self.changed.set()
            if not data:
                self.ended = True
                return

    async def until(self, ready: Callable[[TorLog], bool], deadline: float) -> None:
        """Wait until ``ready(log)``; raise the log's failure at the deadline or when tor exits."""
        loop = asyncio.get_running_loop()
        while True:
            self.changed.clear()  # before looking: a change from now on wakes the wait below
            if ready(self.log):
                return
            if self.ended:
                status = await self.proc.wait()
                why = self.log.errors[-1] if self.log.errors else ""
                raise F.ProbeFailure(F.unknown(f"tor exited (status {status}) {why}"[:160]))
            if loop.time() >= deadline:
                raise F.ProbeFailure(self.log.failure(), "the bootstrap stopped")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self.changed.wait()

    def kill_now(self) -> None:
        """SIGKILL tor's process group at once (when there is no time to wait)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._pump.cancel()

    async def stop(self) -> None:
        """SIGTERM to tor's process group (with its obfs4proxy), SIGKILL after a grace."""
        for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                async with asyncio.timeout(grace):
                    await self.proc.wait()
                break
            except TimeoutError:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group left behind
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump


def test_keys(entry: Entry, log: TorLog, bootstrap_time: float, budget: float) -> dict[str, Any]:
    """OONI ``vanilla_tor``'s keys (``tor_logs`` bounded; addresses scrubbed for a private entry)."""
    logs = [F.scrub_addresses(x) for x in log.kept] if entry.private else list(log.kept)
    return {"bootstrap_time": round(bootstrap_time, 3), "tor_progress": log.progress,
            "tor_progress_tag": log.tag, "tor_progress_summary": log.summary, "tor_logs": logs,
            "tor_logs_dropped": log.dropped, "tor_version": log.version,
            "transport_name": "obfs4" if entry.type == "obfs4" else "vanilla",
            "timeout": budget}  # fmt: skip


def _check_fence(entry: Entry) -> None:
    hops = first_hops(entry)
    if not hops and check_fence() is not None:
        raise F.ProbeFailure(F.NOT_ALLOWED, "the public Tor network is outside the fence")
    for ip in hops:
        check_destination(ip)


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Bootstrap tor for ``entry``; yields its tunnel; always stops tor and removes its files."""
    problems = check_params(entry)
    if problems:
        raise run.fail("connect", F.unknown("invalid params: " + "; ".join(problems))[:200])
    budget = ctx.budget(entry.type)
    loop = asyncio.get_running_loop()
    log = TorLog()
    workdir = Path(tempfile.mkdtemp(prefix="tor-", dir=ctx.workdir))
    client: _Client | None = None
    t0 = loop.time()
    deadline, boot = t0 + budget, 0.0
    try:
        async with run.stage("connect") as detail:
            _check_fence(entry)
            (workdir / "torrc").write_text(torrc(entry, workdir, ctx.executables))
            (workdir / "defaults").write_text("")
            proc = await asyncio.create_subprocess_exec(
                _exe("tor", ctx.executables), "--defaults-torrc", str(workdir / "defaults"),
                "-f", str(workdir / "torrc"), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            client = _Client(proc, log)
            try:
                await client.until(lambda lg: lg.progress >= CONNECTED, deadline)
            finally:
                detail |= _progress(log)
        async with run.stage("handshake") as detail:
            try:
                await client.until(lambda lg: lg.progress >= HANDSHAKE_DONE, deadline)
            finally:
                detail |= _progress(log)
        async with run.stage("tunnel") as detail:
            try:
                await client.until(lambda lg: lg.done, deadline)
            finally:
                detail |= _progress(log)
            if log.socks_port is None:
                raise F.ProbeFailure(F.unknown("tor bootstrapped but did not say its SOCKS port"))
            boot = loop.time() - t0
        run.keys |= test_keys(entry, log, boot, budget)
        yield TorTunnel(log.socks_port)
    finally:
        run.keys |= test_keys(entry, log, boot, budget)
        try:
            if client is not None:
                try:
                    await asyncio.shield(client.stop())
                except asyncio.CancelledError:
                    client.kill_now()
                    raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _progress(log: TorLog) -> dict[str, Any]:
    return {"tor_progress": log.progress, "tor_progress_tag": log.tag}

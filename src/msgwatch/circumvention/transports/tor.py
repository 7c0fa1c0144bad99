"""Tor as a circumvention transport: types ``tor`` (vanilla bootstrap) and ``obfs4`` (through an
obfs4 bridge), with the real ``tor`` client (and Debian's ``obfs4proxy`` as its pluggable transport).

How it works: the client runs in a private directory under ``ctx.workdir`` with a configuration
written from the entry's checked params only (:func:`check_params`: ``DirAuthority`` values, an
allow-list of testing-network options, the bridge line; a ``tor`` entry without
``dir_authorities`` uses tor's built-in public authorities), ``SocksPort 127.0.0.1:auto``, no
control port, its log on stdout and ``__OwningControllerProcess`` (tor exits if the probe dies).
The log is read as it comes (:mod:`.torlog`, bounded) and the stages follow the bootstrap:

- vanilla: ``connect`` (10 %, ``conn_done``), ``handshake`` (15 %, ``handshake_done``),
  ``tunnel`` (100 %, ``done``);
- obfs4: ``connect`` is a plain TCP connect of the probe to the bridge (tor reports ``conn_done``
  only once the pluggable transport's handshake is done, so a censor of obfs4's bytes would
  otherwise look like a blocked address); ``handshake`` is tor's progress to 15 % (the obfs4
  handshake and tor's link handshake through it); ``tunnel`` 100 %.

Every tor stage records ``progress`` (the percentage reached) and ``progress_age`` (seconds since
tor's progress last moved, when the stage ended): the judge tells a slow bootstrap from a stuck
one by it. A bootstrap that stops fails in the stage it was in, with tor's reason when it gave one
(``CONNECTREFUSED`` → ``connection_refused``...), else ``generic_timeout_error``, at tor's own
deadline: :func:`own_deadline`, a margin before the runner's cut of ``ctx.budget(entry.type)``, so
that the reason is recorded before the runner cancels. The SOCKS port tor picked is read from its
"Opened Socks listener" line. Test keys follow OONI's ``vanilla_tor`` (:func:`test_keys`).

Local failures are never the network's: invalid params are ``bad_params``, a missing ``tor`` or
``obfs4proxy`` ``client_not_found``, a tor that exits or a SOCKS port that does not answer
``client_failed``.

The tunnel is tor's SOCKS port: :meth:`TorTunnel.open_stream` is a SOCKS5 CONNECT through it
(:func:`local_socks`, which checks the fence); tor carries no UDP. The client is always stopped
(SIGTERM to its process group, SIGKILL after a grace) and its directory removed, also on
cancellation. The fence: every first hop (authority, bridge) is checked before tor starts, and
with the fence up the torrc has ``ReachableAddresses accept <prefix>`` per fence prefix then
``reject *:*`` (:func:`reachable_lines`), so tor's later hops (relays from the consensus) stay
inside it too; the public network (no ``dir_authorities``) is refused as
``destination_not_allowed`` while the fence is up (its authorities are outside any fence).
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
from collections.abc import AsyncIterator, Callable, Sequence
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
from msgwatch.circumvention.transports.vpnkit import (
    BAD_PARAMS,
    CLIENT_FAILED,
    CLIENT_NOT_FOUND,
    bad_params,
    die_with_parent,
    executable,
)
from msgwatch.fence import Network, check_destination, check_fence
from msgwatch.steps.net import TCPConn, UDPSocket, tcp_connect
from msgwatch.steps.socks import CMD_CONNECT, socks5_handshake, socks5_request
from msgwatch.steps.trace import Trace

STOP_GRACE = 3.0
READ_CHUNK = 4096
STUCK_MARGIN = 2.0
"""Seconds before the runner's cut at which tor's own deadline falls (:func:`own_deadline`)."""
CONNECT_SECONDS = 10.0
"""Seconds the plain TCP connect to an obfs4 bridge may take (within the budget)."""
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
"""Problems of invalid params recorded in the failed stage's detail, and characters of each."""


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
    """Problems with the entry's params ([] when fine). A ``tor`` entry without any param is
    vanilla tor on the public network (tor's built-in directory authorities)."""
    params, problems = entry.params, []
    unknown = sorted(set(params) - PARAMS.get(entry.type, set()))
    if entry.type not in PARAMS:
        return [f"type {entry.type!r} is not tor's"]
    if unknown:
        problems.append(f"unknown params: {', '.join(k[:40] for k in unknown[:5])}")
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


def bridge_endpoint(entry: Entry) -> tuple[str, int] | None:
    """The obfs4 bridge's ``(ip, port)`` (None without a valid bridge line)."""
    found = BRIDGE.match(str(entry.params.get("bridge", "")))
    return _ip_port(found.group(1), found.group(2)) if found else None


def reachable_lines(fence: Sequence[Network] | None) -> list[str]:
    """``ReachableAddresses`` lines keeping every connection of tor inside ``fence`` (none
    without a fence): one ``accept`` per prefix, then ``reject *:*`` (``*`` is IPv4 and IPv6)."""
    if fence is None:
        return []
    lines = []
    for network in fence:
        if network.version == 4:
            lines.append(f"ReachableAddresses accept {network}:*")
        else:
            lines.append(f"ReachableAddresses accept [{network.network_address}]/"
                         f"{network.prefixlen}:*")  # fmt: skip
    return [*lines, "ReachableAddresses reject *:*"]


def torrc(
    entry: Entry, workdir: Path, obfs4proxy: str | None = None,
    fence: Sequence[Network] | None = None,
) -> str:  # fmt: skip
    """The client's configuration (from checked params only); ``obfs4proxy``: the pluggable
    transport's path (obfs4 entries); ``fence``: the prefixes tor may connect to."""
    lines = [f"DataDirectory {workdir / 'data'}", "SocksPort 127.0.0.1:auto", "ControlPort 0",
             "Log notice stdout", "RunAsDaemon 0", "ClientOnly 1", "AvoidDiskWrites 1",
             f"__OwningControllerProcess {os.getpid()}", "GeoIPFile ", "GeoIPv6File "]  # fmt: skip
    lines += [f"DirAuthority {d}" for d in entry.params.get("dir_authorities", [])]
    lines += list(entry.params.get("torrc", []))
    lines += reachable_lines(fence)
    if entry.type == "obfs4":
        lines += ["UseBridges 1", f"Bridge {entry.params['bridge']}",
                  f"ClientTransportPlugin obfs4 exec {obfs4proxy or 'obfs4proxy'}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def own_deadline(start: float, budget: float) -> float:
    """tor's deadline: :data:`STUCK_MARGIN` (at most a quarter of the budget) before the
    runner's cut, which started before ``start``: the stage then fails with tor's reason."""
    return start + budget - min(STUCK_MARGIN, budget / 4)


async def local_socks(
    trace: Trace, txid: int, socks_port: int, ip: str, port: int, deadline: float, *,
    program: str = "tor", username: str | None = None, password: str | None = None,
) -> TCPConn:  # fmt: skip
    """A SOCKS5 CONNECT to ``ip:port`` through the local client ``program`` listening on
    ``127.0.0.1:socks_port``. The destination is checked against the fence first. The hop to
    the local port and the method negotiation are the client's, not the network's: their
    failures are ``client_failed``; the reply to the request is what the network did."""
    check_destination(ip)
    try:
        conn = await tcp_connect(trace, txid, "127.0.0.1", socks_port, deadline)
    except Exception as exc:
        raise F.ProbeFailure(CLIENT_FAILED, f"{program}'s SOCKS port: {F.classify(exc)}") from exc
    try:
        try:
            await socks5_handshake(conn, deadline, username, password)
        except Exception as exc:
            raise F.ProbeFailure(CLIENT_FAILED, f"{program}'s SOCKS: {F.classify(exc)}") from exc
        await socks5_request(conn, CMD_CONNECT, ip, port, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass
class TorTunnel:
    """Streams through tor's SOCKS port; no UDP."""

    socks_port: int

    @property
    def carries_udp(self) -> bool:
        return False

    async def open_stream(self, trace: Trace, txid: int, ip: str, port: int,
                          deadline: float) -> TCPConn:  # fmt: skip
        return await local_socks(trace, txid, self.socks_port, ip, port, deadline)

    async def open_udp(self, trace: Trace, txid: int, ip: str, port: int,
                       deadline: float) -> UDPSocket:  # fmt: skip
        raise F.ProbeFailure(F.UDP_NOT_CARRIED, "tor carries no UDP")


class _Client:
    """The running tor: its log read as it comes, an event on every change, and when its
    progress last moved (``moved_at``, the loop's clock)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: TorLog) -> None:
        self.proc, self.log = proc, log
        self.changed = asyncio.Event()
        self.ended = False
        self.moved_at = asyncio.get_running_loop().time()
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        lines = LineSplitter()
        while True:
            data = await self.proc.stdout.read(READ_CHUNK)
            before = (self.log.progress, self.log.tag)
            for line in lines.feed(data) if data else lines.flush():
                self.log.feed(line)
            if (self.log.progress, self.log.tag) != before:
                self.moved_at = loop.time()
            self.changed.set()
            if not data:
                self.ended = True
                return

    def progress(self) -> dict[str, Any]:
        """A stage's detail: the progress reached and seconds since it last moved."""
        age = asyncio.get_running_loop().time() - self.moved_at
        return {"progress": self.log.progress, "progress_age": round(max(age, 0.0), 3)}

    async def until(self, ready: Callable[[TorLog], bool], deadline: float) -> None:
        """Wait until ``ready(log)``; raise the log's failure at the deadline, ``client_failed``
        when tor exits."""
        loop = asyncio.get_running_loop()
        while True:
            self.changed.clear()  # before looking: a change from now on wakes the wait below
            if ready(self.log):
                return
            if self.ended:
                status = await self.proc.wait()
                why = self.log.errors[-1] if self.log.errors else ""
                raise F.ProbeFailure(CLIENT_FAILED, f"tor exited (status {status}) {why}"[:200])
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


async def _bridge_connect(run: Run, entry: Entry, deadline: float) -> None:
    """obfs4's ``connect`` stage: a plain TCP connect of the probe to the bridge, closed at once
    (nothing sent: no bytes for a censor of encrypted-looking payloads to see)."""
    endpoint = bridge_endpoint(entry)
    if endpoint is None:  # check_params refused it already
        raise F.ProbeFailure(BAD_PARAMS, "no bridge")
    conn = await tcp_connect(run.trace, run.trace.new_transaction(), *endpoint, deadline)
    conn.close()


async def _start(entry: Entry, ctx: Context, workdir: Path, log: TorLog) -> _Client:
    """tor started on ``entry``'s configuration (``client_not_found``/``client_failed``)."""
    tor = executable(ctx, "tor")
    pt = executable(ctx, "obfs4proxy") if entry.type == "obfs4" else None
    (workdir / "torrc").write_text(torrc(entry, workdir, pt, check_fence()))
    (workdir / "defaults").write_text("")
    try:
        proc = await asyncio.create_subprocess_exec(
            tor, "--defaults-torrc", str(workdir / "defaults"), "-f", str(workdir / "torrc"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise F.ProbeFailure(CLIENT_NOT_FOUND, f"{tor} is not installed") from exc
    except OSError as exc:
        raise F.ProbeFailure(CLIENT_FAILED, f"tor did not start: {exc}"[:200]) from exc
    return _Client(proc, log)


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Bootstrap tor for ``entry``; yields its tunnel; always stops tor and removes its files."""
    problems = check_params(entry)
    if problems:
        raise bad_params(run, problems)
    budget = ctx.budget(entry.type)
    loop = asyncio.get_running_loop()
    log = TorLog()
    workdir = Path(tempfile.mkdtemp(prefix="tor-", dir=ctx.workdir))
    client: _Client | None = None
    t0 = loop.time()
    deadline, boot = own_deadline(t0, budget), 0.0

    async def wait(progress: Callable[[TorLog], bool], detail: dict[str, Any]) -> None:
        assert client is not None
        try:
            await client.until(progress, deadline)
        finally:
            detail |= client.progress()

    try:
        async with run.stage("connect") as detail:
            _check_fence(entry)
            run.endpoint_addresses.update(first_hops(entry))
            if entry.type == "obfs4":
                for program in ("tor", "obfs4proxy"):  # missing: no traffic for nothing
                    executable(ctx, program)
                await _bridge_connect(run, entry, min(deadline, loop.time() + CONNECT_SECONDS))
            else:
                client = await _start(entry, ctx, workdir, log)
                await wait(lambda lg: lg.progress >= CONNECTED, detail)
        async with run.stage("handshake") as detail:
            if client is None:
                client = await _start(entry, ctx, workdir, log)
            await wait(lambda lg: lg.progress >= HANDSHAKE_DONE, detail)
        async with run.stage("tunnel") as detail:
            await wait(lambda lg: lg.done, detail)
            if log.socks_port is None:
                raise F.ProbeFailure(CLIENT_FAILED, "tor bootstrapped but did not say its port")
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

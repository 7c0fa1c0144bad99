"""What the VPN transports (OpenVPN, WireGuard) share: a TUN device of their own in the probe's
namespace, a long-running client process, and a tunnel that sends through that device.

How traffic goes through a VPN without touching the probe's routes: the client (``openvpn``,
``wireguard-go``) creates a TUN device named for this run (:func:`device_name`), the device gets
the tunnel's address as a ``/32`` (no prefix, so no connected route either), and nothing else is
added: no route, no DNS. Every socket meant for the tunnel is bound to the device
(``SO_BINDTODEVICE``, :func:`msgwatch.steps.net.tcp_connect` with ``device=``): the kernel sends a
device-bound socket's packets out of that device even when no route names it. Everything else of
the probe keeps its own path.

:class:`Client` is a client program that stays up while the tunnel is used (unlike
:func:`msgwatch.steps.exec.run_program`, which runs a program until it is done): its destinations
are fenced before it starts, it runs in a session of its own with its own working directory, its
output is read line by line (each line bounded, only the last :data:`KEEP_LINES` kept) and it is
stopped — ``SIGTERM`` to its process group, ``SIGKILL`` after a grace — on every way out,
cancellation included. :func:`cleanup_device` then removes the device if the client left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from msgwatch.circumvention.model import Context, Entry, Run
from msgwatch.failures import DNS_NO_ANSWER, ProbeFailure
from msgwatch.fence import check_destination
from msgwatch.steps.net import (
    TCPConn,
    UDPSocket,
    remaining,
    system_resolve,
    tcp_connect,
    udp_open,
)
from msgwatch.steps.trace import Trace

MAX_LINE = 2048
"""Characters kept of one line of a client's output (the rest of the line is dropped)."""
KEEP_LINES = 200
"""Lines of a client's output kept (the last ones)."""
GRACE = 2.0
"""Seconds between ``SIGTERM`` and ``SIGKILL`` when a client is stopped."""
COMMAND_OUTPUT = 64 * 1024
"""Bytes kept of the output of a helper command (``ip``, ``wg``)."""
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])

CLIENT_NOT_FOUND = "client_not_found"
CLIENT_FAILED = "client_failed"
BAD_PARAMS = "bad_params"


def device_name(prefix: str = "mwv") -> str:
    """A TUN device name for one run: ``prefix`` + 6 random hex digits (≤ 15 characters, what
    Linux allows, and unique enough that two probes on one host never share one)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    assert len(name) <= 15
    return name


def executable(ctx: Context, name: str) -> str:
    """The client program ``name`` (``ctx.executables`` first, then the PATH and the sbin
    directories); raises ``ProbeFailure(client_not_found)``."""
    override = ctx.executables.get(name)
    path = shutil.which(override) if override else shutil.which(name, path=SEARCH)
    if not path:
        raise ProbeFailure(CLIENT_NOT_FOUND, f"{name} is not installed")
    return path


def workdir(ctx: Context, entry: Entry) -> Path:
    """A private directory (mode 0700) for one client run, under ``ctx.workdir``."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=ctx.workdir))


def read_bounded(path: str, limit: int = 16 * 1024) -> str:
    """The first ``limit`` bytes of a small file (a key), as text; raises OSError."""
    with open(path, "rb") as handle:
        return handle.read(limit).decode("ascii", errors="replace")


class Client:
    """A client program running while its tunnel is used (see the module's notes)."""

    def __init__(self, name: str, on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.lines: deque[str] = deque(maxlen=KEEP_LINES)
        self.on_line = on_line
        self.process: asyncio.subprocess.Process | None = None
        self.changed = asyncio.Event()
        """Set at every line and when the program exits (waiters clear it and look again)."""
        self._reader: asyncio.Task[None] | None = None

    async def start(self, argv: Sequence[str], cwd: Path, destinations: Sequence[str]) -> None:
        """Fence ``destinations`` (the addresses the program will contact), then start it."""
        for address in destinations:
            check_destination(address)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=str(cwd), start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise ProbeFailure(CLIENT_NOT_FOUND, f"{argv[0]} is not installed") from exc
        except OSError as exc:
            raise ProbeFailure(CLIENT_FAILED, f"{argv[0]} did not start: {exc}") from exc
        assert self.process.stdout is not None
        self._reader = asyncio.create_task(self._read(self.process.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        partial = b""
        try:
            while chunk := await stream.read(16384):
                *complete, partial = (partial + chunk).split(b"\n")
                if len(partial) > MAX_LINE:  # an endless line: keep its head, drop the rest
                    complete.append(partial[:MAX_LINE])
                    partial = b""
                for raw in complete:
                    line = raw[:MAX_LINE].decode("utf-8", errors="replace").rstrip("\r")
                    self.lines.append(line)
                    if self.on_line is not None:
                        self.on_line(line)
                self.changed.set()
            if partial:
                self.lines.append(partial[:MAX_LINE].decode("utf-8", errors="replace"))
        finally:
            self.changed.set()

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def tail(self, count: int = 5) -> list[str]:
        return list(self.lines)[-count:]

    async def wait_change(self, deadline: float) -> None:
        """Until the next line or the program's exit; TimeoutError at ``deadline``."""
        self.changed.clear()
        if self.process is None or self.process.returncode is not None:
            return
        waiters = {
            asyncio.create_task(self.process.wait()),
            asyncio.create_task(self.changed.wait()),
        }
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def stop(self) -> None:
        """Stop and reap the program (its whole process group); safe to call twice."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), GRACE)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await asyncio.wait_for(process.wait(), GRACE)
        _signal_group(process.pid, signal.SIGKILL)  # whatever it left in its group
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, GRACE)
            self._reader.cancel()

    def kill_now(self) -> None:
        """SIGKILL the process group without waiting (the way out when cancelled twice)."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.cancel()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_client(client: Client) -> None:
    """:meth:`Client.stop`, finished even when the caller is being cancelled."""
    try:
        await asyncio.shield(client.stop())
    except asyncio.CancelledError:
        client.kill_now()
        raise


async def command(argv: Sequence[str], deadline: float) -> tuple[int, str]:
    """Run a short helper command (``ip``, ``wg``) to its end: (exit status, its output, bounded).
    A command still running at ``deadline`` is killed and raises TimeoutError."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ProbeFailure(CLIENT_NOT_FOUND, f"{argv[0]} is not installed") from exc
    except OSError as exc:
        raise ProbeFailure(CLIENT_FAILED, f"{argv[0]} did not start: {exc}") from exc
    assert process.stdout is not None
    kept = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            while chunk := await process.stdout.read(16384):
                kept += chunk[: max(0, COMMAND_OUTPUT - len(kept))]
            status = await process.wait()
    finally:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
    return status, kept.decode("utf-8", errors="replace")


async def set_address(ip_exe: str, device: str, address: str, mtu: int, deadline: float) -> None:
    """Give ``device`` its tunnel address as a ``/32`` (no connected route) and bring it up."""
    for argv in (
        [ip_exe, "addr", "add", f"{address}/32", "dev", device],
        [ip_exe, "link", "set", "dev", device, "mtu", str(mtu), "up"],
    ):
        status, out = await command(argv, deadline)
        if status != 0:
            raise ProbeFailure(CLIENT_FAILED, f"{' '.join(argv[1:])}: {out.strip()[:200]}")


async def cleanup_device(ip_exe: str, device: str) -> None:
    """Remove ``device`` if the client left it behind (bounded; never raises)."""
    with contextlib.suppress(Exception):
        loop = asyncio.get_running_loop()
        status, _ = await command([ip_exe, "link", "show", "dev", device], loop.time() + 3)
        if status == 0:
            await command([ip_exe, "link", "del", "dev", device], loop.time() + 3)


class DeviceTunnel:
    """A tunnel used by binding sockets to its TUN device; carries TCP and UDP."""

    def __init__(self, device: str) -> None:
        self.device = device

    @property
    def carries_udp(self) -> bool:
        return True

    async def open_stream(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> TCPConn:
        return await tcp_connect(trace, txid, ip, port, deadline, device=self.device)

    async def open_udp(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> UDPSocket:
        async with asyncio.timeout(max(0.001, remaining(deadline))):
            return await udp_open(trace, txid, ip, port, device=self.device)


async def resolve(entry: Entry, run: Run, deadline: float) -> str:
    """The endpoint's IP: the address itself, or (``resolve`` stage) the first the system's
    resolver gives for the name."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(entry.address))
    async with run.stage("resolve") as detail:
        addresses = await system_resolve(entry.address, deadline)
        detail["addresses"] = addresses[:8]
        if not addresses:
            raise ProbeFailure(DNS_NO_ANSWER)
        return addresses[0]

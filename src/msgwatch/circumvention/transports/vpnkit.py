"""What the VPN transports (OpenVPN, WireGuard) share: a TUN device of their own in the probe's
namespace, a long-running client process, and a tunnel that sends through that device.

How traffic goes through a VPN without touching the probe's routes: the client (``openvpn``,
``wireguard-go``) creates a TUN device named for this run (:func:`device_name`), the device gets
the tunnel's address as a host prefix (``/32``, ``/128``: no subnet, so no connected route beyond
the kernel's ``local`` entry for that one address), and nothing else is added: no route, no DNS.
Since that one ``local`` entry would take over traffic to the address, only a private address is
given (:func:`address_problem`: RFC 1918, 100.64.0.0/10, ULA, the lab's 198.18.0.0/15 and
2001:db8::/32), never the endpoint's nor the helper's, and never one the namespace already has or
reaches on a link (:func:`address_conflict`, from ``ip route get``). Every socket meant for the tunnel is bound to the device
(``SO_BINDTODEVICE``, :func:`msgwatch.steps.net.tcp_connect` with ``device=``): the kernel sends a
device-bound socket's packets out of that device even when no route names it. Everything else of
the probe keeps its own path.

:class:`Client` is a client program that stays up while the tunnel is used (unlike
:func:`msgwatch.steps.exec.run_program`, which runs a program until it is done): its destinations
are fenced before it starts, it runs in a session of its own with its own working directory, its
output is read line by line (each line bounded, only the last :data:`KEEP_LINES` kept) and it is
stopped — ``SIGTERM`` to its process group, ``SIGKILL`` after a grace — on every way out,
cancellation included. It is also started with a parent-death signal (``PR_SET_PDEATHSIG`` =
``SIGKILL``, :func:`die_with_parent`): a probe killed outright (``SIGKILL``, a crash) never leaves
it running. :func:`release` then stops it, removes the device if the client left it, and the
client's directory, each step even when one before it failed or was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.failures import DNS_NO_ANSWER, ProbeFailure
from msgwatch.fence import check_destination
from msgwatch.steps import dns
from msgwatch.steps.net import TCPConn, UDPSocket, remaining, tcp_connect, udp_open
from msgwatch.steps.trace import Trace

MAX_LINE = 2048
"""Characters kept of one line of a client's output (the rest of the line is dropped)."""
KEEP_LINES = 200
"""Lines of a client's output kept (the last ones)."""
GRACE = 2.0
"""Seconds between ``SIGTERM`` and ``SIGKILL`` when a client is stopped."""
COMMAND_OUTPUT = 64 * 1024
"""Bytes kept of the output of a helper command (``ip``, ``wg``)."""
COMMAND_SECONDS = 5.0
"""At most this long for one helper command (``ip``, ``wg``): longer is the probe's problem."""
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
"""Where client programs are looked for (the one search path of every transport)."""
TUNNEL_POOLS = tuple(
    ipaddress.ip_network(prefix)
    for prefix in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                   "198.18.0.0/15", "fc00::/7", "2001:db8::/32")
)  # fmt: skip
"""Where a tunnel address may be: private and shared ranges, ULA, and the lab's (benchmarking
and documentation) prefixes. Any other address given to a device would take over the traffic
to that address."""
PR_SET_PDEATHSIG = 1

CLIENT_NOT_FOUND = "client_not_found"
CLIENT_FAILED = "client_failed"
BAD_PARAMS = "bad_params"
MAX_PROBLEMS, MAX_PROBLEM = 5, 120
"""At most this many problems with an entry's params are recorded, each cut to this length."""


def device_name(prefix: str = "mwv") -> str:
    """A TUN device name for one run: ``prefix`` + 6 random hex digits (≤ 15 characters, what
    Linux allows, and unique enough that two probes on one host never share one)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    assert len(name) <= 15
    return name


def find_program(name: str, executables: Mapping[str, str] | None = None) -> str | None:
    """The path of program ``name`` (``executables[name]`` first, then :data:`SEARCH`), or None."""
    override = (executables or {}).get(name)
    return shutil.which(override) if override else shutil.which(name, path=SEARCH)


def executable(ctx: Context, name: str) -> str:
    """The client program ``name`` (``ctx.executables`` first, then the PATH and the sbin
    directories); raises ``ProbeFailure(client_not_found)``."""
    path = find_program(name, ctx.executables)
    if not path:
        raise ProbeFailure(CLIENT_NOT_FOUND, f"{name} is not installed")
    return path


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``SIGKILL`` when the thread that started it
    ends (``prctl(PR_SET_PDEATHSIG)``; kept across ``exec``), and that exits at once if that
    parent is already gone. ``prctl`` is looked up here, in the parent: the child only calls it."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def workdir(ctx: Context, entry: Entry) -> Path:
    """A private directory (mode 0700) for one client run, under ``ctx.workdir``."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=ctx.workdir))


def read_bounded(path: str, limit: int = 16 * 1024) -> str:
    """The first ``limit`` bytes of a small file (a key), as text; raises OSError."""
    with open(path, "rb") as handle:
        return handle.read(limit).decode("ascii", errors="replace")


DRAIN_SECONDS = 1.0
"""At most this long to read what an exited client wrote last."""


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
                preexec_fn=die_with_parent(),
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

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Once the program has exited: until its output is read to the end (at most
        ``timeout``), so that :attr:`lines` hold its last words. Its exit can be seen before
        the reader has taken what it wrote just before."""
        reader = self._reader
        if reader is not None and not reader.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), timeout)

    async def exit_failure(self) -> ProbeFailure:
        """``client_failed`` for a program that exited, with its exit status and last words."""
        await self.drain()
        tail = " | ".join(self.tail(3))[:300]
        return ProbeFailure(CLIENT_FAILED, f"{self.name} exited ({self.returncode}): {tail}")

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
        """Stop and reap the program (its whole process group); safe to call twice; never
        raises TimeoutError (a program that outlives ``SIGKILL`` is left to the kernel)."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), GRACE)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
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


async def release(
    client: Client, directory: Path, ip_exe: str | None = None, device: str | None = None,
    files: Sequence[Path] = (),
) -> None:  # fmt: skip
    """The way out of every client run: stop ``client``, remove its ``device`` (when given),
    ``files`` and ``directory``. Each step runs even when one before it raised or was cancelled
    (a second cancellation while stopping): what was raised goes on after the last step."""
    try:
        await stop_client(client)
    finally:
        try:
            if ip_exe is not None and device is not None:
                await asyncio.shield(cleanup_device(ip_exe, device))
        finally:
            for path in files:
                with contextlib.suppress(OSError):
                    path.unlink()
            shutil.rmtree(directory, ignore_errors=True)


async def command(argv: Sequence[str], deadline: float) -> tuple[int, str]:
    """Run a short helper command (``ip``, ``wg``) to its end: (exit status, its output, bounded).
    A command still running at ``deadline`` (at most :data:`COMMAND_SECONDS` from now) is killed
    and raises ``ProbeFailure(client_failed)``: a slow local command is the probe's problem, not
    the network's."""
    deadline = min(deadline, asyncio.get_running_loop().time() + COMMAND_SECONDS)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(),
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
    except TimeoutError as exc:
        name = Path(argv[0]).name
        raise ProbeFailure(CLIENT_FAILED, f"{name} {' '.join(argv[1:3])} did not finish") from exc
    finally:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
    return status, kept.decode("utf-8", errors="replace")


def address_problem(address: str, avoid: Iterable[str] = ()) -> str | None:
    """Why ``address`` may not be a tunnel's address (None when it may): not an IP, outside
    :data:`TUNNEL_POOLS`, or one of ``avoid`` (the endpoint's, the helper's). Pure."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address[:60]!r} is not an IP address"
    if not any(ip in pool for pool in TUNNEL_POOLS):
        return f"{ip} is not a private address (RFC 1918, 100.64.0.0/10, ULA or the lab's)"
    for other in avoid:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(other) == ip:
                return f"{ip} is the address of the endpoint or the test helper"
    return None


def route_conflict(output: str) -> str | None:
    """Why ``ip -o route get <address>`` output forbids the address (None when it does not):
    the namespace has it already (``local``), or reaches it on a link without a gateway (a
    neighbour's address, the gateway's own). Pure."""
    words = output.split()
    if not words:
        return None
    if words[0] == "local":
        return "an address of this namespace already"
    if words[0] in ("unreachable", "blackhole", "prohibit", "throw"):
        return None  # routed nowhere: nothing is taken over
    if "via" not in words:
        return "reached on a link of this namespace (a neighbour or the gateway)"
    return None


async def address_conflict(ip_exe: str, address: str, deadline: float) -> str | None:
    """:func:`route_conflict` for ``address`` in the probe's namespace (no route at all: None)."""
    status, out = await command([ip_exe, "-o", "route", "get", address], deadline)
    if status != 0:
        if "unreachable" in out.lower():
            return None
        raise ProbeFailure(CLIENT_FAILED, f"ip route get {address}: {out.strip()[:200]}")
    return route_conflict(out)


def host_prefix(address: str) -> str:
    """``address`` as a host prefix: ``/32`` for IPv4, ``/128`` for IPv6."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


async def set_address(
    ip_exe: str, device: str, address: str, mtu: int, deadline: float, avoid: Iterable[str] = ()
) -> None:
    """Give ``device`` its tunnel address as a host prefix (no connected route) and bring it up;
    ``client_failed`` for an address the module notes forbid (nothing is changed then)."""
    problem = address_problem(address, avoid)
    if problem is None:
        conflict = await address_conflict(ip_exe, address, deadline)
        problem = f"{address}: {conflict}" if conflict else None
    if problem is not None:
        raise ProbeFailure(CLIENT_FAILED, f"tunnel address refused: {problem}")
    for argv in (
        [ip_exe, "addr", "add", host_prefix(address), "dev", device],
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


def resolver_server(resolver: str | None) -> tuple[str, int] | None:
    """``ctx.resolver`` (``ip:port``, ``[v6]:port`` or an IP) as (ip, port); None for the
    system's. Raises ValueError for anything else."""
    if not resolver:
        return None
    host, port = resolver, "53"
    if resolver.startswith("["):
        host, _, rest = resolver[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif resolver.count(":") == 1:
        host, _, port = resolver.partition(":")
    ip = ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port: {port[:10]!r}")
    return str(ip), int(port)


def keep_addresses(run: Run, addresses: Iterable[str]) -> None:
    """Remember the endpoint's addresses on the run, so that a private entry's are scrubbed
    from its measurement wherever they show (stages, connects, events)."""
    run.endpoint_addresses.update(addresses)


async def resolve(entry: Entry, ctx: Context, run: Run, deadline: float) -> str:
    """The endpoint's IP: the address itself, or (``resolve`` stage) the first that
    ``ctx.resolver`` (the system's when None) gives for the name, the query recorded in the
    trace (:func:`msgwatch.steps.dns.resolve`). Every address is kept on the run."""
    with contextlib.suppress(ValueError):
        ip = str(ipaddress.ip_address(entry.address))
        keep_addresses(run, [ip])
        return ip
    try:
        server = resolver_server(ctx.resolver)
    except ValueError as exc:
        raise run.fail("resolve", BAD_PARAMS, problems=[f"resolver: {exc}"[:200]]) from exc
    async with run.stage("resolve") as detail:
        found = await dns.resolve(run.trace, run.trace.new_transaction(), entry.address, server,
                                  deadline)  # fmt: skip
        keep_addresses(run, found.addresses[:64])
        detail["addresses"] = found.addresses[:8]
        if not found.addresses:
            raise ProbeFailure(found.failure or DNS_NO_ANSWER)
        return found.addresses[0]


def bad_params(run: Run, problems: Sequence[str], stage: str = "connect") -> StageFailed:
    """Record ``stage`` (the transport's first) as failed with ``bad_params``, the problems in
    its detail (bounded); the exception to raise."""
    shown = [p[:MAX_PROBLEM] for p in problems[:MAX_PROBLEMS]]
    return run.fail(stage, BAD_PARAMS, problems=shown)

"""A real server as a child process: start, readiness, bind check, stop — and the ``/proc`` readers.

Each server runs in the foreground (``dnsmasq -k``, nginx with ``daemon off`` and ``master_process
off``, coturn without ``-o``) as the leader of a new session: a Ctrl-C in the terminal does not reach
it, and signalling its process group also reaches anything it forked (dnsmasq forks per TCP query).
Its config, pid file and logs are files in a run directory.

Ready means: the process itself (not a stray server of a crashed run) holds the sockets it should
(read from ``/proc/<pid>/net``, which is the process's own network namespace), and it answers (a
caller-supplied check). Then every socket it holds must be bound inside the allowed networks: a
server that ignored its configuration and bound a wildcard or the host's interfaces fails the start
(coturn does that when given both ``-n`` and ``-c``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
"""Where executables are looked for: the PATH, plus the sbin directories a user's PATH may lack."""


class ServerError(RuntimeError):
    """A server did not start (or stop). ``server``, ``what`` and ``logs`` say which, how, where."""

    def __init__(self, server: str, what: str, logs: Sequence[Path] = (), tail: str = "") -> None:
        self.server, self.what, self.logs, self.tail = server, what, list(logs), tail
        where = f"; see {' and '.join(map(str, self.logs))}" if self.logs else ""
        super().__init__(f"{server} {what}{where}{tail}")


def missing(executables: dict[str, str], search: str = SEARCH) -> str | None:
    """Which of ``executables`` (name → Debian package) are not installed, as one sentence, or None."""
    gone = [exe for exe in executables if shutil.which(exe, path=search) is None]
    if not gone:
        return None
    names = ", ".join(f"{exe} (Debian package {executables[exe]})" for exe in gone)
    packages = " ".join(dict.fromkeys(executables[exe] for exe in gone))
    return f"not installed: {names}; install with: apt-get install {packages}"


def which(exe: str, search: str = SEARCH) -> str:
    return shutil.which(exe, path=search) or exe


def alive_groups(pgids: Iterable[int]) -> set[int]:
    """Those of ``pgids`` with a running process (zombies, dead but not yet reaped, do not count)."""
    wanted = {str(p): p for p in pgids}
    found: set[int] = set()
    if not wanted:
        return found
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] in wanted and fields[0] not in "ZX":
            found.add(wanted[fields[2]])
    return found


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` runs."""
    return bool(alive_groups([pgid]))


def end_groups(
    pgids: Iterable[int], procs: Iterable[subprocess.Popen[bytes]] = (), grace: float = 3.0
) -> set[int]:
    """SIGTERM process groups, SIGKILL after ``grace`` s; returns the groups still alive (none, we hope).

    ``procs`` are our own children among them: they are reaped while waiting, so no zombie is left.
    """
    remaining, children = set(pgids), list(procs)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pgid in list(remaining):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                remaining.discard(pgid)
        deadline = time.monotonic() + wait
        while remaining and time.monotonic() < deadline:
            for proc in children:
                proc.poll()  # reap our child
            remaining &= alive_groups(remaining)
            if remaining:
                time.sleep(0.01)
        remaining &= alive_groups(remaining)
        if not remaining:
            break
    for proc in children:
        proc.poll()
    return remaining


def end_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, grace: float = 3.0) -> bool:
    """SIGTERM a process group, SIGKILL after ``grace`` s; True once none of it is left."""
    return not end_groups([pgid], [proc] if proc is not None else [], grace)


def bound(pid: int) -> set[tuple[str, str, int]]:
    """(``tcp``/``udp``, address, port) of every socket ``pid`` has bound; empty once it is gone."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        tables = {
            t: Path(f"/proc/{pid}/net/{t}").read_text() for t in ("tcp", "udp", "tcp6", "udp6")
        }
    except OSError:
        return set()
    found = set()
    for table, text in tables.items():
        for line in text.splitlines()[1:]:
            cols = line.split()
            host, port = cols[1].split(":")
            if cols[9] not in inodes or int(port, 16) == 0:
                continue
            raw = bytes.fromhex(host)
            ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            found.add((table[:3], str(ip), int(port, 16)))
    return found


def _foreign(
    held: Iterable[tuple[str, str, int]], allowed: Sequence[IPNetwork], wildcard: bool = False
) -> list[str]:
    return sorted(
        f"{proto} {ip}:{port}"
        for proto, ip, port in held
        if not any(ipaddress.ip_address(ip) in network for network in allowed)
        and not (wildcard and ipaddress.ip_address(ip).is_unspecified)
    )


def foreign_binds(
    pid: int, allowed: Sequence[IPNetwork] = LOOPBACK, wildcard: bool = False
) -> list[str]:
    """Sockets of ``pid`` bound to an address outside ``allowed`` (wildcards are outside, unless
    ``wildcard``)."""
    return _foreign(bound(pid), allowed, wildcard)


def _always() -> bool:
    return True


@dataclass
class Server:
    """One server process: how to start it, where it logs, how to tell it is up."""

    name: str
    argv: list[str]
    log: Path
    binds: set[tuple[str, str, int]]
    """(protocol, address, port) the process must hold before it counts as up."""
    answers: Callable[[], bool] = _always
    allowed: Sequence[IPNetwork] = LOOPBACK
    """Every socket of the server must be bound inside these networks."""
    wildcard: bool = False
    """The server may bind the wildcard address (``wireguard-go`` cannot bind one address): only
    for a namespace whose every address is in ``allowed``, which the lab checks before servers
    start (:meth:`msgwatch.lab.topology.Lab._check_safety`)."""
    error: type[ServerError] = ServerError
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        """Where the server's stdout and stderr go (errors from before its log opens)."""
        return self.log.with_name(f"{self.name}.out")

    def start(self, run: Path) -> int:
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=run,
            )  # fmt: skip
        return self.proc.pid

    def fail(self, what: str) -> ServerError:
        """The error for ``what`` went wrong, naming the logs and quoting their last lines."""
        logs = [p for p in (self.log, self.out) if p.is_file() and p.stat().st_size] or [self.log]
        tail = "".join(
            f"\n    {line}" for p in logs if p.is_file() for line in p.read_text(errors="replace")
            .splitlines()[-5:] if line.strip()
        )  # fmt: skip
        return self.error(self.name, what, logs, tail)

    def ready(self) -> bool:
        """One readiness check; raises the server's error if it exited or bound a foreign address."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise self.fail(f"exited at start (status {self.proc.returncode})")
        if not (self.binds <= bound(self.proc.pid) and self.answers()):
            return False
        bad = foreign_binds(self.proc.pid, self.allowed, self.wildcard)  # again: after it answered
        if bad:
            networks = ", ".join(str(n) for n in self.allowed)
            raise self.fail(f"bound addresses outside {networks} ({', '.join(bad)})")
        return True

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until the process holds its sockets (ours, not a stray server's) and answers."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise self.fail(f"did not come up within {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> bool:
        if self.proc is None:
            return True
        gone = end_group(self.proc.pid, self.proc)
        if gone:
            self.proc.wait(timeout=2)  # reaped: no zombie left either
        return gone


def wait_all_ready(servers: Sequence[Server], timeout: float = 5.0) -> None:
    """Wait until every server is ready (checked together, so slow starters overlap)."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        pending = [s for s in pending if not s.ready()]
        if pending and time.monotonic() > deadline:
            raise pending[0].fail(f"did not come up within {timeout:.0f} s")
        if pending:
            time.sleep(0.02)


def stop_all(servers: Sequence[Server], grace: float = 3.0) -> list[str]:
    """Stop every started server at once; returns the names of those that would not go."""
    started = [s for s in servers if s.proc is not None]
    procs = [s.proc for s in started if s.proc is not None]
    left = end_groups([p.pid for p in procs], procs, grace)
    for proc in procs:
        if proc.pid not in left:
            proc.wait(timeout=2)
    return [s.name for s in started if s.proc is not None and s.proc.pid in left]

"""Network namespaces through iproute2: create, configure in batches, run code inside, delete.

Everything goes through the ``ip`` command (Debian ``iproute2``): a whole topology is a handful of
``ip -batch`` invocations, one per namespace, run in parallel. Code that must talk from inside a
namespace without a new process (readiness checks, tests) uses :func:`run_in`: a fresh thread that
enters the namespace with ``setns(2)`` — a network namespace is a per-thread property, so the rest of
the process stays where it was.

:class:`LabError` is the lab's one error: its message says what failed and what to do.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from msgwatch.lab.procs.proc import SEARCH, missing, which

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
PACKAGES = {
    "ip": "iproute2",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
    "nginx": "nginx-light",
    "turnserver": "coturn",
}
"""Executables the lab runs → the Debian package that provides each."""


class LabError(RuntimeError):
    """The lab cannot be built, run or removed; the message says what failed and what to do."""


def unavailable(search: str = SEARCH, euid: int | None = None) -> str | None:
    """Why the lab cannot run here (not root, a package missing), or None."""
    problems = []
    if (os.geteuid() if euid is None else euid) != 0:
        problems.append("the lab must run as root (it creates network namespaces)")
    absent = missing(PACKAGES, search)
    if absent:
        problems.append(absent)
    return "; ".join(problems) or None


def _ip() -> str:
    return which("ip")


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its stdout. A failure raises :class:`LabError` quoting iproute2."""
    result = subprocess.run([_ip(), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def batches(work: Mapping[str | None, Sequence[str]], force: bool = False) -> None:
    """Run ``ip [-n NS] -batch -`` for every namespace of ``work`` at once (None: the current one).

    ``force`` goes on after a failed line (for removal, where some things may be gone already).
    """
    procs = []
    for ns, lines in work.items():
        if not lines:
            continue
        argv = [_ip(), *(["-n", ns] if ns else []), *(["-force"] if force else []), "-batch", "-"]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append((ns, proc, "\n".join(lines) + "\n"))
    errors = []
    for ns, proc, text in procs:
        _, err = proc.communicate(text, timeout=30)
        if proc.returncode != 0 and not force:
            errors.append(f"{ns or 'ip'}: {err.strip()}")
    if errors:
        raise LabError("configuring the namespaces failed: " + "; ".join(errors))


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside namespace ``ns``."""
    return [_ip(), "netns", "exec", ns, *argv]


def sysctls(settings: Mapping[str, Sequence[str]]) -> None:
    """Set ``key=value`` sysctls inside each namespace (one ``sysctl`` process each, in parallel)."""
    procs = [
        (ns, subprocess.Popen(exec_argv(ns, ["sysctl", "-q", "-w", *values]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for ns, values in settings.items() if values
    ]  # fmt: skip
    errors = []
    for ns, proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            errors.append(f"{ns}: {err.strip()}")
    if errors:
        raise LabError("setting sysctls failed: " + "; ".join(errors))


def namespaces() -> list[str]:
    """Names of every network namespace ``ip netns`` knows."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def delete(names: Iterable[str]) -> None:
    """Delete namespaces (those already gone are skipped)."""
    existing = set(namespaces())
    lines = [f"netns del {n}" for n in names if n in existing]
    if lines:
        batches({None: lines}, force=True)


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def addresses(ns: str) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """(interface, address/prefix) of every address configured in ``ns``."""
    found = []
    data: list[dict[str, Any]] = json.loads(ip("-j", "-n", ns, "addr", "show") or "[]")
    for link in data:
        for info in link.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            found.append((str(link["ifname"]), iface))
    return found


def default_routes(ns: str) -> list[str]:
    """Every default route in ``ns`` (IPv4 and IPv6), as ``ip route`` prints it."""
    lines = []
    for family in ("-4", "-6"):
        lines += ip(family, "-n", ns, "route", "show", "default").splitlines()
    return [line for line in lines if line.strip()]


_libc: ctypes.CDLL | None = None


def _setns(ns: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {ns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def run_in(ns: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
    """Call ``fn(*args)`` in a new thread inside namespace ``ns``; its result (or its exception).

    Sockets ``fn`` opens belong to ``ns``. The thread ends with the call, and with it its namespace.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            _setns(ns)
            outcome["result"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} in {ns} took more than {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result

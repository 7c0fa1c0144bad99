"""What every lab server builder shares: the :class:`Context` (run directory, namespaces,
executables), address helpers, and readiness checks run inside a namespace.

A server is a :class:`msgwatch.lab.procs.proc.Server` whose command runs as ``ip netns exec <ns>``
and whose every socket must be bound inside the lab's networks
(:data:`msgwatch.lab.plan.LAB_NETWORKS`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from msgwatch.lab import netns
from msgwatch.lab import plan as P
from msgwatch.lab.procs.proc import Server, which

Bind = tuple[str, str, int]
"""(``tcp``/``udp``, address, port) a server must hold."""
DEFAULT_CERT = "default.lab.invalid"
"""The name on the certificate of a TLS server asked for a name it does not serve."""
IssueFn = Callable[[str], tuple[Path, Path]]
"""Issues a lab-CA certificate for a host name: (certificate, key) files."""


def norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


def hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class Context:
    """What every server builder needs: the run directory, the namespaces, the executables."""

    run: Path
    topology: P.Topology
    exe: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.exe:
            self.exe = {name: which(name) for name in ("dnsmasq", "nginx", "turnserver")}

    def server(
        self, name: str, role: str, argv: list[str], binds: Iterable[Bind],
        answers: Callable[[], bool] | None = None,
    ) -> Server:  # fmt: skip
        server = Server(name, netns.exec_argv(self.topology.ns(role), argv), self.run / f"{name}.log",
                        {(p, norm(a), port) for p, a, port in binds}, allowed=P.LAB_NETWORKS)  # fmt: skip
        if answers is not None:
            server.answers = answers
        return server


def in_ns(ctx: Context, role: str, fn: Callable[..., bool], *args: object) -> Callable[[], bool]:
    """A readiness check that runs ``fn(*args)`` inside ``role``'s namespace."""
    ns = ctx.topology.ns(role)
    return lambda: netns.run_in(ns, fn, *args, timeout=5)

"""What a censor rule is compiled for (:class:`CensorContext`) and what it compiles to (:class:`Compiled`).

The context names one censoring router: its namespace, its two interfaces, the ISP's LAN prefixes,
the ISP resolver's and the block page server's addresses, and a run directory for pid files, logs and
the nft file. Compiling is pure; only :func:`msgwatch.lab.censor.apply` touches the system.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from msgwatch.lab.plan import LAB_V4, LAB_V6

TABLE = "msgwatch_censor"
"""The nftables table (family ``inet``) holding every native rule of one censor."""
CHAIN = "MSGWATCH_CENSOR"
"""The iptables/ip6tables chain (in each table used) holding every string-match rule."""
TC_HANDLE = "6d77"
"""Major handle of the root qdisc the censor installs ("mw"): remove() deletes only its own."""


def in_lab(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether ``network`` is inside the lab: the only networks a censor rule may name."""
    if isinstance(network, ipaddress.IPv4Network):
        return network.subnet_of(LAB_V4)
    return network.subnet_of(LAB_V6)


@dataclass(frozen=True)
class CensorContext:
    """One censoring router: where its rules go and the addresses they may refer to."""

    netns: str
    lan_if: str
    """Interface towards the probe (the ISP's customers)."""
    wan_if: str
    """Interface towards transit (the rest of the Internet)."""
    lan_prefix: str
    lan_prefix6: str | None = None
    resolver_ip: str = ""
    """The ISP resolver (dnsmasq in this namespace)."""
    blockpage_ip: str = ""
    """The block page server: the default forged DNS answer and the target of HTTP redirects."""
    run_dir: Path = Path("/run/msgwatch-lab/censor")
    """Pid files, logs, the nft file and the resolver lines of this censor."""

    def __post_init__(self) -> None:
        for name in ("lan_prefix", "lan_prefix6"):
            value = getattr(self, name)
            if value is not None and not in_lab(ipaddress.ip_network(value, strict=False)):
                raise ValueError(f"CensorContext.{name} {value} is outside the lab's networks")
        for name in ("resolver_ip", "blockpage_ip"):
            value = getattr(self, name)
            if value and not in_lab(ipaddress.ip_network(value)):
                raise ValueError(f"CensorContext.{name} {value} is outside the lab's networks")


@dataclass(frozen=True)
class CensorProcess:
    """A helper process run inside the censor's namespace (the DNS or HTTP injector)."""

    name: str
    """Unique per censor; names its pid file ``censor-<name>.pid`` and log in the run directory."""
    argv: list[str]
    ready: Path
    """A file the process creates once its sockets are open; apply() waits for it."""


@dataclass
class Compiled:
    """One censor's rules, compiled: text and argv only, nothing applied yet."""

    nft: str
    """One nftables script: creates (or atomically replaces) ``table inet msgwatch_censor``."""
    iptables: list[list[str]] = field(default_factory=list)
    """``iptables``/``ip6tables`` argv appending to the censor's own chains (created by apply())."""
    tc: list[list[str]] = field(default_factory=list)
    resolver_lines: list[str] = field(default_factory=list)
    """dnsmasq configuration lines for the ISP resolver (resolver lies)."""
    processes: list[CensorProcess] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """One line per rule, ``r<i> <type> <label>``: what was compiled, for logs and status."""

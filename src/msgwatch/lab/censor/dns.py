"""DNS tampering: the ISP resolver lying (dnsmasq lines) and on-path injection racing the answer.

Resolver lies are configuration of the ISP's own resolver — the commonest national technique and
the easiest to see (the answer differs from a public resolver's). Injection is the GFW's technique:
a box on the path sees the query and answers first in the resolver's name; the real answer arrives
later and is ignored by most stub resolvers. In a lab on veth links the real resolver is a fraction
of a millisecond away, so a userspace injector could lose the race; ``hold_ms`` makes it
deterministic by holding the matching queries back (an iptables drop in the raw table on the LAN
interface; the injector, which saw the query on the wire before netfilter did, re-sends it after
``hold_ms``). ``hold_ms = 0`` is the pure race.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from msgwatch.lab.censor.base import Address, Emitter, Name, Rule
from msgwatch.lab.censor.keywords import injector


class DnsNxdomain(Rule):
    """The ISP resolver answers NXDOMAIN for ``names`` and every name under them."""

    type: Literal["dns_nxdomain"] = "dns_nxdomain"
    names: tuple[Name, ...] = Field(min_length=1)
    hours_supported = False

    def emit(self, out: Emitter) -> None:
        for name in self.names:
            out.resolver(f"address=/{name}/")


class DnsForge(Rule):
    """The ISP resolver answers ``names`` (and names under them) with ``address``."""

    type: Literal["dns_forge"] = "dns_forge"
    names: tuple[Name, ...] = Field(min_length=1)
    address: Address | None = None
    """Default: the context's block page server."""
    address6: Address | None = None
    """AAAA answer; without it AAAA queries get an empty answer (NODATA)."""
    hours_supported = False

    def emit(self, out: Emitter) -> None:
        address = forged_address(self.address, out)
        for name in self.names:
            out.resolver(f"address=/{name}/{address}")
            if self.address6:
                out.resolver(f"address=/{name}/{self.address6}")
            else:  # answer AAAA from here (NODATA) instead of forwarding it for the real answer
                out.resolver(f"local=/{name}/")


def forged_address(address: str | None, out: Emitter) -> str:
    address = address or out.ctx.blockpage_ip
    if not address or ipaddress.ip_address(address).version != 4:
        raise ValueError("the forged answer needs an IPv4 `address` or the context's blockpage_ip")
    return address


def wire_name(name: str) -> str:
    """``|07|blocked|07|example|00|``: the name as it appears in a query, for iptables' hex string."""
    labels = "".join(f"|{len(label):02x}|{label}" for label in name.split("."))
    return f"{labels}|00|"


class DnsInject(Rule):
    """An on-path injector answers queries for ``names`` first; the real answer follows."""

    type: Literal["dns_inject"] = "dns_inject"
    names: tuple[Name, ...] = Field(min_length=1, max_length=64)
    address: Address | None = None
    """The forged A record (default: the block page server)."""
    address6: Address | None = None
    """The forged AAAA record; without it AAAA queries are not answered by the injector."""
    ttl: int = Field(default=60, ge=0, le=86400)
    hold_ms: int = Field(default=100, ge=0, le=2000)
    """Hold the real query back this long so the forged answer wins (0: race without help)."""
    resolvers: tuple[Address, ...] = ()
    """Only queries to these resolvers (default: to any address, crossing or ending at the censor)."""

    def emit(self, out: Emitter) -> None:
        address = forged_address(self.address, out)
        if self.hold_ms:
            for fam in ("ip", "ip6") if out.ctx.lan_prefix6 else ("ip",):
                resolvers = [r for r in self.resolvers
                             if ipaddress.ip_address(r).version == (4 if fam == "ip" else 6)]  # fmt: skip
                if self.resolvers and not resolvers:
                    continue
                dest = ["-d", ",".join(resolvers)] if resolvers else []
                for name in self.names:
                    matches = ["-i", out.ctx.lan_if, "-p", "udp", *dest, "--dport", "53", "-m",
                               "string", "--hex-string", wire_name(name), "--algo", "bm", "--icase"]  # fmt: skip
                    out.iptables(fam, "raw", matches, ["-j", "DROP"])
        spec = {"kind": "dns", "names": self.names, "address": address, "address6": self.address6,
                "ttl": self.ttl, "hold_ms": self.hold_ms, "resolvers": self.resolvers,
                "hours": self.hours}  # fmt: skip
        injector(out, "dns", spec)

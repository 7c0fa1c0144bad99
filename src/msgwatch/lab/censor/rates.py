"""Bandwidth rules: policing in nftables (drops above a rate) and shaping with tc (queues).

Russia's throttling of Twitter (2021) and YouTube (2024) was a *policer*: TSPU boxes dropped packets
of the matched flows above ~130-150 kbit/s in both directions, keyed on the SNI. ``police`` does
that with nft's ``limit rate over … drop``, per flow (a meter keyed on the 4-tuple) or shared by all
matching flows, on destination prefixes or — through a conntrack mark set by an iptables string
match on the ClientHello — on an SNI keyword. ``shape`` is the other kind of cap, a queue that
delays instead of dropping (tc htb on both interfaces: the LAN side caps downloads, the WAN side
uploads), for a whole ISP or for prefixes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from msgwatch.lab.censor.base import (
    Emitter,
    Keyword,
    Port,
    Prefix,
    Rule,
    family_match,
    split_families,
)
from msgwatch.lab.censor.context import TC_HANDLE
from msgwatch.lab.censor.keywords import keyword_matches


class Police(Rule):
    """Drop the matching traffic above ``rate_kbit`` kbit/s, each direction on its own."""

    type: Literal["police"] = "police"
    rate_kbit: int = Field(ge=8, le=10_000_000)
    to: tuple[Prefix, ...] = ()
    keywords: tuple[Keyword, ...] = ()
    """Police flows whose ClientHello/HTTP request contains one of these (SNI-keyed throttling)."""
    ports: tuple[Port, ...] = Field(default=(), max_length=15)
    """With keywords: where to look for them (default 443 and 80); else: police only these ports."""
    per_flow: bool = True
    """Each flow gets the rate (TSPU-like); False: all matching flows share it."""
    burst_bytes: int | None = Field(default=None, ge=1500, le=100_000_000)
    """Token bucket depth; default: a quarter second at the rate, at least 4 full packets."""
    direction: Literal["both", "up", "down"] = "both"
    """Which way to police: ``up`` (towards ``to``/``ports``: the flow's original direction with
    keywords), ``down`` (the packets coming back: the reply direction), ``both``."""

    @model_validator(mode="after")
    def _something(self) -> Police:
        if not (self.to or self.keywords or self.ports):
            raise ValueError(
                "police needs `to`, `keywords` and/or `ports` (for an ISP-wide cap use `shape`)"
            )
        return self

    def emit(self, out: Emitter) -> None:
        rate = self.rate_kbit * 1000 // 8
        burst = self.burst_bytes or max(rate // 4, 6000)
        limit = f"limit rate over {rate} bytes/second burst {burst} bytes"
        mark = ""
        if self.keywords:
            bit = out.mark()
            mark = f"ct mark & {bit:#010x} == {bit:#010x}"
            for fam, nets in out.families(self.to):
                for keyword in self.keywords:
                    matches = keyword_matches(nets, self.ports or ["443", "80"], keyword)
                    target = ["-j", "CONNMARK", "--set-xmark", f"{bit:#x}/{bit:#x}"]
                    out.iptables(fam, "filter", matches, target)
        for fam, nets in split_families(self.to) or [("ip", ()), ("ip6", ())]:
            nfproto = f"meta nfproto {'ipv4' if fam == 'ip' else 'ipv6'}"
            if mark:  # the flow is marked: its direction says up or down
                towards = f"{mark} {nfproto} ct direction original"
                back = f"{mark} {nfproto} ct direction reply"
            else:
                towards, back = family_match(fam, nets, self.ports, None)
                towards, back = f"{nfproto} {towards}", f"{nfproto} {back}"
            for direction, match in (("up", towards), ("down", back)):
                if self.direction not in ("both", direction):
                    continue
                if self.per_flow:
                    meter = f"{out.name}_{direction}{fam.removeprefix('ip') or '4'}"
                    key = f"{fam} saddr . {fam} daddr . meta l4proto . th sport . th dport"
                    l4 = "" if "l4proto" in match else " meta l4proto { tcp, udp }"
                    out.nft(f"{match}{l4} meter {meter} size 65535 {{ {key} {limit} }} drop")
                else:
                    out.nft(f"{match} {limit} drop")


TC_DEFAULT_CLASS = f"{TC_HANDLE}:1"


class Shape(Rule):
    """Queue traffic down to ``rate_kbit`` kbit/s (tc htb): an ISP-wide cap, or one for prefixes."""

    type: Literal["shape"] = "shape"
    rate_kbit: int = Field(ge=8, le=10_000_000)
    to: tuple[Prefix, ...] = ()
    """Only traffic to and from these prefixes (default: everything through the censor)."""
    hours_supported = False

    def emit(self, out: Emitter) -> None:
        ctx = out.ctx
        if out.out.tc_classes == 0:
            for dev in (ctx.lan_if, ctx.wan_if):
                out.tc(["tc", "qdisc", "replace", "dev", dev, "root", "handle", f"{TC_HANDLE}:",
                        "htb", "default", "1"])  # fmt: skip
                out.tc(["tc", "class", "add", "dev", dev, "parent", f"{TC_HANDLE}:", "classid",
                        TC_DEFAULT_CLASS, "htb", "rate", "10gbit"])  # fmt: skip
        out.out.tc_classes += 1
        classid = f"{TC_HANDLE}:{out.out.tc_classes + 15:x}"
        rate = f"{self.rate_kbit}kbit"
        burst = str(max(self.rate_kbit * 1000 // 8 // 10, 3200))  # 100 ms of traffic
        queue = str(max(self.rate_kbit * 1000 // 8 // 2, 30000))  # 500 ms, 20 packets at least
        for dev, side in ((ctx.lan_if, "src"), (ctx.wan_if, "dst")):
            out.tc(["tc", "class", "add", "dev", dev, "parent", f"{TC_HANDLE}:", "classid", classid,
                    "htb", "rate", rate, "ceil", rate, "burst", burst, "cburst", burst])  # fmt: skip
            # A short queue: the default (1000 packets) would hold a minute of traffic at a
            # low rate, and a new connection's handshake would wait behind it.
            out.tc(["tc", "qdisc", "add", "dev", dev, "parent", classid, "bfifo", "limit", queue])
            prio = str(out.out.tc_classes)
            if not self.to:
                out.tc(["tc", "filter", "add", "dev", dev, "parent", f"{TC_HANDLE}:", "protocol",
                        "all", "prio", prio, "u32", "match", "u32", "0", "0", "flowid", classid])  # fmt: skip
            for fam, nets in split_families(self.to):
                proto, what = ("ip", "ip") if fam == "ip" else ("ipv6", "ip6")
                for net in nets:
                    out.tc(["tc", "filter", "add", "dev", dev, "parent", f"{TC_HANDLE}:",
                            "protocol", proto, "prio", prio, "u32", "match", what, side, net,
                            "flowid", classid])  # fmt: skip

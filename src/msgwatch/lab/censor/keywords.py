"""Rules keyed on a host name inside the first bytes of a TCP flow: TLS SNI or HTTP Host.

nftables cannot search a payload for a string at an unknown offset; iptables' ``string`` match
(Boyer-Moore, case-insensitive) can, and it coexists with the native table. So the keyword is
matched in the censor's iptables chain, and what happens next is done where it is simplest:
``REJECT --reject-with tcp-reset`` right there, or a conntrack mark that the nft chain (which runs
after iptables' FORWARD, priority filter + 10) turns into a flow-long drop, or a drop of the request
while the injector process answers it with a block page.

Like the censors Geneva models, the match is per packet, without stream reassembly: a ClientHello
split across segments evades it, as it evades many real censors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field, model_validator

from msgwatch.lab.censor.base import Emitter, Keyword, Port, Prefix, Rule, split_families

WEB_PORTS = ("443", "80")


def keyword_matches(nets: Sequence[str], ports: Sequence[str], keyword: str) -> list[str]:
    """iptables matches: TCP to ``ports`` (and ``nets``) whose packet contains ``keyword``."""
    dest = ["-d", ",".join(nets)] if nets else []
    port = ["-m", "multiport", "--dports", ",".join(p.replace("-", ":") for p in ports)]
    return [
        "-p",
        "tcp",
        *dest,
        *port,
        "-m",
        "string",
        "--string",
        keyword,
        "--algo",
        "bm",
        "--icase",
    ]


class _KeywordRule(Rule):
    keywords: tuple[Keyword, ...] = Field(min_length=1)
    ports: tuple[Port, ...] = Field(default=WEB_PORTS, min_length=1, max_length=15)
    to: tuple[Prefix, ...] = ()
    """Only flows to these prefixes (default: any destination)."""

    def each(self, out: Emitter) -> list[tuple[str, Sequence[str], str]]:
        return [(fam, nets, kw) for fam, nets in out.families(self.to) for kw in self.keywords]


class ResetOnKeyword(_KeywordRule):
    """Reset a TCP flow whose ClientHello (SNI) or HTTP request (Host) contains a keyword."""

    type: Literal["reset_on_keyword"] = "reset_on_keyword"

    def emit(self, out: Emitter) -> None:
        for fam, nets, keyword in self.each(out):
            out.iptables(fam, "filter", keyword_matches(nets, self.ports, keyword),
                         ["-j", "REJECT", "--reject-with", "tcp-reset"])  # fmt: skip


class DropOnKeyword(_KeywordRule):
    """Silently drop a flow from its ClientHello / HTTP request with a keyword on (a timeout)."""

    type: Literal["drop_on_keyword"] = "drop_on_keyword"
    residual_seconds: int = Field(default=0, ge=0, le=3600)
    """After a trigger, also drop new connections from the same client to the same server and
    port for this long (residual censorship, as the GFW's ~90 s); 0: only the flow itself."""

    def emit(self, out: Emitter) -> None:
        bit = out.mark()
        for fam, nets, keyword in self.each(out):
            out.iptables(fam, "filter", keyword_matches(nets, self.ports, keyword),
                         ["-j", "CONNMARK", "--set-xmark", f"{bit:#x}/{bit:#x}"])  # fmt: skip
        marked = f"ct mark & {bit:#010x} == {bit:#010x}"
        if not self.residual_seconds:
            out.nft(f"{marked} drop")
            return
        for fam in ("ip", "ip6"):
            addr = "ipv4_addr" if fam == "ip" else "ipv6_addr"
            residual = out.nft_set(
                f"residual{fam.removeprefix('ip') or '4'}",
                f"type {addr} . {addr} . inet_service; flags dynamic,timeout; "
                f"timeout {self.residual_seconds}s;",
            )
            key = f"{fam} saddr . {fam} daddr . tcp dport"
            out.nft(f"{marked} ct direction original meta l4proto tcp add @{residual} {{ {key} }}")
            out.nft(f"meta l4proto tcp {key} @{residual} drop")
        out.nft(f"{marked} drop")


class HttpRedirectBlockpage(Rule):
    """Answer plain HTTP with the block page: by Host keyword (injected) or by destination (DNAT)."""

    type: Literal["http_redirect_blockpage"] = "http_redirect_blockpage"
    keywords: tuple[Keyword, ...] = ()
    """Requests whose packet contains one of these (the Host header) get the block page: the
    request is dropped and the injector answers it in the server's name."""
    to: tuple[Prefix, ...] = ()
    """Without keywords: every connection to these prefixes' ``ports`` is DNATed to the block
    page server. With keywords: only requests to these prefixes are inspected."""
    ports: tuple[Port, ...] = Field(default=("80",), min_length=1, max_length=15)
    respond: Literal["page", "redirect"] = "page"
    """Injected answer: ``page`` (403 with a block page) or ``redirect`` (302 to the block page
    server, as ISPs that send users to a "site blocked" portal do)."""

    @model_validator(mode="after")
    def _something(self) -> HttpRedirectBlockpage:
        if not self.keywords and not self.to:
            raise ValueError("http_redirect_blockpage needs `keywords` and/or `to`")
        return self

    def emit(self, out: Emitter) -> None:
        if not out.ctx.blockpage_ip:
            raise ValueError("http_redirect_blockpage needs the context's blockpage_ip")
        if not self.keywords:
            for fam, nets in split_families(self.to):
                if fam == "ip6":
                    raise ValueError("http_redirect_blockpage: DNAT of IPv6 prefixes is not "
                                     "supported (the block page server is IPv4)")  # fmt: skip
                ports = "{ " + ", ".join(self.ports) + " }"
                out.nat(f"ip daddr {{ {', '.join(nets)} }} tcp dport {ports} "
                        f"dnat ip to {out.ctx.blockpage_ip}:80")  # fmt: skip
            return
        rules = [(fam, nets, kw) for fam, nets in out.families(self.to) for kw in self.keywords]
        for fam, nets, keyword in rules:
            out.iptables(fam, "filter", keyword_matches(nets, self.ports, keyword), ["-j", "DROP"])
        spec = {"kind": "http", "keywords": self.keywords, "ports": self.ports, "to": self.to,
                "respond": self.respond, "blockpage_ip": out.ctx.blockpage_ip,
                "hours": self.hours}  # fmt: skip
        injector(out, "http", spec)


def injector(out: Emitter, kind: str, spec: Mapping[str, object]) -> None:
    """Declare an injector process on the LAN interface (``msgwatch.lab.censor.injector``)."""
    ready = out.ready_file(kind)
    argv = [sys.executable, "-m", "msgwatch.lab.censor.injector", "--iface", out.ctx.lan_if,
            "--ready", str(ready), "--spec", json.dumps(spec, separators=(",", ":"))]  # fmt: skip
    out.process(kind, argv)

"""Rules that copy what censors do to circumvention: VPN fingerprints, fully encrypted traffic, cuts.

Each rule models one documented behaviour (the sources are in ``docs/lab.md``):

- :class:`OpenvpnFingerprint` — OpenVPN's opcode in the first client packet (Xue et al., "OpenVPN
  is Open to VPN Fingerprinting", USENIX Security 2022; OpenGFW ``analyzer/udp/openvpn.go``): a flow
  opening with ``P_CONTROL_HARD_RESET_CLIENT_V2``/``V3`` is dropped, that packet and every later
  one of the same 5-tuple, in both directions (a dynamic nft set with a timeout).
- :class:`WireguardFingerprint` — WireGuard's fixed handshake shapes (OpenGFW
  ``analyzer/udp/wireguard.go``, net4people/bbs#76): a type byte, three zero bytes and an exact
  size (initiation 148, response 92, cookie reply 64 bytes).
- :class:`FullyEncrypted` — the GFW's 2023 heuristics for fully encrypted traffic (Wu et al.,
  USENIX Security 2023; OpenGFW ``analyzer/tcp/fet.go``): a watcher process
  (:mod:`msgwatch.lab.censor.fet`) classifies each TCP flow's first client payload and puts the
  client → server:port 3-tuple into an nft set that drops it for ``residual`` seconds.
- :class:`CutAfterBytes` — a flow cut after N bytes (or packets) with conntrack's counters
  (Kazakhstan and obfs4, ooni/probe#701; Russia's 16-20 KB freeze, net4people/bbs#490; Russia's
  VPN cut after N packets, net4people/bbs#274).

Tor relay and directory-authority blocking is :class:`~msgwatch.lab.censor.addresses.Blackhole`,
proxy port blocking :class:`~msgwatch.lab.censor.addresses.RejectTcp` / ``DropUdp``: nothing new.
"""

from __future__ import annotations

import json
import sys
from typing import Literal

from pydantic import Field, model_validator

from msgwatch.lab.censor.base import (
    Emitter,
    Port,
    Prefix,
    Rule,
    family_match,
    flow_matches,
    split_families,
)
from msgwatch.lab.censor.context import TABLE

OPENVPN_HARD_RESET_CLIENT = {
    7: "P_CONTROL_HARD_RESET_CLIENT_V2",
    10: "P_CONTROL_HARD_RESET_CLIENT_V3",
}
"""OpenVPN opcodes (top 5 bits of the first header byte) a client's first packet carries. The low
3 bits are the key id, always 0 in a hard reset: the rule matches the whole byte (0x38, 0x50), which
makes a random first datagram match 1 time in 128 rather than 1 in 16."""
OPENVPN_MIN_PAYLOAD = 14
"""The shortest hard reset: opcode/key id (1), session id (8), ack array length (1), packet id (4)."""
OPENVPN_MAX_PAYLOAD = 1024
"""The longest plausible one (tls-crypt-v2 appends the wrapped client key, a few hundred bytes)."""
OPENVPN_FIRST_PACKETS = 8
"""Over TCP the hard reset is looked for among the client's first packets (SYN, ACK, the first
data segment and its retransmissions), never later, where TCP boundaries cut records anywhere."""

WIREGUARD_MESSAGES = {"initiation": (1, 148), "response": (2, 92), "cookie": (3, 64)}
"""WireGuard handshake message → (type byte, exact UDP payload size)."""


def _families(to: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(family, prefixes) to emit set-keyed rules for: those of ``to``, else IPv4 and IPv6."""
    if to:
        return [(fam, tuple(nets)) for fam, nets in split_families(to)]
    return [("ip", ()), ("ip6", ())]


def _addr(fam: str) -> str:
    return "ipv4_addr" if fam == "ip" else "ipv6_addr"


class OpenvpnFingerprint(Rule):
    """Drop the flow whose first client packet is an OpenVPN hard reset (opcode 7 or 10)."""

    type: Literal["openvpn_fingerprint"] = "openvpn_fingerprint"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    protocol: Literal["udp", "tcp", "any"] = "any"
    """``udp``: the opcode in the datagram's first byte; ``tcp``: after the 2-byte length."""
    flow_timeout: int = Field(default=120, ge=1, le=3600)
    """How long a fingerprinted flow (its 5-tuple) stays dropped after the hard reset was seen."""

    def emit(self, out: Emitter) -> None:
        opcodes = "{ " + ", ".join(f"{op << 3:#04x}" for op in OPENVPN_HARD_RESET_CLIENT) + " }"
        sizes = f"{OPENVPN_MIN_PAYLOAD:#06x}-{OPENVPN_MAX_PAYLOAD:#06x}"
        first = {
            "udp": f"ct state new udp length >= {OPENVPN_MIN_PAYLOAD + 8} @th,64,8 {opcodes}",
            "tcp": (
                f"ct direction original ct original packets < {OPENVPN_FIRST_PACKETS} "
                f"@ih,0,16 {sizes} @ih,16,8 {opcodes}"
            ),
        }
        protocols = ("udp", "tcp") if self.protocol == "any" else (self.protocol,)
        for fam, nets in _families(self.to):
            suffix = fam.removeprefix("ip") or "4"
            flows = out.nft_set(
                f"flows{suffix}",
                f"type {_addr(fam)} . {_addr(fam)} . inet_proto . inet_service . inet_service; "
                f"flags dynamic,timeout; timeout {self.flow_timeout}s;",
            )
            key = f"{fam} saddr . {fam} daddr . meta l4proto . th sport . th dport"
            back_key = f"{fam} daddr . {fam} saddr . meta l4proto . th dport . th sport"
            for proto in protocols:
                towards, _ = family_match(fam, nets, self.ports, proto)
                out.nft(f"{towards} {first[proto]} add @{flows} {{ {key} }}")
            l4 = protocols[0] if len(protocols) == 1 else "{ tcp, udp }"
            towards, back = family_match(fam, nets, self.ports, l4)
            out.nft(f"{towards} {key} @{flows} drop")
            out.nft(f"{back} {back_key} @{flows} drop")


class WireguardFingerprint(Rule):
    """Drop WireGuard handshake messages: type byte, three zero bytes, an exact size."""

    type: Literal["wireguard_fingerprint"] = "wireguard_fingerprint"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    messages: tuple[Literal["initiation", "response", "cookie"], ...] = Field(
        default=("initiation", "response", "cookie"), min_length=1
    )
    """Which handshake messages are recognised (each drops the datagram carrying it)."""

    def emit(self, out: Emitter) -> None:
        narrowed = bool(self.to or self.ports)
        for message in dict.fromkeys(self.messages):
            kind, size = WIREGUARD_MESSAGES[message]
            match = f"udp length {size + 8} @th,64,32 {kind << 24:#010x}"
            for towards, back in flow_matches(self.to, self.ports, "udp"):
                out.nft(f"{towards} {match} drop")
                if narrowed:  # the response comes back from the server named by to/ports
                    out.nft(f"{back} {match} drop")


class FullyEncrypted(Rule):
    """Block the 3-tuple of a TCP flow whose first client payload looks fully encrypted (GFW 2023)."""

    type: Literal["fully_encrypted"] = "fully_encrypted"
    to: tuple[Prefix, ...] = ()
    """Only flows to these prefixes are examined (the GFW did it for some IP ranges only)."""
    ports: tuple[Port, ...] = Field(default=(), max_length=32)
    residual: int = Field(default=180, ge=1, le=3600)
    """Seconds every later packet from the client to that server and port is dropped (the paper
    measured 180 s); a test sets a few seconds."""
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    """Chance that a flow which is not exempt is blocked (1.0: deterministic ground truth; the GFW
    blocked only a fraction of the connections it could have)."""
    seed: int | None = None
    """Seed of the watcher's random choices (None: a fresh one), for repeatable lab runs."""

    def emit(self, out: Emitter) -> None:
        sets: dict[str, str] = {}
        for fam in ("ip", "ip6"):
            suffix = fam.removeprefix("ip") or "4"
            name = out.nft_set(
                f"fet{suffix}",
                f"type {_addr(fam)} . {_addr(fam)} . inet_service; flags timeout; "
                f"timeout {self.residual}s;",
            )
            sets[suffix] = name
            out.nft(f"meta l4proto tcp {fam} saddr . {fam} daddr . tcp dport @{name} drop")
        spec = {"table": TABLE, "sets": sets, "to": list(self.to), "ports": list(self.ports),
                "probability": self.probability, "seed": self.seed, "hours": self.hours,
                "residual": self.residual}  # fmt: skip
        ready = out.ready_file("fet")
        argv = [sys.executable, "-m", "msgwatch.lab.censor.fet", "--iface", out.ctx.lan_if,
                "--ready", str(ready), "--spec", json.dumps(spec, separators=(",", ":"))]  # fmt: skip
        out.process("fet", argv)


class CutAfterBytes(Rule):
    """Drop every packet of a flow once conntrack has counted more than N bytes (or packets)."""

    type: Literal["cut_after_bytes"] = "cut_after_bytes"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    protocol: Literal["tcp", "udp", "any"] = "tcp"
    bytes: int | None = Field(default=None, ge=1)
    """The flow passes this many bytes (IP packets, headers included), then stalls."""
    packets: int | None = Field(default=None, ge=1)
    """Instead of ``bytes``: the flow passes this many packets, then stalls."""
    count: Literal["both", "up", "down"] = "both"
    """What is counted: both directions, the client's (``up``) or the server's (``down``)."""

    @model_validator(mode="after")
    def _one_limit(self) -> CutAfterBytes:
        if (self.bytes is None) == (self.packets is None):
            raise ValueError("cut_after_bytes needs exactly one of `bytes` and `packets`")
        return self

    def emit(self, out: Emitter) -> None:
        way = {"both": "", "up": "original ", "down": "reply "}[self.count]
        limit = f"bytes > {self.bytes}" if self.bytes is not None else f"packets > {self.packets}"
        proto = None if self.protocol == "any" else self.protocol
        l4 = proto or "{ tcp, udp }"
        for towards, back in flow_matches(self.to, self.ports, l4):
            for match in dict.fromkeys((towards, back)):  # one rule when nothing narrows it
                out.nft(f"{match} ct {way}{limit} drop")

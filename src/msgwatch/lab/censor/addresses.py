"""Rules keyed on addresses, ports and fixed payload bytes: all native nftables, no helpers.

These are the censor's cheap, stateless-looking tools — a blackhole route, a reset for a port, a
UDP port block, a classifier for one protocol's header bytes (UDP, or the start of a TCP segment's
payload) — that national censors deploy at line rate. Each matches the packets towards the named prefixes/ports and, where it matters, the packets
coming back from them, so that a flow the probe did not open (a relay writing first) is caught too.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from msgwatch.lab.censor.base import (
    Emitter,
    Port,
    Prefix,
    Rule,
    family_match,
    flow_matches,
    nft_set,
    split_families,
)
from msgwatch.wire.packets import STUN_COOKIE as _COOKIE


class Blackhole(Rule):
    """Drop every packet to and from ``to`` (IP blocking, as of Telegram's ranges in Russia 2018)."""

    type: Literal["blackhole"] = "blackhole"
    to: tuple[Prefix, ...] = Field(min_length=1)

    def emit(self, out: Emitter) -> None:
        for towards, back in flow_matches(self.to, [], None):
            out.nft(f"{towards} drop")
            out.nft(f"{back} drop")


class RejectTcp(Rule):
    """Answer TCP to ``to``/``ports`` with a reset (``stage``: the SYN, or the first data packet)."""

    type: Literal["reject_tcp"] = "reject_tcp"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    stage: Literal["connect", "data"] = "connect"
    """``connect``: the SYN is answered by a RST (the client sees "connection refused");
    ``data``: the handshake completes and the first data segment is answered by a RST
    ("connection reset"), as an on-path injector that waits for the request does."""

    @model_validator(mode="after")
    def _something(self) -> RejectTcp:
        if not self.to and not self.ports:
            raise ValueError(
                "reject_tcp needs `to` and/or `ports` (resetting all TCP is `blackhole`'s job)"
            )
        return self

    def emit(self, out: Emitter) -> None:
        # Packets 1 and 2 of the original direction are the SYN and the handshake's ACK.
        stage = "" if self.stage == "connect" else "ct direction original ct original packets > 2 "
        for towards, _ in flow_matches(self.to, self.ports, "tcp"):
            out.nft(f"{towards} {stage}reject with tcp reset")


class DropUdp(Rule):
    """Drop UDP to (and from) ``to`` and/or ``ports``; neither: all UDP (``udp.drop_all``)."""

    type: Literal["drop_udp"] = "drop_udp"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()

    def emit(self, out: Emitter) -> None:
        for towards, back in flow_matches(self.to, self.ports, "udp"):
            out.nft(f"{towards} drop")
            out.nft(f"{back} drop")


STUN_COOKIE = f"@th,96,32 {_COOKIE:#010x}"
"""RFC 5389's magic cookie: UDP payload bytes 4-7 (the UDP header is 64 bits)."""


class DropStun(Rule):
    """Drop UDP datagrams carrying the STUN magic cookie, on any port unless ``ports``/``to`` say."""

    type: Literal["drop_stun"] = "drop_stun"
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()

    def emit(self, out: Emitter) -> None:
        for towards, back in flow_matches(self.to, self.ports, "udp"):
            out.nft(f"{towards} {STUN_COOKIE} drop")
            if self.to or self.ports:
                out.nft(f"{back} {STUN_COOKIE} drop")


_HEX = re.compile(r"(?:[0-9a-f]{2}){1,16}")


def _hex(value: str) -> str:
    text = value.lower().removeprefix("0x")
    if not _HEX.fullmatch(text):
        raise ValueError(f"value must be 1-16 bytes of hex digits (e.g. '0800'): {value!r}")
    return text


Hex = Annotated[str, AfterValidator(_hex)]


class Pattern(BaseModel):
    """``value`` (hex; ``value_max``: an inclusive range) at byte ``offset`` of the payload (UDP,
    or one TCP segment's). A negative offset reaches back into the UDP header: -4 is its length
    field (the payload's length + 8), so that a signature can name a datagram's size."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    offset: int = Field(ge=-8, le=1400)
    value: Hex
    value_max: Hex | None = None

    @model_validator(mode="after")
    def _same_width(self) -> Pattern:
        if self.value_max is not None and len(self.value_max) != len(self.value):
            raise ValueError("value and value_max must have the same number of bytes")
        return self

    def nft(self) -> str:
        """The match in a UDP datagram (bits from the transport header, which is 64 bits)."""
        return f"@th,{64 + 8 * self.offset},{self._match()}"

    def nft_tcp(self) -> str:
        """The match in a TCP segment's payload: ``@ih`` starts after the TCP header, options
        included (kernel ≥ 5.16); a segment without payload never matches."""
        return f"@ih,{8 * self.offset},{self._match()}"

    def _match(self) -> str:
        bits = len(self.value) * 4
        return f"{bits} 0x{self.value}" + (f"-0x{self.value_max}" if self.value_max else "")


def _p(offset: int, value: str, value_max: str | None = None) -> Pattern:
    return Pattern(offset=offset, value=value, value_max=value_max)


Alternatives = tuple[tuple[Pattern, ...], ...]
"""A signature: several pattern sets, any one of which matches (each set: all its patterns)."""

SIGNATURES: dict[str, tuple[Alternatives, str]] = {
    "whatsapp_relay": (
        ((_p(0, "0800", "0802"),),),
        "WhatsApp's relay messages: STUN-framed with the non-standard message types 0x0800-0x0802 "
        "(payload bytes 0-1) that WhatsApp's calls send to its relays",
    ),
    "stun_binding": (
        ((_p(0, "0001"), _p(4, "2112a442")),),
        "a STUN Binding request (type 0x0001 and the magic cookie): ICE connectivity checks",
    ),
    "rtp_dynamic": (
        ((_p(0, "80"), _p(1, "60", "7f")),),
        "RTP version 2 without padding, extension or CSRCs, dynamic payload type 96-127, marker "
        "bit clear: the media packets of WebRTC-style voice and video (Opus, VP8, H.264)",
    ),
    "teams_media": (
        ((_p(0, "90"), _p(12, "bede")),),
        "Teams' media (and Skype's, the same stack): RTP with the extension bit and an RFC 8285 "
        "one-byte extension header, profile 0xBEDE at bytes 12-13 (Wehe's 2024 Teams trace)",
    ),
    "zoom_media": (
        ((_p(0, "05"), _p(8, "0f", "10")), (_p(0, "05"), _p(8, "21")), (_p(0, "010003"),)),
        "Zoom's encapsulation (nDPI zoom.c): SFU type 5 with media type 15/16 (audio/video) or "
        "33 (RTCP) at byte 8, and the opening packet 01 00 03",
    ),
    "telegram_reflector": (
        ((_p(16, "ff" * 12),),),
        "libtgvoip's reflector header: twelve 0xFF after the 16-byte peer tag (nDPI telegram.c); "
        "the pings and the reflector's self-info, not the media",
    ),
    "viber_udp": (
        tuple(
            (_p(-4, f"{size + 8:04x}"), _p(2, kind))
            for size, kind in ((12, "0300"), (20, "0900"), (34, "1900"), (34, "1b00"))
        ),
        "Viber's UDP packets (nDPI viber.c): bytes 2-3 09 00 in 20-byte, 19 00 or 1b 00 in "
        "34-byte datagrams, and 03 00 (here only in 12-byte ones, as peafowl's port of nDPI has it)",
    ),
    "discord_voice": (
        ((_p(0, "00010046"),), (_p(0, "00020046"),), (_p(0, "1337cafe"),)),
        "Discord's voice UDP: the 74-byte IP discovery request and response (type 1/2, length 70) "
        "and the 13 37 ca fe keep-alive (Discord's voice docs, nDPI discord.c); not the media",
    ),
    "messenger_ice": (
        ((_p(0, "000100642112a442"), _p(60, "c0570004")),),
        "Messenger's ICE checks (nDPI stun.c): a Binding request of length 100 carrying 0xC057 "
        "(NETWORK-COST), here at the offset the probe's Messenger profile puts it",
    ),
    "signal_turn": (
        ((_p(0, "0003"), _p(4, "2112a442"), _p(28, "0014000a"), _p(32, "7369676e616c2e6f7267")),),
        "Signal's TURN Allocate (nDPI stun.c: a REALM containing signal.org), the REALM at the "
        "offset the probe's Signal profile puts it",
    ),
}
"""Named call-traffic signatures: the alternatives (any one; each: all its patterns must match)
and what they recognise. The service-specific ones match the probe's profiles of
:mod:`msgwatch.wire.calltraffic` at fixed offsets, as an nft payload match must: a real DPI engine
parses the framing instead."""


class DropCallSignature(Rule):
    """Drop UDP whose payload matches a call-traffic signature (DPI of the call protocol)."""

    type: Literal["drop_call_signature"] = "drop_call_signature"
    signature: (
        Literal[
            "whatsapp_relay", "stun_binding", "rtp_dynamic", "teams_media", "zoom_media",
            "telegram_reflector", "viber_udp", "discord_voice", "messenger_ice", "signal_turn",
        ]
        | None
    ) = None  # fmt: skip
    patterns: tuple[Pattern, ...] = ()
    """A custom signature: every pattern must match (instead of a named ``signature``)."""
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    direction: Literal["both", "up", "down"] = "both"
    """``up``: only datagrams towards ``to``/``ports``; ``down``: only those coming back from them
    (with neither ``to`` nor ``ports``: the conntrack reply direction); ``both``."""

    @model_validator(mode="after")
    def _one_signature(self) -> DropCallSignature:
        if (self.signature is None) == (not self.patterns):
            raise ValueError(
                "drop_call_signature needs exactly one of `signature` "
                f"({', '.join(SIGNATURES)}) and `patterns`"
            )
        return self

    def emit(self, out: Emitter) -> None:
        alternatives = SIGNATURES[self.signature][0] if self.signature else (self.patterns,)
        narrowed = bool(self.to or self.ports)
        for patterns in alternatives:  # one rule per alternative: any of them drops
            match = " ".join(p.nft() for p in patterns)
            for towards, back in flow_matches(self.to, self.ports, "udp"):
                if not narrowed and self.direction != "both":  # one match, conntrack's way
                    way = "original" if self.direction == "up" else "reply"
                    out.nft(f"{towards} ct direction {way} {match} drop")
                    continue
                if self.direction in ("both", "up"):
                    out.nft(f"{towards} {match} drop")
                if narrowed and self.direction in ("both", "down"):
                    out.nft(f"{back} {match} drop")


TCP_SIGNATURES: dict[str, tuple[tuple[Pattern, ...], str]] = {
    "mtproto_intermediate": (
        (Pattern(offset=0, value="eeeeeeee"),),
        "MTProto's intermediate transport: the first packet of a connection to a Telegram data "
        "centre opens with ee ee ee ee (core.telegram.org/mtproto/mtproto-transports)",
    ),
    "mtproto_abridged": (
        (Pattern(offset=0, value="ef"),),
        "MTProto's abridged transport: the first packet opens with the single byte ef",
    ),
    "whatsapp_prologue": (
        (Pattern(offset=0, value="5741"),),
        "WhatsApp's chat opening without routing info: the 'WA' prologue (57 41, then the magic "
        "and dictionary version)",
    ),
}
"""Named signatures of a TCP client's first bytes: the patterns (all must match), what they are."""


class TcpSignature(Rule):
    """Reset (or drop) TCP segments whose payload matches a protocol's signature (DPI of TCP)."""

    type: Literal["tcp_signature"] = "tcp_signature"
    signature: Literal["mtproto_intermediate", "mtproto_abridged", "whatsapp_prologue"] | None = (
        None
    )
    patterns: tuple[Pattern, ...] = ()
    """A custom signature: every pattern must match, offsets into the segment's payload."""
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    action: Literal["reset", "drop"] = "reset"
    """``reset``: the segment is dropped and the client gets a RST ("connection reset" after a
    completed handshake); ``drop``: the segment (and each retransmission of it) is dropped, so the
    client's read times out."""

    @model_validator(mode="after")
    def _one_signature(self) -> TcpSignature:
        if any(p.offset < 0 for p in self.patterns):
            raise ValueError("a TCP pattern's offset counts into the payload: 0 or more")
        if (self.signature is None) == (not self.patterns):
            raise ValueError(
                "tcp_signature needs exactly one of `signature` "
                f"({', '.join(TCP_SIGNATURES)}) and `patterns`"
            )
        return self

    def emit(self, out: Emitter) -> None:
        patterns = TCP_SIGNATURES[self.signature][0] if self.signature else tuple(self.patterns)
        match = " ".join(p.nft_tcp() for p in patterns)
        verdict = "reject with tcp reset" if self.action == "reset" else "drop"
        for towards, _ in flow_matches(self.to, self.ports, "tcp"):
            out.nft(f"{towards} {match} {verdict}")


class RandomDrop(Rule):
    """Drop ``percent`` % of the matching flows (or packets): intermittent blocking."""

    type: Literal["random_drop"] = "random_drop"
    percent: int = Field(ge=0, le=100)
    to: tuple[Prefix, ...] = ()
    ports: tuple[Port, ...] = ()
    protocol: Literal["tcp", "udp", "any"] = "any"
    per: Literal["flow", "packet"] = "flow"
    """``flow``: the first packet of a flow decides, for the whole flow (a flow that was let
    through stays up; one that was picked stays dead for ``flow_timeout`` s); ``packet``: each
    packet is dropped with the probability (loss)."""
    flow_timeout: int = Field(default=120, ge=1, le=3600)

    def emit(self, out: Emitter) -> None:
        proto = None if self.protocol == "any" else self.protocol
        pairs = flow_matches(self.to, self.ports, proto)
        roll = f"numgen random mod 100 < {self.percent}"
        if self.per == "packet":
            for towards, back in pairs:
                out.nft(f"{towards} {roll} drop")
                out.nft(f"{back} {roll} drop")
            return
        l4 = proto or "{ tcp, udp }"  # the flow key needs ports
        families = split_families(self.to) or [("ip", ()), ("ip6", ())]
        for fam, nets in families:
            # A dropped first packet leaves no conntrack entry (it is never confirmed), so the
            # decision lives in a set of flows instead: the 5-tuple, with a timeout.
            addr = "ipv4_addr" if fam == "ip" else "ipv6_addr"
            flows = out.nft_set(
                f"flows{fam.removeprefix('ip') or '4'}",
                f"type {addr} . {addr} . inet_proto . inet_service . inet_service; "
                f"flags dynamic,timeout; timeout {self.flow_timeout}s;",
            )
            key = f"{fam} saddr . {fam} daddr . meta l4proto . th sport . th dport"
            back_key = f"{fam} daddr . {fam} saddr . meta l4proto . th dport . th sport"
            towards, back = family_match(fam, nets, self.ports, l4)
            out.nft(f"{towards} ct state new {roll} add @{flows} {{ {key} }}")
            out.nft(f"{towards} {key} @{flows} drop")
            out.nft(f"{back} {back_key} @{flows} drop")


def describe_signatures() -> str:
    """The named signatures, one per line (for docs and error messages)."""
    udp = [f"{name}: {' or '.join(nft_set([p.nft() for p in pats]) for pats in alts)} — {text}"
           for name, (alts, text) in SIGNATURES.items()]  # fmt: skip
    tcp = [f"{name}: {nft_set([p.nft_tcp() for p in pats])} — {text}"
           for name, (pats, text) in TCP_SIGNATURES.items()]  # fmt: skip
    return "\n".join(udp + tcp)

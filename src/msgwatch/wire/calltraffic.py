"""Call-like packet schedules and their controls, generated from a seed (no clock, no sockets).

A schedule is a list of :class:`Packet` — (offset in seconds from the start, UDP payload) — that a
sender plays with the offsets as its timing. The probe replays a schedule to the test helper and the
helper replays it back (both directions); a DPI engine on the path sees call traffic. Each schedule
has a **control** with identical sizes and timing whose payloads carry no protocol: every bit
inverted (Wehe's ``invertBit``, research note §1.2: STUN ``0001 005c`` becomes ``fffe ffa3``, RTCP
``80c8`` becomes ``7f37``), or random bytes for the plain-UDP echo. Original against control on the
same port, in random order, tells "the call protocol is recognised" from "this path drops UDP".

Profiles (research note §4.1, item 6: audio ~50 packets/s of ~60–200 B, video bursts of ~1000–1200 B):

- :func:`voice_profile`: an opening (a STUN Binding request shaped like an ICE connectivity check:
  USERNAME, PRIORITY, ICE-CONTROLLING, MESSAGE-INTEGRITY, FINGERPRINT), then one RTP packet every
  20 ms (Opus at 48 kHz: timestamp +960, payload type 111, one SSRC, sequence +1), datagrams of
  60–200 bytes following a bounded random walk, and an RTCP sender report every 5 s (with the
  SRTCP trailer: E-flag and index, 10-byte tag).
- :func:`video_profile`: the same opening, then one frame every 33 ms at about 1 Mbit/s, each frame
  a burst of RTP packets of 1,200 bytes (the last one shorter) 0.5 ms apart, payload type 96,
  90 kHz clock (+2970 per frame), the marker bit on a frame's last packet, a larger key frame
  every 3 s; RTCP as for voice.

The sizes and times come from their own random stream, so every marker variant of a profile with the
same seed has the same media sizes and times; only the opening and the periodic control messages
differ. Payload bytes after the headers are random (SRTP and the services' own encryption look
random). Media starts at :data:`MEDIA_START` after the opening.

Markers (``marker=``): what a DPI engine keys on for one service, from public sources. ``nDPI`` is
``ntop/nDPI`` (``src/lib/protocols/*.c``, 2024 versions), the research note is
``shared/research/voip_blocking.md``. Each one is the generic traffic with these changes:

``"whatsapp"``
    Opening: an Allocate request (0x0003) with attributes 0x4000, 0x4001, 0x4002 and 0x4007
    (protobuf-looking values), MESSAGE-INTEGRITY and FINGERPRINT, then a message of type 0x0800.
    Every second a keep-alive ping (0x0801) and a pong (0x0802) with the cookie. RTP: first byte
    0x90 (X=1) with header-extension profile 0xDEBE and no extension words (a 16-byte header),
    audio payload type 120. Sources: nDPI ``stun.c`` (types 0x0800–0x0802/0x0804/0x0805 and
    attributes 0x4000–0x4004/0x4007 classify as WhatsApp call; the cookie is required for these
    types); wacrg.org/transport/warp-stun-relay (ping 0x0801, pong 0x0802, allocate 0x0003 with
    0x4000-range protobuf attributes, WARP RTP 0x90 / PT 120–121 / profile 0xDEBE: "probable",
    reconstructed, not from a capture); the lab's ``whatsapp_relay`` signature (bytes 0–1 in
    0x0800–0x0802). Unverified: the attribute contents, the keep-alive interval, 0x0800's role,
    the video payload type (96 kept).
``"teams"``
    Opening: the Binding request also carries 0x8070 MS-IMPLEMENTATION-VERSION = 2 ("MS-ICE2",
    Wireshark ``packet-stun.c``; nDPI ``stun.c`` accepts 2 or 3) and 0x8036 (4 bytes; listed by
    nDPI as seen on Skype/Teams calls, meaning undocumented). RTP first byte 0x90 with an RFC 8285
    one-byte extension (profile 0xBEDE), payload type 111: Wehe's 2024 Teams trace (research note
    §1.4). Unverified: the 0x8036 value, the extension elements.
``"zoom"``
    Opening: the Binding request carries attribute 0x0103 (nDPI ``stun.c``: 0x0101/0x0103 → Zoom),
    then an "SFU type 1" packet starting ``01 00 03``. Media wrapped as nDPI ``zoom.c`` parses it:
    an 8-byte SFU header (type 5, sequence, 4 opaque bytes, direction 0 = towards Zoom), then the
    media header (type 15 audio / 16 video / 33 RTCP) of 19 / 24 / 16 bytes, then RTP or RTCP.
    Zoom uses UDP 8801–8810 (support.zoom.com KB0060548). Unverified: the opaque fields (zeros
    here), the opening packet's length, the inner payload types.
``"telegram"``
    libtgvoip's reflector protocol instead of STUN/RTP: every datagram starts with the call's
    16-byte peer tag (no 0xFF byte in it); a ping is ``tag + 12×FF + FE FF FF FF + 8-byte id``
    (40 bytes, ``VoIPController::SendUdpPing``), the reflector's self-info answer
    ``tag + 12×FF + c7 72 15 c0 (0xc01572c7 little-endian) + date + the ping's id + the address
    as IPv4-mapped IPv6 (10 zero bytes, FF FF, IPv4) + port (uint32 LE)`` (64 bytes, libtgvoip
    ``MockReflector.cpp``); media is ``tag + 16-byte msg_key + ciphertext``. A ping and a self-info packet open the flow and repeat every 5 s. nDPI
    ``telegram.c`` matches a run of exactly twelve 0xFF in UDP payloads of ≥ 40 bytes to or from
    ports 500–600 (the port is the replay's choice, not the payload's). No RTCP (libtgvoip has
    none). Telegram's newer WebRTC-based calls look like the generic profile instead.
``"discord"``
    Opening: IP discovery request and response, 74 bytes each (type 0x0001 / 0x0002, length 70,
    SSRC, 64-byte NUL-padded address, port; 74 bytes mandatory since March 2023: Discord developer
    docs, nDPI ``discord.c`` matches ``00 01 00 46`` then ``00 02 00 46``). RTP 0x80 with payload
    type 120 (0x78) and the discovery SSRC (Discord voice docs; DiscordPHP/JDA constants). An
    8-byte keep-alive ``13 37 ca fe`` + counter every 5 s (nDPI ``discord.c``). Unverified: the
    keep-alive interval, the video payload type (96 kept).
``"viber"``
    Opening: the generic ICE check (nDPI ``stun.c`` names Viber calls by a STUN REALM containing
    "viber": Viber's calls use STUN/TURN), then Viber's own UDP framing as nDPI ``viber.c``
    recognises it: bytes 2-3 ``09 00`` in a 20-byte packet, ``19 00`` and ``1b 00`` in 34-byte
    packets; a 12-byte ``03 00`` keep-alive every second (the 12-byte length is from peafowl's
    port of the same dissector). Bytes 0-1 (a counter here) and the rest (random) are unknown;
    media is the generic RTP. Unverified: every field's meaning, the keep-alive interval, whether
    media carries a Viber header.
``"messenger"``
    Facebook Messenger (WebRTC): the ICE check as libwebrtc sends it, USERNAME of two 16-character
    ufrags, then 0xC057 (NETWORK-COST: network id, cost), PRIORITY, ICE-CONTROLLING, MESSAGE-
    INTEGRITY, FINGERPRINT: a Binding request of length 100, which nDPI ``stun.c`` classifies as
    Messenger (attribute 0xC057 in a Binding request of length 100 or 104). Media: the generic RTP.
    Unverified: the ufrag lengths Messenger uses (chosen to give nDPI's length), the cost value.
``"signal"``
    Signal's calls through its TURN relays: an authenticated TURN Allocate (REQUESTED-TRANSPORT
    UDP, REALM ``signal.org``, USERNAME, NONCE, MESSAGE-INTEGRITY, FINGERPRINT; RFC 8656 §7.2:
    the second Allocate, after the relay's 401) opens the flow, then the generic ICE check and RTP.
    nDPI ``stun.c`` names a STUN flow whose REALM contains "signal.org" or "whispersystems.org"
    Signal's. Unverified: the realm Signal's relays announce (nDPI's substring is used), the
    credentials' lengths.

Framing (:func:`framings`): each datagram of an original is ``stun`` (STUN's cookie where STUN
puts it), ``signature`` (the service's own non-STUN framing: Telegram's reflector header, Viber's
packets, Discord's IP discovery and keep-alive, Zoom's opening) or ``media``. The replays count
the first two apart, so that a censor that kills only those handful of datagrams shows.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

from msgwatch.wire import packets as P

Marker = Literal["whatsapp", "teams", "zoom", "telegram", "discord", "viber", "messenger", "signal"]
MARKERS: tuple[Marker, ...] = (
    "whatsapp", "teams", "zoom", "telegram", "discord", "viber", "messenger", "signal",
)  # fmt: skip
Framing = Literal["stun", "signature", "media"]
TG_FILLER = b"\xff" * 12
"""libtgvoip's reflector header: the peer tag (16 bytes), then twelve 0xFF."""
VIBER_TYPES = {12: (b"\x03\x00",), 20: (b"\x09\x00",), 34: (b"\x19\x00", b"\x1b\x00")}
"""Viber's UDP packets by length: bytes 2-3 (nDPI ``viber.c``)."""
VIBER_KEEPALIVE = 1.0

MAX_DURATION = 600.0
MEDIA_START = 0.05
OPENING_SPACING = 0.005
RTCP_INTERVAL = 5.0

VOICE_INTERVAL = 0.020
VOICE_MIN_BYTES = 60
VOICE_MAX_BYTES = 200
VOICE_CLOCK_STEP = 960  # Opus: 48 kHz × 20 ms
VOICE_PAYLOAD_TYPE = 111

VIDEO_FRAME_INTERVAL = 0.033
VIDEO_PACKET_BYTES = 1200
VIDEO_MIN_BYTES = 100
VIDEO_RATE_BPS = 1_000_000
VIDEO_KEYFRAME_INTERVAL = 3.0
VIDEO_KEYFRAME_FACTOR = 3.0
VIDEO_PACKET_SPACING = 0.0005
VIDEO_CLOCK_STEP = 2970  # 90 kHz × 33 ms
VIDEO_PAYLOAD_TYPE = 96

SRTCP_TRAILER = 14  # E-flag + 31-bit index, 10-byte authentication tag (RFC 3711 §3.4)

_INVERT = bytes(255 - i for i in range(256))


class Packet(NamedTuple):
    """One datagram of a schedule."""

    offset: float
    """Seconds from the start of the replay at which to send it."""
    payload: bytes
    """The UDP payload."""


@dataclass(frozen=True)
class Summary:
    """What a schedule costs, for budgets."""

    packets: int
    bytes: int
    """UDP payload bytes (IP and UDP headers not counted)."""
    duration: float
    """Offset of the last packet."""
    mean_bps: float
    """Payload bits per second over ``duration`` (0 for a single instant)."""


def summary(packets: Sequence[Packet]) -> Summary:
    total = sum(len(p.payload) for p in packets)
    duration = max((p.offset for p in packets), default=0.0)
    return Summary(len(packets), total, duration, total * 8 / duration if duration > 0 else 0.0)


def control(packets: Iterable[Packet]) -> list[Packet]:
    """The bit-inverted control: same sizes and offsets, every payload bit flipped."""
    return [Packet(p.offset, p.payload.translate(_INVERT)) for p in packets]


def random_payload(packets: Iterable[Packet], seed: int) -> list[Packet]:
    """Same sizes and offsets with random payloads (the plain-UDP echo)."""
    rng = random.Random(f"msgwatch-random-payload-{seed}")
    return [Packet(p.offset, rng.randbytes(len(p.payload))) for p in packets]


def voice_profile(duration_s: float, seed: int, marker: Marker | None = None) -> list[Packet]:
    """About 50 packets/s of 60–200 bytes for ``duration_s`` seconds (see the module's notes)."""
    _check(duration_s, marker)
    sizes = random.Random(f"msgwatch-voice-sizes-{seed}")
    flow = _Flow(random.Random(f"msgwatch-voice-bytes-{seed}-{marker}"), marker, video=False)
    out = flow.opening()
    pending = flow.periodic(duration_s)
    size = sizes.randint(VOICE_MIN_BYTES, VOICE_MAX_BYTES)
    count = int((duration_s - MEDIA_START) / VOICE_INTERVAL) + 1
    for k in range(max(count, 0)):
        t = round(MEDIA_START + k * VOICE_INTERVAL, 6)
        _flush(out, pending, t)
        out.append(Packet(t, flow.media(size, marker_bit=k == 0, new_frame=True)))
        size = min(VOICE_MAX_BYTES, max(VOICE_MIN_BYTES, size + sizes.randint(-24, 24)))
    _flush(out, pending, math.inf)
    out.sort(key=lambda p: p.offset)  # stable: a control message stays before media sent with it
    return out


def video_profile(duration_s: float, seed: int, marker: Marker | None = None) -> list[Packet]:
    """Frames of 1,200-byte packets every 33 ms at about 1 Mbit/s (see the module's notes)."""
    _check(duration_s, marker)
    sizes = random.Random(f"msgwatch-video-sizes-{seed}")
    flow = _Flow(random.Random(f"msgwatch-video-bytes-{seed}-{marker}"), marker, video=True)
    out = flow.opening()
    pending = flow.periodic(duration_s)
    per_key = round(VIDEO_KEYFRAME_INTERVAL / VIDEO_FRAME_INTERVAL)
    target = VIDEO_RATE_BPS / 8 * VIDEO_FRAME_INTERVAL
    base = target * per_key / (per_key - 1 + VIDEO_KEYFRAME_FACTOR)  # the mean frame hits target
    count = int((duration_s - MEDIA_START) / VIDEO_FRAME_INTERVAL) + 1
    for k in range(max(count, 0)):
        t0 = MEDIA_START + k * VIDEO_FRAME_INTERVAL
        factor = VIDEO_KEYFRAME_FACTOR if k % per_key == 0 else sizes.uniform(0.7, 1.3)
        parts = _split_frame(round(base * factor))
        for i, part in enumerate(parts):
            t = round(t0 + i * VIDEO_PACKET_SPACING, 6)
            _flush(out, pending, t)
            payload = flow.media(part, marker_bit=i == len(parts) - 1, new_frame=i == 0)
            out.append(Packet(t, payload))
    _flush(out, pending, math.inf)
    out.sort(key=lambda p: p.offset)
    return out


def _flush(
    out: list[Packet], pending: list[tuple[float, Callable[[], bytes]]], until: float
) -> None:
    """Build the periodic messages due at or before ``until`` (they read the media counters)."""
    while pending and pending[0][0] <= until:
        t, build = pending.pop(0)
        out.append(Packet(t, build()))


def _check(duration_s: float, marker: str | None) -> None:
    if not 0 < duration_s <= MAX_DURATION:  # also refuses NaN
        raise ValueError(f"duration must be in (0, {MAX_DURATION}] seconds")
    if marker is not None and marker not in MARKERS:
        raise ValueError(f"unknown marker {marker!r}; known: {', '.join(MARKERS)}")


def _split_frame(size: int) -> list[int]:
    full, rest = divmod(size, VIDEO_PACKET_BYTES)
    parts = [VIDEO_PACKET_BYTES] * full
    if rest or not parts:
        parts.append(max(rest, VIDEO_MIN_BYTES))
    return parts


class _Flow:
    """One media stream's state and the framing of its marker."""

    def __init__(self, rng: random.Random, marker: Marker | None, *, video: bool) -> None:
        self.rng = rng
        self.marker = marker
        self.video = video
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.clock_base = 1_700_000_000 + rng.randrange(100_000_000)  # Unix seconds, from the seed
        self.step = VIDEO_CLOCK_STEP if video else VOICE_CLOCK_STEP
        self.payload_type = VIDEO_PAYLOAD_TYPE if video else VOICE_PAYLOAD_TYPE
        self.extension: tuple[int, bytes] | None = None
        if marker == "whatsapp":
            self.extension = (0xDEBE, b"")
            self.payload_type = VIDEO_PAYLOAD_TYPE if video else 120
        elif marker == "teams":
            self.extension = (0xBEDE, bytes([0x10, rng.getrandbits(8), 0, 0]))
        elif marker == "discord":
            self.payload_type = VIDEO_PAYLOAD_TYPE if video else 120
        self.peer_tag = bytes(rng.randrange(255) for _ in range(16))  # never 0xFF
        self.sfu_sequence = rng.getrandbits(16)
        self.query_id = bytes(8)
        self.sent_packets = 0
        self.sent_octets = 0
        self.frames = 0
        self.rtcp_index = 0

    # -- the opening ---------------------------------------------------------------------------

    def opening(self) -> list[Packet]:
        builders: dict[Marker | None, Callable[[], list[bytes]]] = {
            None: lambda: [self._ice_check()],
            "teams": lambda: [
                self._ice_check([(0x8070, struct.pack("!I", 2)), (0x8036, bytes(4))])
            ],
            "zoom": lambda: [self._ice_check([(0x0103, bytes(4))]), self._zoom_hello()],
            "whatsapp": self._whatsapp_opening,
            "telegram": lambda: [self._tg_ping(), self._tg_self_info(0)],
            "discord": lambda: [self._discovery(1), self._discovery(2)],
            "viber": lambda: [self._ice_check(), self._viber(20, 0), self._viber(34, 0),
                              self._viber(34, 1)],
            "messenger": lambda: [self._messenger_check()],
            "signal": lambda: [self._signal_allocate(), self._ice_check()],
        }  # fmt: skip
        return [
            Packet(round(i * OPENING_SPACING, 6), payload)
            for i, payload in enumerate(builders[self.marker]())
        ]

    def _ice_check(self, extra: Sequence[tuple[int, bytes]] = ()) -> bytes:
        rng = self.rng
        ufrags = _token(rng, 4) + b":" + _token(rng, 4)
        attributes = [
            (0x0006, ufrags),  # USERNAME
            (0x0024, struct.pack("!I", (110 << 24) | rng.getrandbits(24))),  # PRIORITY
            (0x802A, rng.randbytes(8)),  # ICE-CONTROLLING tie-breaker
            *extra,
        ]
        return P.stun_message(
            P.BINDING_REQUEST, rng.randbytes(12), attributes, integrity_key=_token(rng, 22)
        )

    def _messenger_check(self) -> bytes:
        rng = self.rng
        attributes = [
            (0x0006, _token(rng, 16) + b":" + _token(rng, 16)),  # USERNAME: 33 bytes, padded 36
            (0xC057, struct.pack("!HH", 1, 10)),  # NETWORK-COST: network id, cost
            (0x0024, struct.pack("!I", (110 << 24) | rng.getrandbits(24))),  # PRIORITY
            (0x802A, rng.randbytes(8)),  # ICE-CONTROLLING
        ]
        return P.stun_message(
            P.BINDING_REQUEST, rng.randbytes(12), attributes, integrity_key=_token(rng, 22)
        )

    def _signal_allocate(self) -> bytes:
        rng = self.rng
        attributes = [
            (0x0019, bytes([17, 0, 0, 0])),  # REQUESTED-TRANSPORT: UDP
            (0x0014, b"signal.org"),  # REALM
            (0x0006, _token(rng, 24)),  # USERNAME (the relay credentials' user)
            (0x0015, _token(rng, 16)),  # NONCE (from the relay's 401)
        ]
        return P.stun_message(
            P.ALLOCATE_REQUEST, rng.randbytes(12), attributes, integrity_key=rng.randbytes(20)
        )

    def _viber(self, size: int, variant: int) -> bytes:
        kind = VIBER_TYPES[size][variant]
        return struct.pack("<H", self.rng.getrandbits(16)) + kind + self.rng.randbytes(size - 4)

    def _whatsapp_opening(self) -> list[bytes]:
        rng = self.rng
        allocate = P.stun_message(
            P.ALLOCATE_REQUEST,
            rng.randbytes(12),
            [
                (0x4000, b"\x0a\x10" + rng.randbytes(16)),
                (0x4001, b"\x08" + bytes([rng.randrange(1, 128)])),
                (0x4002, b"\x0a\x04" + rng.randbytes(4)),
                (0x4007, b"\x08\x01"),
            ],
            integrity_key=rng.randbytes(16),
        )
        hello = P.stun_message(0x0800, rng.randbytes(12), [(0x4003, rng.randbytes(8))])
        return [allocate, hello]

    def _zoom_hello(self) -> bytes:
        return b"\x01\x00\x03" + self.rng.randbytes(29)

    def _tg_ping(self) -> bytes:
        self.query_id = self.rng.randbytes(8)
        return self.peer_tag + b"\xff" * 12 + b"\xfe\xff\xff\xff" + self.query_id

    def _tg_self_info(self, offset: float) -> bytes:
        date = (self.clock_base + int(offset)) & 0x7FFFFFFF
        return (
            self.peer_tag
            + b"\xff" * 12
            + struct.pack("<Ii", 0xC01572C7, date)
            + self.query_id  # the ping's id, echoed
            + bytes(10)
            + b"\xff\xff"  # the address as IPv4-mapped IPv6: ::ffff:a.b.c.d
            + bytes([198, 51, 100, self.rng.randrange(1, 255)])  # TEST-NET-2, never a real address
            + struct.pack("<I", self.rng.randrange(1024, 65536))
        )

    def _discovery(self, kind: int) -> bytes:
        address = b"203.0.113.7" if kind == 2 else b""  # TEST-NET-3, never a real address
        port = self.rng.randrange(1024, 65536) if kind == 2 else 0
        return (
            struct.pack("!HHI", kind, 70, self.ssrc)
            + address.ljust(64, b"\0")
            + struct.pack("!H", port)
        )

    # -- media ---------------------------------------------------------------------------------

    def media(self, size: int, *, marker_bit: bool, new_frame: bool) -> bytes:
        """One media datagram of exactly ``size`` bytes (the last RTP field updates are applied)."""
        if new_frame and self.frames:
            self.timestamp = (self.timestamp + self.step) & 0xFFFFFFFF
        self.frames += 1 if new_frame else 0
        if self.marker == "telegram":
            payload = self.peer_tag + self.rng.randbytes(max(size - 16, 16))
        elif self.marker == "zoom":
            outer = self._zoom_headers(16 if self.video else 15)
            payload = outer + self._rtp(size - len(outer), marker_bit)
        else:
            payload = self._rtp(size, marker_bit)
        self.sent_packets += 1
        self.sent_octets += len(payload)
        return payload

    def _rtp(self, size: int, marker_bit: bool) -> bytes:
        header = P.rtp_header_length(self.extension)
        packet = P.rtp_packet(
            payload_type=self.payload_type,
            sequence=self.sequence,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            payload=self.rng.randbytes(max(size - header, 1)),
            marker=marker_bit,
            extension=self.extension,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        return packet

    def _zoom_headers(self, media_type: int) -> bytes:
        self.sfu_sequence = (self.sfu_sequence + 1) & 0xFFFF
        sfu = struct.pack("!BHIB", 5, self.sfu_sequence, 0, 0)
        length = {15: 19, 16: 24, 33: 16}[media_type]
        inner = struct.pack("!BIIHI", media_type, 0, 0, self.sequence, self.timestamp)
        return sfu + inner.ljust(length, b"\0")

    # -- periodic control messages -------------------------------------------------------------

    def periodic(self, duration_s: float) -> list[tuple[float, Callable[[], bytes]]]:
        """The control messages after the opening, in time order, built when they are due."""
        out: list[tuple[float, Callable[[], bytes]]] = []
        if self.marker == "whatsapp":
            for k in range(1, int(duration_s - 0.05) + 1):
                out.append((float(k), partial(self._wa_keepalive, 0x0801)))
                out.append((k + 0.05, partial(self._wa_keepalive, 0x0802)))
        if self.marker == "viber":
            for k in range(1, int((duration_s - 0.05) / VIBER_KEEPALIVE) + 1):
                out.append((round(k * VIBER_KEEPALIVE + 0.03, 6), partial(self._viber, 12, 0)))
        for k in range(1, int((duration_s - 0.05) / RTCP_INTERVAL) + 1):
            t = k * RTCP_INTERVAL
            if self.marker == "telegram":
                out.append((t, self._tg_ping))
                out.append((t + 0.05, partial(self._tg_self_info, t)))
                continue
            if self.marker == "discord":
                out.append((t + 0.02, partial(_discord_keepalive, k)))
            out.append((round(t + 0.01, 6), partial(self._rtcp, t)))
        out.sort(key=lambda event: event[0])
        return out

    def _wa_keepalive(self, msg_type: int) -> bytes:
        return P.stun_message(msg_type, self.rng.randbytes(12), [(0x4001, b"\x08\x01")])

    def _rtcp(self, t: float) -> bytes:
        self.rtcp_index += 1
        report = P.rtcp_sender_report(
            ssrc=self.ssrc,
            ntp=P.ntp_timestamp(self.clock_base + t),
            rtp_timestamp=self.timestamp,
            packet_count=self.sent_packets,
            octet_count=self.sent_octets,
        )
        trailer = struct.pack("!I", 0x80000000 | self.rtcp_index) + self.rng.randbytes(10)
        if self.marker == "zoom":
            return self._zoom_headers(33) + report + trailer
        return report + trailer


def _discord_keepalive(counter: int) -> bytes:
    return b"\x13\x37\xca\xfe" + struct.pack("!I", counter)


def _token(rng: random.Random, length: int) -> bytes:
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
    return bytes(alphabet[rng.randrange(len(alphabet))] for _ in range(length))


def framing(payload: bytes, marker: Marker | None) -> Framing:
    """What a datagram of ``marker``'s original carries: STUN, the service's own (non-STUN)
    framing, or media (the module's notes)."""
    if len(payload) >= 20 and payload[4:8] == P.STUN_COOKIE_BYTES:
        return "stun"
    if marker == "telegram" and len(payload) >= 32 and payload[16:28] == TG_FILLER:
        return "signature"
    if marker == "viber" and payload[2:4] in VIBER_TYPES.get(len(payload), ()):
        return "signature"
    if marker == "discord" and (
        (len(payload) == 74 and payload[:4] in (b"\x00\x01\x00\x46", b"\x00\x02\x00\x46"))
        or (len(payload) == 8 and payload[:4] == b"\x13\x37\xca\xfe")
    ):
        return "signature"
    if marker == "zoom" and payload[:3] == b"\x01\x00\x03":
        return "signature"
    return "media"


def framings(packets: Sequence[Packet], marker: Marker | None) -> dict[Framing, frozenset[int]]:
    """Indices of an original's datagrams by :func:`framing` (``stun`` and ``signature``; the
    same positions in its bit-inverted control)."""
    kinds: dict[Framing, set[int]] = {"stun": set(), "signature": set()}
    for index, packet in enumerate(packets):
        kind = framing(packet.payload, marker)
        if kind != "media":
            kinds[kind].add(index)
    return {kind: frozenset(indices) for kind, indices in kinds.items()}

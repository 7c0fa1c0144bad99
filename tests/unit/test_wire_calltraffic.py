"""Call-like schedules: RFC 5389 openings (parsed by aioice), RTP/RTCP fields, rates, markers, controls."""

from __future__ import annotations

import itertools
import math
import struct
from collections import Counter

import pytest
from aioice import stun

from msgwatch.wire import calltraffic as C
from msgwatch.wire import packets as P
from msgwatch.wire.calltraffic import Packet

DURATION = 30.0


def _rtp(packets: list[Packet], offset: int = 0) -> list[tuple[Packet, P.RtpHeader]]:
    """The RTP packets of a schedule with their headers (RTCP, STUN and the rest left out)."""
    out = []
    for packet in packets:
        data = packet.payload[offset:]
        if packet.offset < C.MEDIA_START or P.rtcp_type(data) is not None:
            continue
        header = P.read_rtp(data)
        if header is not None:
            out.append((packet, header))
    return out


def _media(packets: list[Packet]) -> Counter[tuple[float, int]]:
    """(offset, size) of the generic schedule's media: after the opening, RTCP left out."""
    return Counter(
        (p.offset, len(p.payload))
        for p in packets
        if p.offset >= C.MEDIA_START and P.rtcp_type(p.payload) is None
    )


# -- the generic voice profile -----------------------------------------------------------------


def test_voice_opens_with_an_ice_binding_request() -> None:
    packets = C.voice_profile(DURATION, seed=1)
    first = packets[0]
    assert first.offset == 0.0
    message = stun.parse_message(first.payload)  # checks the length and the FINGERPRINT
    assert message.message_method == stun.Method.BINDING
    assert message.message_class == stun.Class.REQUEST
    assert first.payload[4:8] == bytes.fromhex("2112a442")
    assert struct.unpack("!H", first.payload[2:4])[0] == len(first.payload) - 20
    assert {"USERNAME", "PRIORITY", "ICE-CONTROLLING", "MESSAGE-INTEGRITY", "FINGERPRINT"} <= set(
        message.attributes
    )


def test_voice_rtp_fields() -> None:
    packets = C.voice_profile(DURATION, seed=2)
    media = _rtp(packets)
    headers = [h for _, h in media]
    assert {(h.version, h.payload_type, h.extension, h.csrc_count) for h in headers} == {
        (2, 111, False, 0)
    }
    assert len({h.ssrc for h in headers}) == 1
    for previous, current in itertools.pairwise(headers):
        assert current.sequence == (previous.sequence + 1) % 65536
        assert current.timestamp == (previous.timestamp + 960) % 2**32
    assert headers[0].marker and not any(h.marker for h in headers[1:])


def test_voice_rate_and_sizes() -> None:
    packets = C.voice_profile(DURATION, seed=3)
    media = _rtp(packets)
    span = media[-1][0].offset - media[0][0].offset
    assert 49.5 <= (len(media) - 1) / span <= 50.5
    sizes = [len(p.payload) for p, _ in media]
    assert min(sizes) >= 60 and max(sizes) <= 200
    assert len(set(sizes)) > 50  # varies like a VBR codec, not a constant
    gaps = {round(b[0].offset - a[0].offset, 6) for a, b in itertools.pairwise(media)}
    assert gaps == {0.02}


def test_voice_rtcp_sender_reports() -> None:
    packets = C.voice_profile(DURATION, seed=4)
    ssrc = _rtp(packets)[0][1].ssrc
    reports = [p for p in packets if P.rtcp_type(p.payload) == 200]
    assert len(reports) == int((DURATION - 0.05) / 5)
    gaps = {round(b.offset - a.offset, 6) for a, b in itertools.pairwise(reports)}
    assert gaps == {5.0}
    for report in reports:
        assert report.payload[:4] == bytes.fromhex("80c80006")
        assert struct.unpack("!I", report.payload[4:8])[0] == ssrc
        sent = sum(1 for _, _ in _rtp([p for p in packets if p.offset < report.offset]))
        assert struct.unpack("!I", report.payload[20:24])[0] == sent
        assert len(report.payload) == 28 + C.SRTCP_TRAILER


def test_schedules_are_sorted_and_bounded() -> None:
    for packets in (C.voice_profile(10, 5), C.video_profile(10, 5)):
        offsets = [p.offset for p in packets]
        assert offsets == sorted(offsets)
        assert offsets[0] >= 0 and offsets[-1] <= 10


def test_deterministic_by_seed() -> None:
    assert C.voice_profile(5, 7) == C.voice_profile(5, 7)
    assert C.video_profile(5, 7, "zoom") == C.video_profile(5, 7, "zoom")
    assert C.voice_profile(5, 7) != C.voice_profile(5, 8)


# -- video ---------------------------------------------------------------------------------------


def test_video_rate_and_bursts() -> None:
    packets = C.video_profile(DURATION, seed=6)
    media = _rtp(packets)
    total = sum(len(p.payload) for p, _ in media)
    assert 0.8e6 <= total * 8 / DURATION <= 1.2e6
    sizes = [len(p.payload) for p, _ in media]
    assert max(sizes) == 1200
    assert sum(size == 1200 for size in sizes) / len(sizes) > 0.6
    frames: dict[int, list[tuple[Packet, P.RtpHeader]]] = {}
    for packet, header in media:
        frames.setdefault(header.timestamp, []).append((packet, header))
    assert len(frames) == math.floor((DURATION - C.MEDIA_START) / C.VIDEO_FRAME_INTERVAL) + 1
    starts = sorted(min(p.offset for p, _ in frame) for frame in frames.values())
    assert {round(b - a, 6) for a, b in itertools.pairwise(starts)} == {0.033}
    for frame in frames.values():
        assert len(frame) >= 2  # a burst, not a trickle
        assert [h.marker for _, h in frame] == [False] * (len(frame) - 1) + [True]
        assert frame[-1][0].offset - frame[0][0].offset < 0.01


def test_video_rtp_fields() -> None:
    headers = [h for _, h in _rtp(C.video_profile(5, seed=7))]
    assert {h.payload_type for h in headers} == {96}
    assert len({h.ssrc for h in headers}) == 1
    stamps = sorted({h.timestamp for h in headers})
    assert {b - a for a, b in itertools.pairwise(stamps)} == {2970}
    for previous, current in itertools.pairwise(headers):
        assert current.sequence == (previous.sequence + 1) % 65536


# -- controls ------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", [None, *C.MARKERS])
def test_control_is_the_exact_bit_inverse(marker: C.Marker | None) -> None:
    original = C.voice_profile(6, seed=8, marker=marker)
    inverted = C.control(original)
    assert [p.offset for p in inverted] == [p.offset for p in original]
    for a, b in zip(original, inverted, strict=True):
        assert len(a.payload) == len(b.payload)
        assert all(x ^ y == 0xFF for x, y in zip(a.payload, b.payload, strict=True))
    assert C.control(inverted) == original


def test_control_carries_no_protocol() -> None:
    inverted = C.control(C.voice_profile(6, seed=9))
    assert inverted[0].payload[:4] == bytes.fromhex("fffe") + inverted[0].payload[2:4]
    assert P.read_stun(inverted[0].payload) is None  # top bits set
    assert all(P.read_rtp(p.payload) is None for p in inverted)  # version bits 01
    assert all(P.rtcp_type(p.payload) is None for p in inverted)


def test_random_payload_keeps_shape() -> None:
    original = C.video_profile(3, seed=10)
    randomised = C.random_payload(original, seed=1)
    assert [(p.offset, len(p.payload)) for p in randomised] == [
        (p.offset, len(p.payload)) for p in original
    ]
    assert randomised == C.random_payload(original, seed=1)
    assert randomised != C.random_payload(original, seed=2)
    assert all(a.payload != b.payload for a, b in zip(original, randomised, strict=True))


def test_summary() -> None:
    packets = [Packet(0.0, b"ab"), Packet(0.5, b"cde"), Packet(2.0, b"f")]
    assert C.summary(packets) == C.Summary(3, 6, 2.0, 24.0)
    assert C.summary([]) == C.Summary(0, 0, 0.0, 0.0)
    voice = C.summary(C.voice_profile(20, 1))
    assert 900 < voice.packets < 1100 and 40_000 < voice.mean_bps < 80_000


def test_lab_signatures_match_the_original_and_not_the_control() -> None:
    """The lab's ``rtp_dynamic`` and ``stun_binding`` patterns (docs/lab.md) see only the original."""

    def rtp_dynamic(data: bytes) -> bool:
        return data[0] == 0x80 and 0x60 <= data[1] <= 0x7F

    def stun_binding(data: bytes) -> bool:
        return data[:2] == b"\x00\x01" and data[4:8] == bytes.fromhex("2112a442")

    original = C.voice_profile(5, seed=11)
    inverted = C.control(original)
    assert sum(rtp_dynamic(p.payload) for p in original) > 200
    assert stun_binding(original[0].payload)
    assert not any(rtp_dynamic(p.payload) or stun_binding(p.payload) for p in inverted)


@pytest.mark.parametrize("duration", [0, -1, math.nan, C.MAX_DURATION + 1])
def test_refuses_bad_durations(duration: float) -> None:
    with pytest.raises(ValueError):
        C.voice_profile(duration, 1)
    with pytest.raises(ValueError):
        C.video_profile(duration, 1)


def test_refuses_unknown_marker() -> None:
    with pytest.raises(ValueError, match="unknown marker"):
        C.voice_profile(1, 1, "skype")  # type: ignore[arg-type]


# -- markers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", C.MARKERS)
@pytest.mark.parametrize("profile", [C.voice_profile, C.video_profile])
def test_markers_keep_media_sizes_and_times(marker: C.Marker, profile: object) -> None:
    generate = C.voice_profile if profile is C.voice_profile else C.video_profile
    marked = Counter((p.offset, len(p.payload)) for p in generate(10, 12, marker))
    assert not _media(generate(10, 12)) - marked


def test_whatsapp_marker() -> None:
    packets = C.voice_profile(DURATION, seed=13, marker="whatsapp")
    allocate = stun.parse_message(packets[0].payload)
    assert allocate.message_method == stun.Method.ALLOCATE
    assert allocate.message_class == stun.Class.REQUEST
    assert "MESSAGE-INTEGRITY" in allocate.attributes
    header = P.read_stun(packets[0].payload)
    assert header is not None
    assert {0x4000, 0x4001, 0x4002, 0x4007} <= {kind for kind, _ in header.attributes}
    types: dict[int, int] = {}
    for packet in packets:
        stun_header = P.read_stun(packet.payload)
        if stun_header is not None and stun_header.cookie == P.STUN_COOKIE:
            assert P.fingerprint_ok(packet.payload)
            types[stun_header.msg_type] = types.get(stun_header.msg_type, 0) + 1
    assert types[0x0800] == 1
    assert types[0x0801] == types[0x0802] == int(DURATION - 0.05)
    relay = [p for p in packets if 0x0800 <= int.from_bytes(p.payload[:2], "big") <= 0x0802]
    assert len(relay) == 1 + 2 * int(DURATION - 0.05)  # the lab's whatsapp_relay signature
    media = _rtp(packets)
    assert {p.payload[0] for p, _ in media} == {0x90}
    assert {(h.extension_profile, h.header_length, h.payload_type) for _, h in media} == {
        (0xDEBE, 16, 120)
    }


def test_teams_marker() -> None:
    packets = C.voice_profile(10, seed=14, marker="teams")
    message = stun.parse_message(packets[0].payload)
    assert message.message_method == stun.Method.BINDING
    header = P.read_stun(packets[0].payload)
    assert header is not None
    attributes = dict(header.attributes)
    assert attributes[0x8070] == struct.pack("!I", 2)
    assert 0x8036 in attributes
    media = _rtp(packets)
    assert {p.payload[0] for p, _ in media} == {0x90}
    assert {(h.extension_profile, h.payload_type) for _, h in media} == {(0xBEDE, 111)}


def test_zoom_marker() -> None:
    packets = C.voice_profile(10, seed=15, marker="zoom")
    header = P.read_stun(packets[0].payload)
    assert header is not None and 0x0103 in dict(header.attributes)
    stun.parse_message(packets[0].payload)
    assert packets[1].payload[:3] == b"\x01\x00\x03"
    media = [p for p in packets if p.offset >= C.MEDIA_START and p.payload[8] == 15]
    assert len(media) > 400
    for packet in media:
        assert packet.payload[0] == 5 and packet.payload[7] == 0  # SFU type 5, towards Zoom
        inner = P.read_rtp(packet.payload[27:])  # nDPI zoom.c: RTP 19 bytes into type 15
        assert inner is not None and inner.payload_type == 111
    reports = [p for p in packets if p.payload[8:9] == b"\x21"]
    assert reports and all(P.rtcp_type(p.payload[24:]) == 200 for p in reports)
    video = [p for p in C.video_profile(3, seed=15, marker="zoom") if p.offset >= C.MEDIA_START]
    frames = [p for p in video if p.payload[8] == 16]
    assert frames and all(P.read_rtp(p.payload[32:]) is not None for p in frames)


def test_telegram_marker() -> None:
    packets = C.voice_profile(DURATION, seed=16, marker="telegram")
    tag = packets[0].payload[:16]
    assert 0xFF not in tag
    assert all(p.payload.startswith(tag) for p in packets)
    ping, info = packets[0].payload, packets[1].payload
    assert ping[16:32] == b"\xff" * 12 + b"\xfe\xff\xff\xff" and len(ping) == 40
    assert info[16:32] == b"\xff" * 12 + bytes.fromhex("c77215c0") and len(info) == 64
    assert info[36:44] == ping[32:40]  # the ping's id, echoed
    assert info[44:56] == bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d

    def ndpi_telegram(data: bytes) -> bool:  # nDPI telegram.c's UDP rule, ports aside
        if len(data) < 40 or 0xFF not in data:
            return False
        start = data.index(0xFF)
        run = len(data[start:]) - len(data[start:].lstrip(b"\xff"))
        return run == 12

    assert ndpi_telegram(ping) and ndpi_telegram(info)
    assert not any(ndpi_telegram(p.payload) for p in C.control(packets[:2]))
    pings = [p for p in packets if p.payload[16:32] == b"\xff" * 12 + b"\xfe\xff\xff\xff"]
    assert len(pings) == 1 + int((DURATION - 0.05) / 5)
    assert not any(P.rtcp_type(p.payload) for p in packets)


def test_discord_marker() -> None:
    packets = C.voice_profile(DURATION, seed=17, marker="discord")
    request, response = packets[0].payload, packets[1].payload
    assert len(request) == len(response) == 74
    assert request[:4] == bytes.fromhex("00010046") and response[:4] == bytes.fromhex("00020046")
    assert request[8:72] == bytes(64)
    assert response[8:72].rstrip(b"\0") == b"203.0.113.7"
    media = _rtp(packets)
    assert {p.payload[:2] for p, _ in media[1:]} == {b"\x80\x78"}
    assert {h.ssrc for _, h in media} == {struct.unpack("!I", request[4:8])[0]}
    keepalives = [p for p in packets if len(p.payload) == 8]
    assert len(keepalives) == int((DURATION - 0.05) / 5)
    assert all(p.payload[:4] == bytes.fromhex("1337cafe") for p in keepalives)

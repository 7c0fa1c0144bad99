"""STUN, RTP and RTCP as bytes: builders for the call-traffic generator, readers for tests and the helper.

STUN (RFC 5389 §6, §15):

    0                   1                   2                   3
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |0 0|     STUN Message Type     |         Message Length        |
    |                  Magic Cookie = 0x2112A442                    |
    |                Transaction ID (96 bits)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    then attributes: Type (16) | Length (16) | Value, padded to 4 bytes

The length counts the attributes with their padding. FINGERPRINT (0x8028) is the CRC-32 of the
message up to it, with the length field already counting the fingerprint, XOR 0x5354554E (§15.5).
:func:`stun_message` writes vendor attributes and message types that aioice's table does not know
(WhatsApp's 0x0800–0x0802, Microsoft's 0x8070): aioice stays the reference the tests parse against.

RTP (RFC 3550 §5.1): ``V=2 | P | X | CC`` then ``M | PT``, sequence (16), timestamp (32), SSRC (32),
CSRCs, and with X=1 an extension ``profile (16) | length in 32-bit words (16) | data``.

RTCP sender report (RFC 3550 §6.4.1): ``V=2 | P | RC`` then PT = 200, length in 32-bit words minus
one, SSRC, NTP timestamp (64), RTP timestamp, sender's packet count, sender's octet count.

Readers (:func:`read_stun`, :func:`read_rtp`, :func:`rtcp_type`) take any bytes, never raise and
return ``None`` for what is not the format; the attribute walk is capped at :data:`MAX_ATTRIBUTES`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

STUN_COOKIE = 0x2112A442
STUN_COOKIE_BYTES = STUN_COOKIE.to_bytes(4, "big")
"""The magic cookie as it stands in bytes 4-7 of a message (the one definition msgwatch uses)."""
STUN_HEADER_LENGTH = 20
MESSAGE_INTEGRITY = 0x0008
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
MAX_ATTRIBUTES = 64

BINDING_REQUEST = 0x0001
ALLOCATE_REQUEST = 0x0003

RTP_VERSION = 2
RTCP_SENDER_REPORT = 200
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def stun_message(
    msg_type: int,
    transaction_id: bytes,
    attributes: Sequence[tuple[int, bytes]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A STUN message with the given type, transaction and (type, value) attributes, in order.

    With ``integrity_key``, MESSAGE-INTEGRITY (HMAC-SHA1, §15.4) follows the attributes; with
    ``fingerprint``, FINGERPRINT comes last.
    """
    if not 0 <= msg_type <= 0x3FFF:
        raise ValueError("a STUN message type has its two top bits clear")
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction ID is 12 bytes")
    body = bytearray()
    for kind, value in attributes:
        if not 0 <= kind <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError("attribute type or length out of range")
        body += struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
    if integrity_key is not None:
        header = _stun_header(msg_type, len(body) + 24, transaction_id)
        mac = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
        body += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        header = _stun_header(msg_type, len(body) + 8, transaction_id)
        crc = binascii.crc32(header + body) ^ FINGERPRINT_XOR
        body += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return _stun_header(msg_type, len(body), transaction_id) + bytes(body)


def _stun_header(msg_type: int, length: int, transaction_id: bytes) -> bytes:
    if length > 0xFFFF:
        raise ValueError("STUN message too long")
    return struct.pack("!HHI", msg_type, length, STUN_COOKIE) + transaction_id


@dataclass(frozen=True)
class StunHeader:
    """The framing of one STUN message (no attribute semantics)."""

    msg_type: int
    """The 14-bit message type (method and class interleaved, RFC 5389 §6)."""
    length: int
    """The message length field: bytes after the 20-byte header."""
    cookie: int
    """Bytes 4–7; 0x2112A442 for RFC 5389, anything for RFC 3489's classic STUN."""
    transaction_id: bytes
    """The 12 bytes after the cookie."""
    attributes: tuple[tuple[int, bytes], ...]
    """(type, value) in message order, padding removed; at most :data:`MAX_ATTRIBUTES`."""


def read_stun(data: bytes) -> StunHeader | None:
    """The STUN framing of ``data``, or ``None`` if the datagram is not a well-framed STUN message.

    Well framed: at least 20 bytes, the two top bits clear, the length equal to the bytes after the
    header and a multiple of 4, and the attributes tiling the body exactly. The cookie is reported,
    not required.
    """
    if len(data) < STUN_HEADER_LENGTH or data[0] & 0xC0:
        return None
    msg_type, length, cookie = struct.unpack_from("!HHI", data)
    if length != len(data) - STUN_HEADER_LENGTH or length % 4:
        return None
    attributes: list[tuple[int, bytes]] = []
    offset = STUN_HEADER_LENGTH
    while offset < len(data):
        if offset + 4 > len(data) or len(attributes) >= MAX_ATTRIBUTES:
            return None
        kind, size = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + size
        if end > len(data):
            return None
        attributes.append((kind, bytes(data[offset + 4 : end])))
        offset = end + (-size % 4)
    if offset != len(data):
        return None
    return StunHeader(msg_type, length, cookie, bytes(data[8:20]), tuple(attributes))


def fingerprint_ok(data: bytes) -> bool:
    """Whether ``data`` ends with a FINGERPRINT attribute that matches (RFC 5389 §15.5)."""
    if len(data) < STUN_HEADER_LENGTH + 8:
        return False
    kind, size, value = struct.unpack_from("!HHI", data, len(data) - 8)
    if kind != FINGERPRINT or size != 4:
        return False
    return bool(binascii.crc32(data[:-8]) ^ FINGERPRINT_XOR == value)


def rtp_packet(
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extension: tuple[int, bytes] | None = None,
) -> bytes:
    """One RTP packet (RFC 3550 §5.1) without CSRCs; ``extension`` is (profile, data)."""
    if not 0 <= payload_type <= 127:
        raise ValueError("payload type is 7 bits")
    first = RTP_VERSION << 6
    header_extension = b""
    if extension is not None:
        profile, data = extension
        if len(data) % 4 or len(data) > 4 * 0xFFFF:
            raise ValueError("an RTP header extension is a whole number of 32-bit words")
        first |= 0x10
        header_extension = struct.pack("!HH", profile, len(data) // 4) + data
    second = (0x80 if marker else 0) | payload_type
    header = struct.pack(
        "!BBHII", first, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF
    )
    return header + header_extension + payload


def rtp_header_length(extension: tuple[int, bytes] | None = None) -> int:
    """Bytes of RTP header :func:`rtp_packet` writes before the payload."""
    return 12 + (4 + len(extension[1]) if extension is not None else 0)


@dataclass(frozen=True)
class RtpHeader:
    """The fixed RTP header and the length of everything before the payload."""

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    extension_profile: int | None
    """The extension's 16-bit profile (0xBEDE for RFC 8285 one-byte headers), if X is set."""
    header_length: int
    """Fixed header + CSRCs + extension: where the payload starts."""


def read_rtp(data: bytes) -> RtpHeader | None:
    """The RTP header of ``data``, or ``None`` if it is not RTP version 2 with a consistent length."""
    if len(data) < 12 or data[0] >> 6 != RTP_VERSION:
        return None
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    csrc_count = first & 0x0F
    offset = 12 + 4 * csrc_count
    profile: int | None = None
    if first & 0x10:
        if offset + 4 > len(data):
            return None
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4 + 4 * words
    if offset > len(data):
        return None
    return RtpHeader(
        version=RTP_VERSION,
        padding=bool(first & 0x20),
        extension=bool(first & 0x10),
        csrc_count=csrc_count,
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        extension_profile=profile,
        header_length=offset,
    )


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    seconds = unix_seconds + NTP_UNIX_OFFSET
    whole = int(seconds)
    fraction = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return ((whole & 0xFFFFFFFF) << 32) | fraction


def rtcp_sender_report(
    *, ssrc: int, ntp: int, rtp_timestamp: int, packet_count: int, octet_count: int
) -> bytes:
    """A 28-byte RTCP sender report with no report blocks (RFC 3550 §6.4.1)."""
    return struct.pack(
        "!BBHIQIII",
        RTP_VERSION << 6,
        RTCP_SENDER_REPORT,
        6,  # 28 bytes = 7 words, minus one
        ssrc & 0xFFFFFFFF,
        ntp & 0xFFFFFFFFFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    )


def rtcp_type(data: bytes) -> int | None:
    """The packet type of an RTCP packet (200–204), or ``None`` if ``data`` does not start with one."""
    if len(data) < 8 or data[0] >> 6 != RTP_VERSION or not 200 <= data[1] <= 204:
        return None
    words = struct.unpack_from("!H", data, 2)[0]
    if 4 * (words + 1) > len(data):
        return None
    return data[1]

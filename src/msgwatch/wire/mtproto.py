"""Telegram's unauthenticated first exchange: ``req_pq_multi`` → ``resPQ``, as bytes.

The first thing an MTProto client sends to a data centre, before any key exists, is a plain-text
``req_pq_multi``; the server answers ``resPQ`` (core.telegram.org/mtproto/auth_key). Doing this
exchange, rather than only a TCP connect, shows DPI that lets the handshake through and kills the
protocol. Nothing here authenticates or creates a key: the probe stops after ``resPQ``.

Layout of what the client sends (little-endian throughout, TL serialisation):

    transport  intermediate: ee ee ee ee (first packet only) | length (uint32 LE) | payload
               abridged:     ef (first packet only) | length/4 (1 byte, or 7f + 3 bytes LE) | payload
    payload    auth_key_id     int64  = 0 (plain-text message)
               message_id      int64  ≈ unixtime × 2^32, divisible by 4 for the client
               message_length  int32  = 20
               constructor     uint32 = 0xbe7e8ef1 (req_pq_multi)    → bytes f1 8e 7e be
               nonce           int128 (16 random bytes, sent as they are)

So the intermediate request is 4 + 4 + 40 = 48 bytes. The answer (the server never sends the
0xeeeeeeee / 0xef prefix) carries the same 20-byte plain-text header with a message_id that is
1 modulo 4 (a response), then

               constructor     uint32 = 0x05162463 (resPQ)           → bytes 63 24 16 05
               nonce           int128 (must equal ours)
               server_nonce    int128
               pq              TL bytes: length byte (≤ 253) or fe + 3 bytes LE, data, pad to 4
               fingerprints    Vector<long>: 15 c4 b5 1c, count (int32), count × int64

Sources: core.telegram.org/mtproto/auth_key, /mtproto/description (message_id), /mtproto/
mtproto-transports (intermediate, abridged, and transport errors: a 4-byte payload holding a
negative error code such as -404), /schema/mtproto (constructor numbers), /mtproto/serialize (TL
bytes and vectors), and the worked example /mtproto/samples-auth_key whose request and answer
bytes the tests reproduce.

:func:`parse_res_pq` takes hostile bytes: it never raises, looks at no more than
:data:`MAX_PACKET` bytes of payload, and returns a :class:`ResPQ` or one of the failure strings
below. Builders raise ``ValueError`` only for impossible arguments.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

INVALID = "mtproto_invalid_response"
"""The bytes are not a plain-text MTProto ``resPQ`` in the expected transport."""
TRUNCATED = "mtproto_truncated_response"
"""The answer stops before the packet its length announces (or before a length)."""
NONCE_MISMATCH = "mtproto_nonce_mismatch"
"""A well-formed ``resPQ`` for another client's nonce."""
TRANSPORT_ERROR = "mtproto_transport_error"
"""A 4-byte transport-level error code instead of an answer (see :func:`transport_error_code`)."""

Transport = Literal["intermediate", "abridged"]

REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
ABRIDGED_TAG = b"\xef"
MAX_PACKET = 1024  # a resPQ is 84 bytes with one fingerprint; anything near this is not one
MAX_FINGERPRINTS = 32
MAX_PQ = 64


@dataclass(frozen=True)
class ResPQ:
    """A parsed ``resPQ``."""

    message_id: int
    """The server's message_id (a genuine answer has ``message_id % 4 == 1``)."""
    nonce: bytes
    server_nonce: bytes
    pq: bytes
    """Big-endian product of two primes (8 bytes from real servers)."""
    fingerprints: tuple[int, ...]
    """Server public key fingerprints as unsigned 64-bit numbers."""


def message_id(now: float, *, response: bool = False) -> int:
    """The message_id for Unix time ``now``: ``now × 2^32``, ≡ 0 (client) or 1 (response) mod 4."""
    value = int(now * (1 << 32)) & 0x7FFFFFFFFFFFFFFC
    return value | (1 if response else 0)


def req_pq_multi(
    nonce: bytes, message_id: int, *, transport: Transport = "intermediate", first: bool = True
) -> bytes:
    """The framed ``req_pq_multi`` (``first``: with the transport's one-time tag)."""
    if len(nonce) != 16:
        raise ValueError("the nonce is 16 bytes")
    payload = _plain(message_id, struct.pack("<I", REQ_PQ_MULTI) + nonce)
    return frame(payload, transport=transport, first=first)


def res_pq(
    nonce: bytes,
    server_nonce: bytes,
    pq: bytes,
    fingerprints: Sequence[int],
    *,
    message_id: int,
    transport: Transport = "intermediate",
) -> bytes:
    """The framed ``resPQ`` a data centre sends (for the lab's emulated data centres)."""
    if len(nonce) != 16 or len(server_nonce) != 16:
        raise ValueError("nonces are 16 bytes")
    if len(pq) > MAX_PQ or len(fingerprints) > MAX_FINGERPRINTS:
        raise ValueError("pq or fingerprints too long")
    body = struct.pack("<I", RES_PQ) + nonce + server_nonce + _tl_bytes(pq)
    body += struct.pack("<Ii", VECTOR, len(fingerprints))
    body += b"".join(struct.pack("<Q", f & 0xFFFFFFFFFFFFFFFF) for f in fingerprints)
    return frame(_plain(message_id, body), transport=transport, first=False)


def frame(payload: bytes, *, transport: Transport = "intermediate", first: bool = False) -> bytes:
    """``payload`` wrapped in the transport's envelope; ``first`` adds the one-time tag."""
    if len(payload) % 4:
        raise ValueError("MTProto payloads are a whole number of 32-bit words")
    if transport == "intermediate":
        return (INTERMEDIATE_TAG if first else b"") + struct.pack("<I", len(payload)) + payload
    words = len(payload) // 4
    head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
    return (ABRIDGED_TAG if first else b"") + head + payload


def response_size(data: bytes, *, transport: Transport = "intermediate") -> int | None:
    """How many bytes the server's first packet takes, once its length is readable; else ``None``.

    A length above :data:`MAX_PACKET` counts as just the header: there is nothing to wait for, and
    :func:`parse_res_pq` will call it invalid.
    """
    header = _header(data, transport)
    if header is None:
        return None
    size, length = header
    return size + length if length <= MAX_PACKET else size


def transport_error_code(data: bytes, *, transport: Transport = "intermediate") -> int | None:
    """The negative error code of a transport error packet (e.g. -404), or ``None``."""
    header = _header(data, transport)
    if header is None or header[1] != 4 or len(data) < header[0] + 4:
        return None
    code: int = struct.unpack_from("<i", data, header[0])[0]
    return code if code < 0 else None


def parse_res_pq(
    data: bytes, nonce: bytes, *, transport: Transport = "intermediate"
) -> ResPQ | str:
    """The ``resPQ`` at the start of ``data`` (what the server sent first), or a failure string."""
    header = _header(data, transport)
    if header is None:
        return TRUNCATED
    size, length = header
    if length > MAX_PACKET or length % 4 or length < 4:
        return INVALID
    if len(data) < size + length:
        return TRUNCATED
    payload = bytes(data[size : size + length])
    if length == 4:
        return TRANSPORT_ERROR if struct.unpack("<i", payload)[0] < 0 else INVALID
    return _parse_payload(payload, nonce)


def parse_req_pq_multi(data: bytes, *, transport: Transport = "intermediate") -> bytes | str:
    """The nonce of a client's framed first ``req_pq_multi`` (for the lab's data centres)."""
    tag = INTERMEDIATE_TAG if transport == "intermediate" else ABRIDGED_TAG
    if len(data) < len(tag):
        return TRUNCATED
    if not data.startswith(tag):
        return INVALID
    rest = data[len(tag) :]
    header = _header(rest, transport)
    if header is None:
        return TRUNCATED
    size, length = header
    if length != 40:
        return INVALID
    if len(rest) < size + length:
        return TRUNCATED
    payload = rest[size : size + length]
    auth_key_id, _, body_length, constructor = struct.unpack_from("<QqiI", payload)
    if auth_key_id or body_length != 20 or constructor != REQ_PQ_MULTI:
        return INVALID
    return bytes(payload[24:40])


def _plain(message_id: int, body: bytes) -> bytes:
    if not 0 <= message_id < 1 << 63:
        raise ValueError("message_id is a positive int64")
    return struct.pack("<QQi", 0, message_id, len(body)) + body


def _tl_bytes(value: bytes) -> bytes:
    head = bytes([len(value)]) if len(value) <= 253 else b"\xfe" + len(value).to_bytes(3, "little")
    out = head + value
    return out + bytes(-len(out) % 4)


def _header(data: bytes, transport: Transport) -> tuple[int, int] | None:
    """(header size, payload length) of the packet at the start of ``data``, if readable."""
    if transport == "intermediate":
        if len(data) < 4:
            return None
        return 4, struct.unpack_from("<I", data)[0]
    if not data:
        return None
    if data[0] < 0x7F:
        return 1, data[0] * 4
    if data[0] > 0x7F:  # not a length byte this parser accepts: report an oversized packet
        return 1, 1 << 31
    if len(data) < 4:
        return None
    return 4, int.from_bytes(data[1:4], "little") * 4


def _parse_payload(payload: bytes, nonce: bytes) -> ResPQ | str:
    # Plain-text header (20) + constructor (4) + nonce (16) + server_nonce (16) + pq (≥ 4)
    # + vector constructor and count (8): at least 68 bytes.
    if len(payload) < 68:
        return INVALID
    auth_key_id, msg_id, body_length = struct.unpack_from("<QQi", payload)
    if auth_key_id != 0 or body_length != len(payload) - 20:
        return INVALID
    if struct.unpack_from("<I", payload, 20)[0] != RES_PQ:
        return INVALID
    their_nonce, server_nonce = payload[24:40], payload[40:56]
    offset = 56
    first = payload[offset]
    if first == 0xFE:
        pq_length, offset = int.from_bytes(payload[offset + 1 : offset + 4], "little"), offset + 4
    elif first == 0xFF:
        return INVALID
    else:
        pq_length, offset = first, offset + 1
    if pq_length > MAX_PQ or offset + pq_length + 8 > len(payload):
        return INVALID
    pq = payload[offset : offset + pq_length]
    offset += pq_length
    offset += -offset % 4  # padding relative to the body start (56, a multiple of 4)
    if offset + 8 > len(payload):
        return INVALID
    vector, count = struct.unpack_from("<Ii", payload, offset)
    offset += 8
    if vector != VECTOR or not 0 <= count <= MAX_FINGERPRINTS:
        return INVALID
    if offset + 8 * count != len(payload):
        return INVALID
    fingerprints = struct.unpack_from(f"<{count}Q", payload, offset)
    if their_nonce != nonce:
        return NONCE_MISMATCH
    return ResPQ(msg_id, bytes(their_nonce), bytes(server_nonce), bytes(pq), tuple(fingerprints))

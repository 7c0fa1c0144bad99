"""The opening of WhatsApp's chat connection, as far as public sources document it.

The chat connection ("chatd", TCP to g.whatsapp.net / e*.whatsapp.net on 443 or 5222; research note
§3) opens with a short prologue and then a Noise ``XX`` handshake whose messages are length-framed:

    [edge routing pre-intro]  45 44 00 01 | length (3 bytes, big-endian) | routing info
    prologue                  57 41 | 06 | 03          "WA", magic 6, dictionary version 3
    frame                     length (3 bytes, big-endian) | HandshakeMessage (protobuf)

    HandshakeMessage { clientHello = 2; serverHello = 3; clientFinish = 4; }
    ClientHello      { ephemeral = 1; static = 2; payload = 3; }   the first message: "-> e"
    ServerHello      { ephemeral = 1; static = 2; payload = 3; }   the answer: "<- e, ee, s, es"

The client's first frame is therefore ``12 22 0a 20`` + a 32-byte X25519 public key (36 bytes), and
the whole opening without routing info is 4 + 3 + 36 = 43 bytes. The server's first frame is a
ServerHello: its ephemeral key (32 bytes), its static key encrypted (48 = 32 + 16-byte tag) and an
encrypted certificate payload.

Verified from sources:

- ``WA``, magic value 6 and ``FrameLengthSize = 3`` (big-endian): whatsmeow ``socket/constants.go``
  and ``framesocket.go`` (``WAConnHeader = {'W', 'A', WAMagicValue, token.DictVersion}``,
  DictVersion 3), and the Rust port ``whatsapp-rust`` (``FRAME_LENGTH_SIZE = 3``).
- The pre-intro ``ED\\0\\1`` + 3-byte big-endian length + routing info, sent before ``WA`` when
  the client holds routing info from an earlier connection: whatsapp-rust ``wacore`` handshake
  (``build_edge_routing_preintro``, "based on WhatsApp Web JS").
- What a DPI engine matches: nDPI ``whatsapp.c`` recognises ``45 44 00 01 00 00 04 08`` and
  ``45 44 00 01 00 00 02 08`` (a 4- or 2-byte routing info starting with 0x08) and the very old
  ``57 41 01 05``.
- The HandshakeMessage field numbers: WAProto as quoted by several independent clients.

Not verified here: the dictionary version current apps send (whatsmeow and Baileys send 3; other
ports show 5); what the routing info means (callers pass it as opaque bytes; a fresh client has
none); that WhatsApp's servers answer this hello on raw TCP exactly as the web clients see it over
WebSocket (the reimplementations use ``wss://web.whatsapp.com/ws/chat``, where the same frames ride
in WebSocket messages). :func:`parse_server_hello` therefore checks **framing only**: a plausible
length-prefixed frame arrived. Whether it also decodes as a ServerHello with a 32-byte key is
reported as evidence (``server_hello``), not required.

Parsers never raise, never look past :data:`MAX_FRAME` bytes of a frame, and return a typed result
or :data:`INVALID` / :data:`TRUNCATED`.
"""

from __future__ import annotations

from dataclasses import dataclass

INVALID = "whatsapp_invalid_response"
"""Bytes that are not a WhatsApp frame (zero or implausibly large length, wrong prologue)."""
TRUNCATED = "whatsapp_truncated_response"
"""The bytes stop before the length or the frame it announces."""

WA_MAGIC = 6
DICT_VERSION = 3
EDGE_ROUTING_TAG = b"ED\x00\x01"
PROLOGUE_TAG = b"WA"
FRAME_LENGTH_SIZE = 3
MAX_FRAME = 65536  # a first frame is a few hundred bytes; the protocol allows 16 MiB
MAX_ROUTING_INFO = 1024
MAX_FIELDS = 16
EPHEMERAL_LENGTH = 32


@dataclass(frozen=True)
class ServerFrame:
    """The server's first frame."""

    length: int
    """The announced (and received) frame length."""
    frame: bytes
    """The frame's bytes."""
    server_hello: bool
    """Whether it decodes as HandshakeMessage.serverHello with a 32-byte ephemeral key."""


@dataclass(frozen=True)
class ClientHello:
    """A client's opening, as the lab's emulated chat server reads it."""

    routing_info: bytes | None
    """The edge routing info, if the pre-intro was sent."""
    version: tuple[int, int]
    """The two bytes after ``WA`` (magic, dictionary version)."""
    ephemeral: bytes | None
    """The ClientHello's ephemeral key, or ``None`` if the frame is not a ClientHello."""
    consumed: int
    """Bytes of the input the opening took."""


def edge_routing(routing_info: bytes) -> bytes:
    """The pre-intro: ``ED\\0\\1`` + 3-byte big-endian length + ``routing_info``."""
    if len(routing_info) > MAX_ROUTING_INFO:
        raise ValueError("routing info too long")
    return EDGE_ROUTING_TAG + len(routing_info).to_bytes(3, "big") + routing_info


def frame(data: bytes) -> bytes:
    """``data`` with its 3-byte big-endian length in front."""
    if not 0 < len(data) <= MAX_FRAME:
        raise ValueError("frame length out of range")
    return len(data).to_bytes(FRAME_LENGTH_SIZE, "big") + data


def client_hello(
    ephemeral: bytes,
    *,
    routing_info: bytes | None = None,
    version: tuple[int, int] = (WA_MAGIC, DICT_VERSION),
) -> bytes:
    """The client's opening: [pre-intro] + ``WA`` prologue + the framed ClientHello."""
    if len(ephemeral) != EPHEMERAL_LENGTH:
        raise ValueError("the ephemeral key is 32 bytes")
    if not all(0 <= v <= 255 for v in version):
        raise ValueError("version bytes out of range")
    header = edge_routing(routing_info) if routing_info is not None else b""
    header += PROLOGUE_TAG + bytes(version)
    return header + frame(_field(2, _field(1, ephemeral)))


def server_hello(ephemeral: bytes, static: bytes, payload: bytes) -> bytes:
    """A framed ServerHello with the given (opaque) parts, for the lab's emulated chat server."""
    return frame(_field(3, _field(1, ephemeral) + _field(2, static) + _field(3, payload)))


def response_size(data: bytes) -> int | None:
    """Bytes the server's first frame takes once its length is readable (header only if absurd)."""
    if len(data) < FRAME_LENGTH_SIZE:
        return None
    length = int.from_bytes(data[:FRAME_LENGTH_SIZE], "big")
    return FRAME_LENGTH_SIZE + (length if 0 < length <= MAX_FRAME else 0)


def parse_server_hello(data: bytes) -> ServerFrame | str:
    """The first frame of what the server sent, or a failure string (framing is all it checks)."""
    if len(data) < FRAME_LENGTH_SIZE:
        return TRUNCATED
    length = int.from_bytes(data[:FRAME_LENGTH_SIZE], "big")
    if not 0 < length <= MAX_FRAME:
        return INVALID
    if len(data) < FRAME_LENGTH_SIZE + length:
        return TRUNCATED
    body = bytes(data[FRAME_LENGTH_SIZE : FRAME_LENGTH_SIZE + length])
    hello = _submessage(body, 3)
    ephemeral = _submessage(hello, 1) if hello is not None else None
    return ServerFrame(length, body, ephemeral is not None and len(ephemeral) == EPHEMERAL_LENGTH)


def parse_client_hello(data: bytes) -> ClientHello | str:
    """A client's opening (pre-intro, prologue, first frame), or a failure string."""
    offset = 0
    routing: bytes | None = None
    if data[:1] == EDGE_ROUTING_TAG[:1]:
        if not EDGE_ROUTING_TAG.startswith(data[:4]):
            return INVALID
        if len(data) < 7:
            return TRUNCATED
        size = int.from_bytes(data[4:7], "big")
        if size > MAX_ROUTING_INFO:
            return INVALID
        if len(data) < 7 + size:
            return TRUNCATED
        routing, offset = bytes(data[7 : 7 + size]), 7 + size
    prologue = data[offset : offset + 4]
    if not PROLOGUE_TAG.startswith(prologue[:2]):
        return INVALID
    if len(prologue) < 4:
        return TRUNCATED
    offset += 4
    answer = parse_server_hello(data[offset:])  # the same framing in the other direction
    if isinstance(answer, str):
        return answer
    hello = _submessage(answer.frame, 2)
    ephemeral = _submessage(hello, 1) if hello is not None else None
    consumed = offset + FRAME_LENGTH_SIZE + answer.length
    return ClientHello(routing, (prologue[2], prologue[3]), ephemeral, consumed)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _read_varint(data: bytes, offset: int) -> tuple[int, int] | None:
    value = 0
    for shift in range(0, 35, 7):  # at most 5 bytes: field numbers and lengths fit in 32 bits
        if offset >= len(data):
            return None
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    return None


def _submessage(data: bytes, number: int) -> bytes | None:
    """The value of the first length-delimited field ``number`` if ``data`` is a clean protobuf."""
    found: bytes | None = None
    offset = 0
    for _ in range(MAX_FIELDS):
        if offset == len(data):
            return found
        key = _read_varint(data, offset)
        if key is None:
            return None
        tag, offset = key
        if tag & 7 == 0:
            skipped = _read_varint(data, offset)
            if skipped is None:
                return None
            offset = skipped[1]
            continue
        if tag & 7 != 2:
            return None
        size = _read_varint(data, offset)
        if size is None or size[1] + size[0] > len(data):
            return None
        length, offset = size
        if tag >> 3 == number and found is None:
            found = bytes(data[offset : offset + length])
        offset += length
    return found if offset == len(data) else None

"""STUN Binding and TURN Allocate (without credentials) over UDP, and over a TCP or TLS stream.

Over UDP, retransmission follows RFC 5389 §7.2.1: the first RTO is 500 ms and doubles; at most ``Rc`` = 7
requests are sent; after the last one the client waits ``Rm`` = 16 × RTO. Everything is cut by the
deadline. aioice's codec builds and parses the messages (``aioice.stun``); a datagram that does not
parse, or that answers another transaction, is recorded as an ``invalid`` response and waiting goes on.

aioice's parser is lenient: it checks neither the first two bits nor the magic cookie, and it
slices an attribute whose length runs past the end of the message (and skips unknown ones), so an
answer whose attribute lengths lie would parse as a success. So :func:`well_formed` checks the
layout first (RFC 8489 §5, §14: first two bits zero, the cookie, a length that matches the datagram
and is a multiple of 4, and attributes — each a 4-byte header, its value and the padding to a
multiple of 4 — that end exactly where the message does); an answer that fails it is ``invalid``.

What proves the path:

- Binding: a success response.
- Allocate without credentials: a 401 error carrying REALM and NONCE (the relay challenged us: the
  request reached a working TURN server and its answer came back), or a success.

Over TCP or TLS (:func:`stun_stream_exchange`: TURN's fallback on 443) the request is sent once
(RFC 5389 §7.2.2: the stream is reliable) and no other framing is added: a STUN message delimits
itself (a 20-byte header whose bytes 2-3 give the length of the attributes; RFC 5766 §2.1 runs
TURN over TCP and TLS this way). The answer is read up to the deadline; bytes that cannot be a
STUN header (first two bits not 0, no magic cookie: an HTTP answer, a TLS alert in the clear)
end the exchange as ``stun_invalid_response``; the stream closing first is ``eof_error``.

A relay that answers with another error proves reachability but not a usable relay:
``stun_error_response``; a 401 without the challenge attributes is ``turn_no_challenge``.

The raw datagrams kept in the record have the port and address of every MAPPED-ADDRESS and
XOR-MAPPED-ADDRESS zeroed (:func:`redact_mapped`): they are the probe's own address as the server saw
it, the XOR hides nothing, and the measurement's scrubbing only finds addresses written as text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aioice import stun

from msgwatch import failures as F
from msgwatch.steps.net import endpoint, udp_open
from msgwatch.steps.trace import Trace, b64
from msgwatch.wire.packets import STUN_COOKIE_BYTES, STUN_HEADER_LENGTH

RTO = 0.5
RC = 7
RM = 16
MAX_RESPONSES = 8
REQUESTED_TRANSPORT_UDP = 17 << 24
# MAPPED-ADDRESS, XOR-MAPPED-ADDRESS, and the number XOR-MAPPED-ADDRESS had in RFC 5389's drafts.
_REFLEXIVE_ATTRIBUTES = {0x0001, 0x0020, 0x8020}

Kind = Literal["stun", "turn"]
HEADER = STUN_HEADER_LENGTH
MAX_STREAM_MESSAGE = 4096
"""The longest answer read over a stream (a 401 with REALM and NONCE is about 100 bytes)."""


class Stream(Protocol):
    """A TCP connection or a TLS session on one (``net.TCPConn``, ``steps.tls.TLSConn``)."""

    @property
    def address(self) -> str: ...

    async def write(self, data: bytes, deadline: float) -> None: ...

    async def read(self, deadline: float, max_bytes: int = 16384) -> bytes: ...


@dataclass
class STUNResult:
    failure: str | None
    mapped_address: str | None = None
    error_code: int | None = None


def build_request(kind: Kind, transaction_id: bytes | None = None) -> stun.Message:
    if kind == "stun":
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id)
    else:
        message = stun.Message(
            stun.Method.ALLOCATE,
            stun.Class.REQUEST,
            transaction_id,
            attributes={"REQUESTED-TRANSPORT": REQUESTED_TRANSPORT_UDP},
        )
    message.attributes["SOFTWARE"] = "msgwatch"
    message.add_fingerprint()
    return message


def judge_response(kind: Kind, message: stun.Message) -> STUNResult:
    """Whether one parsed response to our request proves the path (see the module's notes)."""
    mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get(
        "MAPPED-ADDRESS"
    )
    mapped_ip = str(mapped[0]) if mapped else None
    if message.message_class == stun.Class.RESPONSE:
        return STUNResult(None, mapped_ip)
    code = message.error_code
    if kind == "turn" and code == 401:
        challenged = "REALM" in message.attributes and "NONCE" in message.attributes
        return STUNResult(None if challenged else F.TURN_NO_CHALLENGE, mapped_ip, code)
    return STUNResult(F.STUN_ERROR, mapped_ip, code)


def redact_mapped(data: bytes) -> bytes:
    """``data`` with the port and address inside every reflexive-address attribute zeroed.

    Works on the attribute layout alone, so it also covers datagrams that do not parse (an answer
    to another transaction may carry the same address). The fingerprint no longer matches.
    """
    if len(data) < 20 or data[0] & 0xC0:
        return data
    out = bytearray(data)
    offset = 20
    while offset + 4 <= len(out):
        kind = int.from_bytes(out[offset : offset + 2], "big")
        length = int.from_bytes(out[offset + 2 : offset + 4], "big")
        start, end = offset + 4, min(offset + 4 + length, len(out))
        if kind in _REFLEXIVE_ATTRIBUTES and end > start + 2:
            out[start + 2 : end] = bytes(end - start - 2)  # keep reserved byte and family
        offset = start + length + (-length % 4)
    return bytes(out)


def _describe(message: stun.Message | None, data: bytes, t: float, limit: int) -> dict[str, Any]:
    raw = b64(redact_mapped(data)[:limit])
    entry: dict[str, Any] = {"t": t, "num_bytes": len(data), "raw": raw}
    if message is None:
        entry.update({"class": "invalid", "error_code": None, "reason": None, "realm": None,
                      "nonce_present": False, "mapped_address": None, "software": None})  # fmt: skip
        return entry
    error = message.attributes.get("ERROR-CODE")
    realm = message.attributes.get("REALM")
    software = message.attributes.get("SOFTWARE")
    mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get(
        "MAPPED-ADDRESS"
    )
    entry.update(
        {
            "class": "success" if message.message_class == stun.Class.RESPONSE else "error",
            "error_code": error[0] if error else None,
            "reason": str(error[1])[:128] if error else None,
            "realm": str(realm)[:128] if realm is not None else None,
            "nonce_present": "NONCE" in message.attributes,
            "mapped_address": "[scrubbed]" if mapped else None,
            "software": str(software)[:128] if software is not None else None,
        }
    )
    return entry


def well_formed(data: bytes) -> bool:
    """Whether ``data`` has the layout of a STUN message (see the module's notes): header and
    every attribute's length consistent with the datagram, walked to its exact end."""
    if len(data) < HEADER or message_length(data[:HEADER]) != len(data):
        return False
    offset = HEADER
    while offset < len(data):
        if offset + 4 > len(data):
            return False
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4 + length + (-length % 4)
    return offset == len(data)


def _parse(data: bytes, transaction_id: bytes) -> stun.Message | None:
    if not well_formed(data):
        return None
    try:
        message = stun.parse_message(data)
    except Exception:  # aioice raises ValueError, struct.error, UnicodeDecodeError...
        return None
    if message.transaction_id != transaction_id:
        return None
    if message.message_class not in (stun.Class.RESPONSE, stun.Class.ERROR):
        return None
    return message


@dataclass
class _Exchange:
    """One STUN/TURN transaction as its ``msgwatch_udp_exchanges`` record keeps it."""

    kind: Kind
    address: str
    transport: Literal["udp", "tcp", "tls"]
    t0: float
    request: stun.Message = field(init=False)
    wire: bytes = field(init=False)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.request = build_request(self.kind)
        self.wire = bytes(self.request)

    def sending(self, trace: Trace) -> None:
        self.attempts.append({"t0": trace.now(), "num_bytes": len(self.wire)})

    def received(self, trace: Trace, data: bytes) -> stun.Message | None:
        """``data`` parsed as the answer (None: it is not one), kept in the record (bounded)."""
        message = _parse(data, self.request.transaction_id)
        if len(self.responses) < MAX_RESPONSES:
            self.responses.append(_describe(message, data, trace.now(), trace.limits.max_raw))
        return message

    def record(self, trace: Trace, txid: int, result: STUNResult) -> STUNResult:
        """Keep the record (and the probe's mapped address, to scrub it); returns ``result``."""
        if result.mapped_address:
            trace.note_probe_address(result.mapped_address)
        trace.udp_exchange(
            {
                "protocol": self.kind,
                "address": self.address,
                "transport": self.transport,
                "request": {
                    "method": "binding" if self.kind == "stun" else "allocate",
                    "transaction_id": self.request.transaction_id.hex(),
                    "num_bytes": len(self.wire),
                },
                "attempts": self.attempts,
                "responses": self.responses,
                "failure": result.failure,
                "t0": self.t0,
                "t": trace.now(),
                "transaction_id": txid,
            }
        )
        return result


async def stun_exchange(
    trace: Trace,
    txid: int,
    kind: Kind,
    ip: str,
    port: int,
    deadline: float,
    *,
    rto: float = RTO,
) -> STUNResult:
    """One STUN/TURN transaction over UDP; records a ``msgwatch_udp_exchanges`` entry."""
    exchange = _Exchange(kind, endpoint(ip, port), "udp", trace.now())
    result = STUNResult(F.TIMEOUT)
    try:
        sock = await udp_open(trace, txid, ip, port)
    except Exception as exc:
        result = STUNResult(F.classify(exc))
        sock = None
    if sock is not None:
        try:
            result = await _transact(sock, trace, exchange, deadline, rto)
        except F.ProbeFailure as exc:  # the run's byte budget
            result = STUNResult(exc.failure)
        finally:
            sock.close()
    return exchange.record(trace, txid, result)


async def _transact(
    sock: Any, trace: Trace, exchange: _Exchange, deadline: float, rto: float
) -> STUNResult:
    loop = asyncio.get_running_loop()
    invalid_seen = False
    wait = rto
    for attempt in range(RC):
        exchange.sending(trace)
        sock.send(exchange.wire)
        last = attempt == RC - 1
        stop_at = min(deadline, loop.time() + (rto * RM if last else wait))
        while True:
            try:
                data = await sock.recv(stop_at)
            except TimeoutError:
                break
            except Exception as exc:
                return STUNResult(F.classify(exc))
            message = exchange.received(trace, data)
            if message is None:
                invalid_seen = True
                continue
            return judge_response(exchange.kind, message)
        if loop.time() >= deadline:
            break
        wait *= 2
    return STUNResult(F.STUN_INVALID if invalid_seen else F.TIMEOUT)


def message_length(header: bytes) -> int | None:
    """The whole length of the STUN message that ``header`` (at least 20 bytes) opens, or None
    when it cannot open one (first two bits, magic cookie, attribute length a multiple of 4)."""
    length = int.from_bytes(header[2:4], "big")
    if header[0] & 0xC0 or header[4:8] != STUN_COOKIE_BYTES or length % 4:
        return None
    return HEADER + length


async def stun_stream_exchange(
    trace: Trace,
    txid: int,
    kind: Kind,
    stream: Stream,
    transport: Literal["tcp", "tls"],
    deadline: float,
) -> STUNResult:
    """One STUN/TURN transaction over an open stream; records a ``msgwatch_udp_exchanges`` entry
    (``transport`` ``tcp`` or ``tls``). Never raises."""
    exchange = _Exchange(kind, stream.address, transport, trace.now())
    exchange.attempts.append({"t0": exchange.t0, "num_bytes": len(exchange.wire)})  # sent once
    result = STUNResult(F.TIMEOUT)
    buffer = bytearray()
    try:
        await stream.write(exchange.wire, deadline)
        while True:
            size = None
            while size is None or len(buffer) < size:
                if len(buffer) >= HEADER and size is None:
                    size = message_length(bytes(buffer[:HEADER]))
                    if size is None or size > MAX_STREAM_MESSAGE:
                        raise F.ProbeFailure(F.STUN_INVALID)
                    continue
                data = await stream.read(deadline, MAX_STREAM_MESSAGE)
                if not data:
                    raise F.ProbeFailure(F.EOF_ERROR)
                buffer += data
            data, buffer = bytes(buffer[:size]), buffer[size:]
            message = exchange.received(trace, data)
            if message is not None:
                result = judge_response(kind, message)
                break
            if len(exchange.responses) >= MAX_RESPONSES:
                raise F.ProbeFailure(F.STUN_INVALID)
    except F.ProbeFailure as exc:
        result = STUNResult(exc.failure)
    except Exception as exc:
        result = STUNResult(F.classify(exc))
    if result.failure == F.STUN_INVALID and buffer and len(exchange.responses) < MAX_RESPONSES:
        # What arrived in place of a STUN message is the evidence.
        exchange.responses.append(_describe(None, bytes(buffer), trace.now(), trace.limits.max_raw))
    return exchange.record(trace, txid, result)

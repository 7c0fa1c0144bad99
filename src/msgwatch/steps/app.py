"""Application handshakes: the first unauthenticated exchange of a messenger's own protocol.

A TCP connect that succeeds does not show that the service works: deep packet inspection may let
the handshake through and kill the connection once the protocol's first bytes go by (MTProto's
``ee ee ee ee`` prologue, WhatsApp's ``WA`` prologue). These steps send that first message over an
established :class:`~msgwatch.steps.net.TCPConn` and read the server's first answer:

    mtproto    req_pq_multi (intermediate transport, 48 bytes)  →  resPQ with our nonce
    whatsapp   WA prologue + framed ClientHello (43 bytes)      →  a length-framed first frame

The codecs are :mod:`msgwatch.wire.mtproto` and :mod:`msgwatch.wire.whatsapp` (pure: bytes in,
bytes or a failure string out); this module only moves bytes and decides when to stop reading.

Rules:

- Reading stops as soon as the codec can say how long the server's first packet is and that many
  bytes arrived, or at :data:`MAX_RESPONSE` bytes, at EOF, on an error, or at the deadline. Nothing
  beyond the first packet is waited for.
- A step never raises. Its failure is a network failure string when the network ended the exchange
  before a complete answer (``connection_reset``, ``eof_error`` with nothing received,
  ``generic_timeout_error``), else the codec's verdict on what arrived: ``mtproto_*`` /
  ``whatsapp_*`` (an answer that is not the protocol's: an echo, a middlebox, garbage). An answer
  cut by EOF part way is the codec's ``*_truncated_response``; one announcing more than
  :data:`MAX_RESPONSE` bytes is ``*_invalid_response`` (no first answer is that long).
- What arrived is evidence: the first :data:`KEPT_BYTES` are recorded (base64) in
  ``msgwatch_app_handshakes`` with the request's and the response's sizes, whatever the outcome.
- No clock is read here: the MTProto message_id is built from ``now`` (Unix time), passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from msgwatch import failures as F
from msgwatch.steps.net import TCPConn
from msgwatch.steps.trace import b64
from msgwatch.wire import mtproto, whatsapp

MAX_RESPONSE = 4096
"""Bytes read at most from the server's answer (a resPQ is 84 bytes, a ServerHello a few hundred)."""
KEPT_BYTES = 256
"""Bytes of the answer kept in the trace."""

Protocol = Literal["mtproto", "whatsapp"]


@dataclass(frozen=True)
class AppResult:
    """The outcome of one application handshake."""

    protocol: Protocol
    failure: str | None
    """None when the server's first answer is the protocol's, else a stable failure string."""
    response: bytes = b""
    """What the server sent (at most :data:`MAX_RESPONSE` bytes)."""
    answer: mtproto.ResPQ | whatsapp.ServerFrame | None = None
    """The parsed answer when there is no failure."""

    @property
    def ok(self) -> bool:
        return self.failure is None


Answer = mtproto.ResPQ | whatsapp.ServerFrame


@dataclass(frozen=True)
class _Codec:
    """What the exchange needs to know of one protocol."""

    protocol: Protocol
    size_of: Callable[[bytes], int | None]
    """Bytes the server's first packet takes, once readable."""
    parse: Callable[[bytes], Answer | str]
    truncated: str
    invalid: str


async def mtproto_handshake(
    conn: TCPConn, deadline: float, now: float, *, nonce: bytes | None = None
) -> AppResult:
    """Send ``req_pq_multi`` (intermediate transport) and read the ``resPQ``; never raises.
    ``now``: Unix time, for the message_id."""
    nonce = nonce if nonce is not None else os.urandom(16)
    request = mtproto.req_pq_multi(nonce, mtproto.message_id(now))
    codec = _Codec(
        "mtproto",
        mtproto.response_size,
        lambda data: mtproto.parse_res_pq(data, nonce),
        mtproto.TRUNCATED,
        mtproto.INVALID,
    )
    return await _exchange(conn, codec, request, deadline)


async def whatsapp_hello(
    conn: TCPConn, deadline: float, *, ephemeral: bytes | None = None
) -> AppResult:
    """Send WhatsApp's chat opening (``WA`` prologue + ClientHello) and read the first frame;
    never raises. ``ephemeral``: the 32-byte key to offer (random by default)."""
    key = ephemeral if ephemeral is not None else os.urandom(whatsapp.EPHEMERAL_LENGTH)
    request = whatsapp.client_hello(key)
    codec = _Codec(
        "whatsapp",
        whatsapp.response_size,
        whatsapp.parse_server_hello,
        whatsapp.TRUNCATED,
        whatsapp.INVALID,
    )
    return await _exchange(conn, codec, request, deadline)


async def _exchange(conn: TCPConn, codec: _Codec, request: bytes, deadline: float) -> AppResult:
    trace = conn.trace
    t0 = trace.now()
    received = bytearray()
    network: str | None = None
    try:
        await conn.write(request, deadline)
        while len(received) < MAX_RESPONSE:
            size = codec.size_of(bytes(received))
            if size is not None and len(received) >= size:
                break
            wanted = (size if size is not None else MAX_RESPONSE) - len(received)
            chunk = await conn.read(deadline, min(wanted, MAX_RESPONSE - len(received)))
            if not chunk:
                network = F.EOF_ERROR
                break
            received += chunk
    except Exception as exc:
        network = F.classify(exc)
    data = bytes(received)
    parsed = codec.parse(data) if data else codec.truncated
    failure = parsed if isinstance(parsed, str) else None
    if failure == codec.truncated:
        if network is None:  # stopped at MAX_RESPONSE: far larger than any first answer
            failure = codec.invalid
        elif not (network == F.EOF_ERROR and data):
            # Cut before a whole answer: what cut it is the finding. An answer the server's FIN
            # cuts part way stays "truncated"; a FIN before any byte is eof_error.
            failure = network
    record: dict[str, object] = {
        "protocol": codec.protocol,
        "address": conn.address,
        "failure": failure,
        "t0": t0,
        "t": trace.now(),
        "transaction_id": conn.txid,
        "request_bytes": len(request),
        "response_bytes": len(data),
        "response": b64(data[:KEPT_BYTES]) if data else None,
    }
    answer = None if isinstance(parsed, str) else parsed
    if codec.protocol == "whatsapp":
        record["server_hello"] = isinstance(answer, whatsapp.ServerFrame) and answer.server_hello
    trace.app_handshake(record)
    return AppResult(codec.protocol, failure, data, answer)

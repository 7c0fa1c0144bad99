"""Protocol responders: a messenger's server at the first step of its protocol, for the lab.

The probe's application handshakes (:mod:`msgwatch.steps.app`) send a service's first
unauthenticated message and expect the service's answer. In the lab, the helper stands in for
those servers on the endpoints it is given (``--mtproto-listen``, ``--whatsapp-listen``):

    mtproto    a framed ``req_pq_multi`` (intermediate ``ee ee ee ee`` or abridged ``ef``
               transport)  →  ``resPQ`` for the client's nonce, in the same transport, with a fresh
               server nonce, the pq and key fingerprint of Telegram's worked example
               (core.telegram.org/mtproto/samples-auth_key) and a response message_id
    whatsapp   the chat opening (optional edge-routing pre-intro, ``WA`` prologue, a framed
               ClientHello with an ephemeral key)  →  a framed ServerHello: random ephemeral key,
               48 bytes of "encrypted static key" and :data:`WA_PAYLOAD` bytes of "encrypted
               certificate" (random: the lab has no Noise keys, and the probe stops here)

Anything else — a first message that is not the protocol's, one longer than :data:`MAX_REQUEST`,
nothing within ``idle`` seconds, or any byte after the answer — ends the connection (a FIN), as a
real server that cannot parse its input does. After the answer the connection is held open,
silently, until the client closes it, ``idle`` passes or ``lifetime`` ends it: a real data centre
would wait for the next message of the key exchange.

Limits: at most ``max_connections`` at once, ``max_per_client`` from one address (a refused
connection is closed at once), and the answer is charged to the client's byte budget (:mod:`msgwatch.helper.limits`); over it, the
connection is closed unanswered. An answer is larger than the request it answers (84 bytes for
48; about 300 for 43) but comes once per TCP connection, after a completed handshake, so it
cannot be reflected to a forged address.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from msgwatch.helper.conns import Slots, TCPService
from msgwatch.helper.limits import Limits
from msgwatch.helper.logs import ClientNames, logger
from msgwatch.wire import mtproto, whatsapp

Kind = Literal["mtproto", "whatsapp"]

MAX_REQUEST = 4096
"""Bytes of a first message read at most (a req_pq_multi is 48 bytes, a WhatsApp opening 43 plus
at most 1 KiB of routing info)."""
PQ = bytes.fromhex("17ed48941a08f981")
"""pq = 1229739323 × 1402015859, from Telegram's worked example of the key exchange."""
FINGERPRINTS = (0xC3B42B026CE86B21,)
"""The server key fingerprint of the same example."""
WA_STATIC = 48
"""A ServerHello's static part: a 32-byte key encrypted with a 16-byte tag."""
WA_PAYLOAD = 224
"""The ServerHello's encrypted certificate: its real size is not documented; a few hundred bytes."""


def answer_mtproto(data: bytes, now: float) -> bytes | str | None:
    """The ``resPQ`` for a client's first bytes; a failure string if they cannot be one; ``None``
    while more bytes are needed. ``now``: Unix time, for the message_id."""
    if data[:1] == mtproto.ABRIDGED_TAG:
        transport: mtproto.Transport = "abridged"
    elif mtproto.INTERMEDIATE_TAG.startswith(data[:4]):
        transport = "intermediate"
    else:  # no transport this server speaks: no need to wait for more
        return mtproto.INVALID
    nonce = mtproto.parse_req_pq_multi(data, transport=transport)
    if nonce == mtproto.TRUNCATED:
        return None
    if isinstance(nonce, str):
        return nonce
    message_id = mtproto.message_id(now, response=True)
    return mtproto.res_pq(nonce, os.urandom(16), PQ, FINGERPRINTS, message_id=message_id,
                          transport=transport)  # fmt: skip


def answer_whatsapp(data: bytes, now: float) -> bytes | str | None:
    """The ServerHello for a client's opening; a failure string if it is not one; ``None`` while
    more bytes are needed."""
    hello = whatsapp.parse_client_hello(data)
    if hello == whatsapp.TRUNCATED:
        return None
    if isinstance(hello, str):
        return hello
    if hello.ephemeral is None or len(hello.ephemeral) != whatsapp.EPHEMERAL_LENGTH:
        return whatsapp.INVALID
    ephemeral = os.urandom(whatsapp.EPHEMERAL_LENGTH)
    return whatsapp.server_hello(ephemeral, os.urandom(WA_STATIC), os.urandom(WA_PAYLOAD))


ANSWERS: dict[Kind, Callable[[bytes, float], bytes | str | None]] = {
    "mtproto": answer_mtproto,
    "whatsapp": answer_whatsapp,
}


@dataclass
class ResponderCounters:
    connections: int = 0
    refused: int = 0
    answered: int = 0
    rejected: int = 0
    """First messages that were not the protocol's (or too long, or never came)."""
    over_budget: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Responder(TCPService):
    """The connection handler of one protocol; one instance serves all its sockets."""

    kind: Kind
    limits: Limits
    max_connections: int = 512
    max_per_client: int = 256
    """Higher than the echo's 16: a probe opens every data centre and chat endpoint of a service
    at once (a WhatsApp run: 38 connections), and a refusal would look like a reset; several
    probes can share one address (a carrier-grade NAT; the lab's timeline runs two probes per
    ISP at the same moment, 76 connections, which 64 refused now and then: an untouched network's
    text then read "degraded")."""
    idle: float = 30.0
    lifetime: float = 300.0
    names: ClientNames = field(default_factory=lambda: ClientNames(reveal=False))
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    counters: ResponderCounters = field(default_factory=ResponderCounters)
    _slots: Slots = field(default_factory=Slots)

    async def serve(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        answer = await self._first_message(reader)
        if not isinstance(answer, bytes):
            self.counters.rejected += 1
            return
        if not self.limits.allow_send(client, len(answer), self.clock(), packet=False):
            self.counters.over_budget += 1
            if self.limits.newly_dropping(client):
                logger.info("%s: %s over its budget: not answering", self.kind,
                            self.names.name(client))  # fmt: skip
            return
        writer.write(answer)
        self.counters.answered += 1
        self.counters.tx_bytes += len(answer)
        await asyncio.wait_for(writer.drain(), self.idle)
        # Hold the line as a server waiting for the next message would; any byte ends it.
        more = await asyncio.wait_for(reader.read(1), self.idle)
        self.counters.rx_bytes += len(more)

    async def _first_message(self, reader: asyncio.StreamReader) -> bytes | str:
        """The answer to the client's first message, or why there is none."""
        data = bytearray()
        answer = ANSWERS[self.kind]
        while len(data) < MAX_REQUEST:
            try:
                chunk = await asyncio.wait_for(reader.read(MAX_REQUEST - len(data)), self.idle)
            except TimeoutError:
                return "silent"
            if not chunk:
                return "closed"
            data += chunk
            self.counters.rx_bytes += len(chunk)
            result = answer(bytes(data), self.wallclock())
            if result is not None:
                return result
        return "too long"

"""UDP echo and STUN Binding answers, with per-flow counters and send limits.

What a datagram gets (:meth:`UDPService.handle`, pure: bytes, addresses and ``now`` in, the reply
or None out):

1. It is counted on its flow (:mod:`msgwatch.helper.flows`): received bytes are the measurement,
   counted whatever happens next.
2. Datagrams from source ports below 1024 or from one of the helper's own UDP ports get nothing:
   those are where the services that answer any datagram live (echo 7, chargen 19, DNS 53, NTP
   123, another helper's 3478, ...), and a forged source there would start a packet loop. This is
   checked before the send buffer (step 4): such a datagram would never be answered, so that is
   why it was not.
3. A STUN Binding request (RFC 8489: first two bits 0, magic cookie 0x2112A442, length consistent
   with the datagram, attributes that walk exactly to its end, method Binding, class request;
   parsed with ``aioice.stun``) gets a Binding success response with the same transaction id
   (:func:`binding_response`). Any other datagram is echoed **unchanged**.
4. The reply is sent only if the client's budgets allow it (:mod:`msgwatch.helper.limits`) and
   the socket's send buffer is below its high-water mark; otherwise it is dropped silently and
   counted. What is sent is counted on the flow.

**No loops.** Step 2 knows only where echoes usually live. A datagram that is the helper's own
reply to that flow coming back (it sent the same bytes to the same flow
:data:`~msgwatch.helper.loops.MAX_REPEATS` times in the last seconds) is not answered either: the
peer is an echo, and answering would bounce one forged datagram forever between the helper and it
(:mod:`msgwatch.helper.loops` says why this mechanism, and what it costs). Every reply sent,
downstream datagrams included, is remembered for it.

While the helper sends call traffic of its own on a flow (a downstream replay,
:mod:`msgwatch.helper.downstream`), what arrives on that flow is counted and not echoed
(``originated.not_echoed`` in the flow's view): the probe's pinhole datagrams must not add to what
the helper sends it.

Every datagram that gets no reply is counted on its flow with the reason (``source_port``,
``own_reply``, ``send_buffer_full``, ``over_limits``: :data:`msgwatch.wire.helper_api.DECLINED`), so
the flow's view
says why echoes are missing: the helper's own evidence, not an inference from ``tx < rx``.

**No amplification, STUN included.** A reply is never larger than the datagram it answers. An
echo is the same bytes. A Binding success with XOR-MAPPED-ADDRESS is 32 bytes for an IPv4 client
and 44 for IPv6, plus 8 for FINGERPRINT — larger than a bare 20-byte request. So the answer is the
largest of these that fits in the request's size:

    XOR-MAPPED-ADDRESS + FINGERPRINT   (FINGERPRINT only when the request had one)
    XOR-MAPPED-ADDRESS
    no attributes (20 bytes)           (still a success with the transaction id: the path works)

msgwatch's own Binding requests carry SOFTWARE and FINGERPRINT (40 bytes) and get the full answer
over IPv4; over IPv6, or from a client that wants its mapped address from a short request, pad the
request (a longer SOFTWARE, or PADDING) to 52 bytes. This is a deliberate departure from RFC 8489
(which wants XOR-MAPPED-ADDRESS in every success): a helper on the Internet must not be a
reflector with a gain above one, and the bare success still proves that the path carries STUN.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from aioice import stun

from msgwatch.helper.flows import (
    OVER_LIMITS,
    OWN_REPLY,
    SEND_BUFFER_FULL,
    SOURCE_PORT,
    FlowKey,
    FlowTable,
)
from msgwatch.helper.limits import Limits
from msgwatch.helper.logs import ClientNames, logger
from msgwatch.helper.loops import MAX_REPEATS, RecentReplies
from msgwatch.steps.stun import well_formed
from msgwatch.wire.packets import STUN_COOKIE_BYTES, STUN_HEADER_LENGTH

HEADER = STUN_HEADER_LENGTH


def normalize_ip(address: str) -> str:
    """An address as text, IPv4-mapped IPv6 addresses as the IPv4 address (zone dropped)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_binding_request(data: bytes) -> bool:
    """The header check (cheap, before any parsing): a STUN Binding request by its 20 bytes."""
    return (
        len(data) >= HEADER
        and data[0:2] == b"\x00\x01"
        and data[4:8] == STUN_COOKIE_BYTES
        and int.from_bytes(data[2:4], "big") == len(data) - HEADER
        and len(data) % 4 == 0
    )


def binding_response(request: bytes, peer: tuple[str, int]) -> bytes | None:
    """The Binding success response to ``request``, never larger than it; None if it is not a
    valid Binding request (then it is echoed like any datagram)."""
    if not is_binding_request(request) or not well_formed(request):
        return None
    try:
        message = stun.parse_message(request)  # checks FINGERPRINT when present
    except Exception:  # ValueError, struct.error, UnicodeDecodeError...: not ours to answer
        return None
    tid = message.transaction_id
    mapped = (normalize_ip(peer[0]), peer[1])
    full = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, tid,
                        attributes={"XOR-MAPPED-ADDRESS": mapped})  # fmt: skip
    candidates = []
    if "FINGERPRINT" in message.attributes:
        signed = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, tid,
                              attributes={"XOR-MAPPED-ADDRESS": mapped})  # fmt: skip
        signed.add_fingerprint()
        candidates.append(bytes(signed))
    candidates.append(bytes(full))
    for answer in candidates:
        if len(answer) <= len(request):
            return answer
    return bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, tid))


@dataclass
class UDPCounters:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    stun_answers: int = 0
    refused_source_port: int = 0
    over_limits: int = 0
    send_buffer_full: int = 0
    originated_packets: int = 0
    originated_bytes: int = 0
    not_echoed: int = 0
    own_reply: int = 0
    """Datagrams not answered because they were the helper's own reply coming back (a loop)."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class UDPService:
    """The decision for each datagram (see the module's notes); shared by every UDP socket."""

    flows: FlowTable
    limits: Limits
    own_ports: frozenset[int]
    names: ClientNames = field(default_factory=lambda: ClientNames(reveal=False))
    counters: UDPCounters = field(default_factory=UDPCounters)
    sending: set[FlowKey] = field(default_factory=set)
    """Flows carrying a downstream send now: what arrives on them is not echoed."""
    endpoints: dict[tuple[str, int], UDPEndpoint] = field(default_factory=dict)
    """The bound sockets by (address, port), for downstream sends (filled as they are made)."""
    replies: RecentReplies = field(default_factory=RecentReplies)
    """What was sent recently, by flow: the loop guard (:mod:`msgwatch.helper.loops`)."""

    def handle(
        self, data: bytes, peer: tuple[str, int], local_port: int, now: float, sendable: bool = True
    ) -> bytes | None:
        """The reply to send for ``data`` from ``peer``, or None. ``sendable`` False: the socket's
        send buffer is full (the datagram is counted as received and nothing is answered)."""
        client = normalize_ip(peer[0])
        key = (client, peer[1], local_port)
        self.counters.rx_packets += 1
        self.counters.rx_bytes += len(data)
        self.flows.received(key, len(data), now)
        if peer[1] < 1024 or peer[1] in self.own_ports:
            self.counters.refused_source_port += 1
            self.flows.declined(key, SOURCE_PORT)
            return None
        if key in self.sending:
            self.counters.not_echoed += 1
            self.flows.withheld(key, "not_echoed")
            return None
        digest = self.replies.digest(key, data)
        if self.replies.times_sent(digest, now) >= MAX_REPEATS:
            self.counters.own_reply += 1
            self.flows.declined(key, OWN_REPLY)
            if self.counters.own_reply & (self.counters.own_reply - 1) == 0:  # 1, 2, 4, 8...
                logger.info("udp: %s sends back what the helper sent it (an echo): not answered "
                            "(%d so far)", self.names.name(client), self.counters.own_reply)  # fmt: skip
            return None
        if not sendable:
            self.counters.send_buffer_full += 1
            self.flows.declined(key, SEND_BUFFER_FULL)
            return None
        answer = binding_response(data, (client, peer[1]))
        reply = data if answer is None else answer
        if not self.limits.allow_send(client, len(reply), now):
            self.counters.over_limits += 1
            self.flows.declined(key, OVER_LIMITS)
            if self.limits.newly_dropping(client):
                logger.info("udp: %s over its limits: dropping", self.names.name(client))
            return None
        if answer is not None:
            self.counters.stun_answers += 1
            digest = self.replies.digest(key, reply)
        self.replies.sent(digest, now)
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(reply)
        self.flows.sent(key, len(reply), now)
        return reply

    def originated(self, key: FlowKey, payload: bytes, now: float) -> None:
        """Remember a datagram of a downstream send, so that an echo of it is not answered."""
        self.replies.sent(self.replies.digest(key, payload), now)


class UDPEndpoint(asyncio.DatagramProtocol):
    """The asyncio side of one bound UDP socket (made by :mod:`msgwatch.helper.server`)."""

    def __init__(
        self, service: UDPService, local_port: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.service, self.local_port, self.clock = service, local_port, clock
        self.transport: asyncio.DatagramTransport | None = None
        self.paused = False
        """The transport's buffer is above its high-water mark: answer nothing until it drains
        (asyncio would otherwise queue replies without bound)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (Python 3.11's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.service.endpoints[(normalize_ip(str(sockname[0])), int(sockname[1]))] = self

    def connection_lost(self, exc: Exception | None) -> None:
        for key, endpoint in list(self.service.endpoints.items()):
            if endpoint is self:
                del self.service.endpoints[key]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is None:
            return
        peer = (str(addr[0]), int(addr[1]))
        reply = self.service.handle(data, peer, self.local_port, self.clock(), not self.paused)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about an earlier reply: nothing to do, the client is gone

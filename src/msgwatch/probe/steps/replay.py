"""Call-traffic replay over UDP to a test helper's echo port.

The probe sends a schedule of datagrams (``(offset_seconds, payload)``, e.g. a voice or video
profile from :mod:`msgwatch.wire.calltraffic`) to the helper, which echoes each one back unchanged.
Every datagram thus crosses the censor twice, once in each direction. The step records, per
interval (100 ms by default), what was sent and what came back, and overall loss and
RFC 3550 interarrival jitter of the echoes. Datagrams are not traced one by one (a 10-second video
replay is over a thousand of them): the replay's record summarises them, and the trace carries one
``write_to``/``read_from`` pair of summary events per replay.

An echo is matched to its datagram by content (the payloads of a profile are distinct), so late or
reordered echoes count for the datagram they belong to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgwatch.probe import failures as F
from msgwatch.probe.net import UDPSocket, endpoint, udp_open
from msgwatch.probe.trace import Trace

Packet = tuple[float, bytes]
GRACE = 0.5
"""Seconds to wait for echoes after the last datagram was sent."""


@dataclass
class ReplayResult:
    sent_packets: int = 0
    sent_bytes: int = 0
    received_packets: int = 0
    received_bytes: int = 0
    jitter_ms: float = 0.0
    failure: str | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)
    local_port: int | None = None
    """The probe's source port (the helper names the flow by it); None when no socket opened."""
    record: dict[str, Any] = field(default_factory=dict)
    """The replay's entry in ``msgwatch_replays`` (the helper's counts are added to it later)."""

    @property
    def loss(self) -> float:
        return 1.0 - self.received_packets / self.sent_packets if self.sent_packets else 1.0


def interval_rows(
    sends: list[tuple[float, int]], echoes: list[tuple[float, int]], width: float
) -> list[dict[str, Any]]:
    end = max([t for t, _ in sends] + [t for t, _ in echoes] + [0.0])
    count = int(end / width) + 1
    rows = [
        {"t": round(i * width, 3), "tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0}
        for i in range(count)
    ]
    for t, size in sends:
        row = rows[min(count - 1, int(t / width))]
        row["tx_packets"] += 1
        row["tx_bytes"] += size
    for t, size in echoes:
        row = rows[min(count - 1, int(t / width))]
        row["rx_packets"] += 1
        row["rx_bytes"] += size
    return rows


def interarrival_jitter(pairs: Sequence[tuple[float, float]]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter (seconds) over (sent, received) time pairs."""
    jitter, previous = 0.0, None
    for sent, received in sorted(pairs):
        transit = received - sent
        if previous is not None:
            jitter += (abs(transit - previous) - jitter) / 16
        previous = transit
    return jitter


async def receive_until(
    sock: UDPSocket, until: float, result: ReplayResult, handle: Callable[[bytes], None]
) -> None:
    """``handle`` every datagram that arrives on ``sock`` until ``until`` (loop time). A receive
    error (an ICMP port unreachable and the like) is kept in ``result.failure`` if it is the
    first failure, and receiving goes on."""
    while True:
        try:
            data = await sock.recv(until, quiet=True)
        except TimeoutError:
            return
        except Exception as exc:
            result.failure = result.failure or F.classify(exc)
            continue
        handle(data)


async def replay(
    trace: Trace,
    txid: int,
    ip: str,
    port: int,
    packets: Sequence[Packet],
    deadline: float,
    *,
    label: dict[str, Any],
    interval: float = 0.1,
    marked: frozenset[int] = frozenset(),
    avoid_ports: frozenset[int] = frozenset(),
) -> ReplayResult:
    """Send ``packets`` on their schedule, collect the echoes; records a replay entry.

    ``marked``: indices of datagrams to account for separately (the ones carrying a protocol's
    framing, e.g. STUN): how many of them were sent and how many came back. A censor that drops only
    those (a handful among thousands of media packets) shows there, not in the overall loss.
    ``avoid_ports``: the helper's ports this run uses; the replay never sends from one of them
    (the helper would not answer, :func:`msgwatch.probe.net.udp_open`)."""
    loop = asyncio.get_running_loop()
    result = ReplayResult()
    t0 = trace.now()
    address = endpoint(ip, port)
    sends: list[tuple[float, int]] = []
    echoes: list[tuple[float, int]] = []
    pending: dict[bytes, float] = {}
    marked_payloads: dict[bytes, int] = {}  # STUN transaction id → index
    marked_back: set[int] = set()
    pairs: list[tuple[float, float]] = []
    try:
        sock = await udp_open(trace, txid, ip, port, avoid_ports=avoid_ports)
    except Exception as exc:
        result.failure = F.classify(exc)
        sock = None
    if sock is not None:
        result.local_port = sock.local_port
        start = loop.time()
        last = (packets[-1][0] if packets else 0.0) + GRACE
        stop_at = min(deadline, start + last)

        def echoed(data: bytes) -> None:
            now = loop.time() - start
            echoes.append((now, len(data)))
            sent_at = pending.pop(data, None)
            if sent_at is not None:
                pairs.append((sent_at, now))
            # A marked (STUN-framed) datagram came back if it was echoed, or if the helper
            # answered it as STUN: either way its transaction id returns.
            index = marked_payloads.get(data[8:20]) if len(data) >= 20 else None
            if index is not None:
                marked_back.add(index)

        receiver = asyncio.create_task(receive_until(sock, stop_at, result, echoed))
        try:
            for index, (offset, payload) in enumerate(packets):
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if loop.time() >= stop_at:
                    break
                try:
                    sock.send(payload, quiet=True)
                except F.ProbeFailure as exc:  # the run's byte budget
                    result.failure = exc.failure
                    break
                now = loop.time() - start
                sends.append((now, len(payload)))
                pending.setdefault(payload, now)
                if index in marked and len(payload) >= 20:
                    marked_payloads.setdefault(payload[8:20], index)
            await receiver
        finally:
            receiver.cancel()
            sock.close()
    result.sent_packets, result.sent_bytes = len(sends), sum(s for _, s in sends)
    result.received_packets = min(len(echoes), len(sends))
    result.received_bytes = sum(s for _, s in echoes)
    result.jitter_ms = round(interarrival_jitter(pairs) * 1000, 3)
    result.intervals = interval_rows(sends, echoes, interval)
    if result.failure is None and result.sent_packets and not result.received_packets:
        result.failure = F.TIMEOUT
    trace.event("write_to", txid=txid, t0=t0, address=address, proto="udp",
                num_bytes=result.sent_bytes)  # fmt: skip
    trace.event("read_from", txid=txid, t0=t0, address=address, proto="udp",
                num_bytes=result.received_bytes, failure=result.failure)  # fmt: skip
    result.record = trace.replay(
        {
            **label,
            "address": address,
            "transport": "udp",
            "sent_packets": result.sent_packets,
            "sent_bytes": result.sent_bytes,
            "received_packets": result.received_packets,
            "received_bytes": result.received_bytes,
            "loss": round(result.loss, 4),
            "jitter_ms": result.jitter_ms,
            "marked_sent": len(marked_payloads),
            "marked_received": len(marked_back),
            "intervals": result.intervals[:600],
            "failure": result.failure,
            "t0": t0,
            "t": trace.now(),
            "transaction_id": txid,
        }
    )
    return result

"""The archival trace of one measurement.

Rules:

- Every network operation is recorded **as it happens**, already in OONI's archival form (df-001,
  df-002, df-005, df-006, df-008 and msgwatch's UDP-exchange key), with ``t0``/``t`` in seconds since
  the measurement's start, read from a monotonic clock.
- Each operation chain (one endpoint: DNS → TCP → TLS → HTTP) has a ``transaction_id``; ids are
  handed out in order from 1.
- Recording never raises and never grows without bound: each list is capped; records beyond the cap
  are counted in ``dropped`` and discarded. Byte payloads are cut to a size given at construction.
- The trace knows the probe's own non-loopback addresses it has seen (local socket addresses, STUN
  mapped addresses), for scrubbing before the measurement is written. The traces of one run share
  one set (the runner passes it to each): an address learned by one service is scrubbed from all.

The trace is not thread-safe; it is used from one asyncio loop.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msgwatch.failures import BUDGET_EXCEEDED as BUDGET_EXCEEDED

Record = dict[str, Any]


@dataclass
class Budget:
    """Bytes a whole run may move (sent + received), shared by every measurement of the run.

    Sending past the limit raises ``ProbeFailure(budget_exceeded)`` before anything leaves; what
    arrives is counted (it was already on the wire)."""

    limit: int | None = None
    sent: int = 0
    received: int = 0

    def spend(self, num_bytes: int) -> None:
        from msgwatch.failures import ProbeFailure

        if self.limit is not None and self.sent + self.received + num_bytes > self.limit:
            raise ProbeFailure(BUDGET_EXCEEDED)
        self.sent += num_bytes


def encode_bytes(data: bytes) -> str | dict[str, str]:
    """A body as OONI stores it: text when it is valid UTF-8, else base64."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


def b64(data: bytes) -> dict[str, str]:
    return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


@dataclass
class TraceLimits:
    max_records: int = 4000
    """Per list (queries, network_events, ...)."""
    max_body: int = 64 * 1024
    """HTTP response body bytes kept."""
    max_raw: int = 2048
    """Raw bytes kept per DNS response or STUN datagram."""
    max_certs: int = 8


@dataclass
class Trace:
    """Records of one measurement. ``clock`` is monotonic seconds (tests may pass a fake one)."""

    limits: TraceLimits = field(default_factory=TraceLimits)
    clock: Callable[[], float] = time.monotonic
    start: float = -1.0
    dropped: int = 0
    queries: list[Record] = field(default_factory=list)
    tcp_connect: list[Record] = field(default_factory=list)
    tls_handshakes: list[Record] = field(default_factory=list)
    requests: list[Record] = field(default_factory=list)
    network_events: list[Record] = field(default_factory=list)
    udp_exchanges: list[Record] = field(default_factory=list)
    throughput: list[Record] = field(default_factory=list)
    replays: list[Record] = field(default_factory=list)
    helper_views: list[Record] = field(default_factory=list)
    app_handshakes: list[Record] = field(default_factory=list)
    probe_addresses: set[str] = field(default_factory=set)
    budget: Budget = field(default_factory=Budget)
    bytes_sent: int = 0
    bytes_received: int = 0
    _next_id: int = 0

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.clock()

    def now(self) -> float:
        """Seconds since the measurement's start, rounded to the microsecond."""
        return round(self.clock() - self.start, 6)

    def spend(self, num_bytes: int) -> None:
        """Account for bytes about to be sent; raises when the run's budget would be exceeded."""
        self.budget.spend(num_bytes)
        self.bytes_sent += num_bytes

    def received(self, num_bytes: int) -> None:
        self.budget.received += num_bytes
        self.bytes_received += num_bytes

    def new_transaction(self) -> int:
        self._next_id += 1
        return self._next_id

    def _append(self, target: list[Record], record: Record) -> Record:
        if len(target) >= self.limits.max_records:
            self.dropped += 1
        else:
            target.append(record)
        return record

    def note_probe_address(self, address: str | None) -> None:
        """Remember one of the probe's own addresses (for scrubbing); loopback is not secret."""
        if not address:
            return
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return
        if not ip.is_loopback and not ip.is_unspecified:
            self.probe_addresses.add(str(ip))

    # -- df-008 ------------------------------------------------------------------------------

    def event(
        self,
        operation: str,
        *,
        txid: int,
        t0: float,
        address: str | None = None,
        proto: str | None = None,
        num_bytes: int | None = None,
        failure: str | None = None,
    ) -> None:
        record: Record = {"operation": operation, "t0": t0, "t": self.now(), "transaction_id": txid}
        if address is not None:
            record["address"] = address
        if proto is not None:
            record["proto"] = proto
        if num_bytes is not None:
            record["num_bytes"] = num_bytes
        record["failure"] = failure
        self._append(self.network_events, record)

    # -- df-005 ------------------------------------------------------------------------------

    def tcp(self, *, txid: int, t0: float, ip: str, port: int, failure: str | None) -> None:
        self._append(
            self.tcp_connect,
            {
                "ip": ip,
                "port": port,
                "status": {"success": failure is None, "failure": failure, "blocked": None},
                "t0": t0,
                "t": self.now(),
                "transaction_id": txid,
            },
        )

    # -- df-002 ------------------------------------------------------------------------------

    def query(self, record: Record) -> None:
        self._append(self.queries, record)

    # -- df-006 ------------------------------------------------------------------------------

    def tls(self, record: Record) -> None:
        self._append(self.tls_handshakes, record)

    # -- df-001 (most recent first) ----------------------------------------------------------

    def request(self, record: Record) -> None:
        if len(self.requests) >= self.limits.max_records:
            self.dropped += 1
            return
        self.requests.insert(0, record)

    # -- msgwatch_udpx -----------------------------------------------------------------------

    def udp_exchange(self, record: Record) -> None:
        self._append(self.udp_exchanges, record)

    # -- msgwatch_throughput -------------------------------------------------------------------

    def download(self, record: Record) -> None:
        self._append(self.throughput, record)

    # -- msgwatch_helper_views -----------------------------------------------------------------

    def helper_view(self, record: Record) -> None:
        self._append(self.helper_views, record)

    # -- msgwatch_replays ----------------------------------------------------------------------

    def replay(self, record: Record) -> Record:
        return self._append(self.replays, record)

    # -- msgwatch_app_handshakes ----------------------------------------------------------------

    def app_handshake(self, record: Record) -> None:
        self._append(self.app_handshakes, record)

    def test_keys(self) -> Record:
        """The trace's part of ``test_keys`` (copies of the lists)."""
        return {
            "queries": list(self.queries),
            "tcp_connect": list(self.tcp_connect),
            "tls_handshakes": list(self.tls_handshakes),
            "requests": list(self.requests),
            "network_events": list(self.network_events),
            "msgwatch_udp_exchanges": list(self.udp_exchanges),
            "msgwatch_throughput": list(self.throughput),
            "msgwatch_replays": list(self.replays),
            "msgwatch_helper_views": list(self.helper_views),
            "msgwatch_app_handshakes": list(self.app_handshakes),
            "msgwatch_dropped_events": self.dropped,
            "msgwatch_bytes": {"sent": self.bytes_sent, "received": self.bytes_received},
        }

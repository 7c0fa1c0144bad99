"""Per-flow counters: what the helper received and sent on each UDP flow, per 100 ms interval.

A probe that replays call traffic to the helper needs the helper's own view to tell the two
directions apart: did the packets not arrive (loss on the way in), or did the echoes not come back
(loss on the way out)? So for every flow — (client address, client port, local port) — the helper
counts datagrams and bytes received and sent in 100 ms intervals, anchored at the flow's first
datagram, and serves them to that client (``GET /v1/udp/flows``).

It also counts, per flow, the datagrams it received and declined to answer, by reason
(:data:`DECLINED`): ``over_limits`` (the client's budgets, :mod:`msgwatch.helper.limits`),
``send_buffer_full`` (the socket's send buffer above its high-water mark), ``source_port`` (a
source port the helper never answers, :mod:`msgwatch.helper.udp` step 2), ``own_reply`` (what
the helper itself sent to the flow coming back: a loop, :mod:`msgwatch.helper.loops`). Every
datagram received is either answered (``tx``) or declined for one reason, so a live flow's totals
always satisfy
``rx_packets == tx_packets + sum(declined)``: a shortfall of echoes is the helper's own doing only
when it says so here, and a judge need not infer it from ``tx < rx``.

A flow on which the helper sent call traffic of its own (a downstream send, ``POST /v1/udp/send``)
also counts that (:data:`ORIGINATED`: sent, also in ``tx``; withheld for the limits or a full
send buffer; received while sending and not echoed, also in ``rx``); for such a flow
``rx_packets == (tx_packets - originated.tx_packets) + sum(declined) + originated.not_echoed``.
A downstream send needs a recent datagram *from* the flow, so the time of the last one received
is kept apart from the last activity (``Flow.last_rx``).

A flow's view also says how long the helper itself stalled during the flow (``stalls``,
:mod:`msgwatch.helper.stalls`): echoes that left late are the helper's doing, not the path's.

Bounds (memory is what an attacker would aim at):

- at most ``max_flows`` flows, least recently active evicted first;
- a flow idle for ``expire`` seconds (120) is forgotten;
- at most ``max_intervals`` intervals per flow (1200: two minutes of continuous traffic), oldest
  dropped first; only intervals in which something happened are stored;
- at most ``max_total_intervals`` intervals over all flows; beyond that the least recently active
  flows are evicted.

Each interval costs 5 machine words (arrays, not objects); the declines are totals only (four
counters a flow, no intervals), so they add nothing per interval. Time is passed in (``now``, monotonic
seconds); nothing here reads a clock or a socket.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from msgwatch.helper import stalls
from msgwatch.steps.lag import LagMonitor
from msgwatch.wire.helper_api import DECLINED, ORIGINATED, FlowInterval, FlowView

INTERVAL = 0.1
EXPIRE = 120.0
MAX_FLOWS = 4096
MAX_INTERVALS = 1200
MAX_TOTAL_INTERVALS = 500_000

FlowKey = tuple[str, int, int]
"""(client address, client port, local port)."""

RX_PACKETS, RX_BYTES, TX_PACKETS, TX_BYTES = range(4)

OVER_LIMITS, SEND_BUFFER_FULL, SOURCE_PORT, OWN_REPLY = (
    DECLINED.index(n) for n in ("over_limits", "send_buffer_full", "source_port", "own_reply")
)
"""Indices into ``Flow.declined`` (the reasons are the wire contract's :data:`DECLINED`;
``own_reply``: the helper's own reply coming back, a loop: :mod:`msgwatch.helper.loops`).
A downstream send's counts (``Flow.originated``) are in the order of :data:`ORIGINATED`
(``POST /v1/udp/send``, :mod:`msgwatch.helper.downstream`): datagrams and bytes the helper
originated (also in ``tx``), the scheduled datagrams it withheld for its limits or a full send
buffer, and the datagrams it received on the flow while sending and did not echo (also in ``rx``)."""


@dataclass
class Flow:
    origin: float
    """Monotonic time of the first datagram (intervals count from here)."""
    last: float
    index: array[int] = field(default_factory=lambda: array("q"))
    """Interval numbers, ascending; ``counts[4*i : 4*i+4]`` belong to ``index[i]``."""
    counts: array[int] = field(default_factory=lambda: array("Q"))
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """Since the first datagram, trimmed intervals included."""
    trimmed: int = 0
    """Intervals dropped from the front (``max_intervals``)."""
    declined: list[int] = field(default_factory=lambda: [0] * len(DECLINED))
    """Datagrams received and not answered, by reason (:data:`DECLINED`); totals only."""
    last_rx: float | None = None
    """Monotonic time of the last datagram received (a downstream send needs a fresh one)."""
    originated: list[int] | None = None
    """A downstream send's counts (:data:`ORIGINATED`); None: the helper never sent one here."""

    def add(self, now: float, which: int, num_bytes: int) -> bool:
        """Count one datagram; True when a new interval was started."""
        number = max(0, int((now - self.origin) / INTERVAL))
        self.last = max(self.last, now)
        fresh = not self.index or self.index[-1] < number
        if fresh:
            self.index.append(number)
            self.counts.extend((0, 0, 0, 0))
        base = 4 * (len(self.index) - 1)
        self.counts[base + which] += 1
        self.counts[base + which + 1] += num_bytes
        self.totals[which] += 1
        self.totals[which + 1] += num_bytes
        return fresh

    def trim(self, keep: int) -> int:
        """Drop the oldest intervals so that at most ``keep`` remain; returns how many went."""
        extra = len(self.index) - keep
        if extra <= 0:
            return 0
        del self.index[:extra]
        del self.counts[: 4 * extra]
        self.trimmed += extra
        return extra


@dataclass
class FlowTable:
    """Every flow's intervals, bounded as the module says."""

    max_flows: int = MAX_FLOWS
    max_intervals: int = MAX_INTERVALS
    max_total_intervals: int = MAX_TOTAL_INTERVALS
    expire: float = EXPIRE
    _flows: OrderedDict[FlowKey, Flow] = field(default_factory=OrderedDict)
    _intervals: int = 0
    evicted: int = 0
    lag: LagMonitor = field(default_factory=LagMonitor)
    """The helper's own loop monitor (started by the helper: :mod:`msgwatch.helper.stalls`)."""

    def __len__(self) -> int:
        return len(self._flows)

    @property
    def intervals(self) -> int:
        return self._intervals

    def received(self, key: FlowKey, num_bytes: int, now: float) -> None:
        self._count(key, RX_PACKETS, num_bytes, now)
        self._flows[key].last_rx = now

    def last_received(self, key: FlowKey, now: float) -> float | None:
        """When the helper last received a datagram of ``key`` (None: never, or the flow expired)."""
        flow = self._flows.get(key)
        if flow is None or now - flow.last > self.expire:
            return None
        return flow.last_rx

    def originating(self, key: FlowKey) -> bool:
        """Mark ``key`` as carrying a downstream send (its view gets ``originated``); False when
        the flow is not in the table."""
        flow = self._flows.get(key)
        if flow is None:
            return False
        if flow.originated is None:
            flow.originated = [0] * len(ORIGINATED)
        return True

    def originated(self, key: FlowKey, num_bytes: int, now: float) -> None:
        """Count a datagram the helper originated on ``key`` (a downstream send): in ``tx`` and in
        ``originated``."""
        self._count(key, TX_PACKETS, num_bytes, now)
        flow = self._flows[key]
        if flow.originated is None:
            flow.originated = [0] * len(ORIGINATED)
        flow.originated[0] += 1
        flow.originated[1] += num_bytes

    def withheld(self, key: FlowKey, what: str) -> None:
        """Count, on a flow carrying a downstream send, a scheduled datagram not sent
        (``over_limits``, ``send_buffer_full``) or a received one not echoed (``not_echoed``)."""
        flow = self._flows.get(key)
        if flow is not None and flow.originated is not None:
            flow.originated[ORIGINATED.index(what)] += 1

    def sent(self, key: FlowKey, num_bytes: int, now: float) -> None:
        self._count(key, TX_PACKETS, num_bytes, now)

    def declined(self, key: FlowKey, reason: int) -> None:
        """Count a datagram of ``key`` that was received (:meth:`received` first) and not answered,
        for ``reason`` (:data:`OVER_LIMITS`, :data:`SEND_BUFFER_FULL`, :data:`SOURCE_PORT`,
        :data:`OWN_REPLY`). A flow not in the table (never received, or evicted) is not made for
        it."""
        flow = self._flows.get(key)
        if flow is not None:
            flow.declined[reason] += 1

    def _count(self, key: FlowKey, which: int, num_bytes: int, now: float) -> None:
        flow = self._flows.get(key)
        if flow is None or now - flow.last > self.expire:
            if flow is not None:
                self._drop(key)
            self.expire_idle(now)
            flow = Flow(origin=now, last=now)
            self._flows[key] = flow
            while len(self._flows) > self.max_flows:
                self._evict_oldest()
        else:
            self._flows.move_to_end(key)
        if flow.add(now, which, num_bytes):
            self._intervals += 1
            # Trim in steps of a quarter, so deleting from the arrays' front stays cheap.
            if len(flow.index) > self.max_intervals:
                self._intervals -= flow.trim(self.max_intervals - self.max_intervals // 4)
            while self._intervals > self.max_total_intervals and len(self._flows) > 1:
                self._evict_oldest()

    def _drop(self, key: FlowKey) -> None:
        flow = self._flows.pop(key)
        self._intervals -= len(flow.index)

    def _evict_oldest(self) -> None:
        key = next(iter(self._flows))
        self._drop(key)
        self.evicted += 1

    def expire_idle(self, now: float) -> int:
        """Forget flows idle for ``expire`` seconds (the oldest are first); returns how many."""
        gone = 0
        while self._flows:
            key, flow = next(iter(self._flows.items()))
            if now - flow.last <= self.expire:
                break
            self._drop(key)
            gone += 1
        return gone

    def view(self, key: FlowKey, now: float, wall_now: float) -> FlowView | None:
        """The flow as the control API returns it, or None when there is no such (live) flow.

        ``t`` of an interval is its start in seconds since ``first_seen``; ``first_seen`` and
        ``last_seen`` are Unix times (``wall_now`` is the Unix time at monotonic ``now``);
        ``declined`` counts, like ``totals``, everything since ``first_seen``.
        """
        flow = self._flows.get(key)
        if flow is None or now - flow.last > self.expire:
            return None
        counts = flow.counts
        intervals = [
            FlowInterval(
                t=round(number * INTERVAL, 3),
                rx_packets=counts[4 * i + RX_PACKETS],
                rx_bytes=counts[4 * i + RX_BYTES],
                tx_packets=counts[4 * i + TX_PACKETS],
                tx_bytes=counts[4 * i + TX_BYTES],
            )
            for i, number in enumerate(flow.index)
        ]
        totals = flow.totals
        view = FlowView(
            interval=INTERVAL,
            first_seen=round(wall_now - (now - flow.origin), 6),
            last_seen=round(wall_now - (now - flow.last), 6),
            intervals=intervals,
            totals={
                "rx_packets": totals[RX_PACKETS],
                "rx_bytes": totals[RX_BYTES],
                "tx_packets": totals[TX_PACKETS],
                "tx_bytes": totals[TX_BYTES],
            },
            declined=dict(zip(DECLINED, flow.declined, strict=True)),
            truncated=flow.trimmed > 0,
        )
        if flow.originated is not None:
            view["originated"] = dict(zip(ORIGINATED, flow.originated, strict=True))
        view["stalls"] = stalls.during(self.lag.stalls, flow.origin, flow.last)
        return view

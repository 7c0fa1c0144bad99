"""Abuse limits: per-client byte budgets, packet rates and control-call rates, as token buckets.

The helper answers anyone on the Internet, so what it sends must be bounded per client and in
total — otherwise a forged source address makes it a reflector, and a real client a free traffic
source. Every limit here is a token bucket with ``now`` passed in (no clock, no sockets):

- **bytes** (default 50 MB per minute per client IP): every byte the helper echoes over UDP or
  TCP, STUN answers included, takes tokens; the bucket holds one minute's worth and refills
  continuously, so a client may burst a minute's budget and then gets the steady rate;
- **packets** (default 2000 per second per client IP): every UDP datagram the helper answers; the
  bucket holds one second's worth;
- **global bytes** (default 20 × the per-client budget): the helper's total echo traffic, whatever
  the source addresses — a flood with forged sources spread over many addresses stops here;
- **calls** (per client and kind of control request, e.g. 10 ``/v1/measure`` per minute).

What is over a limit is dropped silently (no error datagram: that would be traffic too) and
counted in :class:`Counters`. Client state is kept for at most ``max_clients`` addresses, least
recently seen evicted first; an evicted client starts again with a full bucket, which is the same
as a client the helper has not seen for a while.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_BUDGET_BYTES = 50_000_000
"""Bytes per minute per client."""
DEFAULT_RATE_PPS = 2000
DEFAULT_MAX_CLIENTS = 65536


@dataclass
class Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def refill(self, now: float) -> float:
        """Add the tokens earned up to ``now``; returns the tokens there are."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are enough (after refilling up to ``now``)."""
        if amount > self.refill(now):
            return False
        self.tokens -= amount
        return True


@dataclass
class Counters:
    """What the limits refused, for ``/v1/health`` and the periodic log line."""

    over_bytes: int = 0
    over_packets: int = 0
    over_global: int = 0
    over_calls: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "over_client_bytes": self.over_bytes,
            "over_client_packets": self.over_packets,
            "over_global_bytes": self.over_global,
            "over_call_rate": self.over_calls,
        }


@dataclass
class _Client:
    bytes: Bucket
    packets: Bucket
    dropping: bool = False
    """Over a limit since the last allowed send (so a drop is logged once, not per packet)."""


@dataclass
class Limits:
    """Per-client and global send budgets (see the module's notes)."""

    budget_bytes: int = DEFAULT_BUDGET_BYTES
    rate_pps: int = DEFAULT_RATE_PPS
    global_budget_bytes: int | None = None
    """Bytes per minute for all clients together; None: 20 × ``budget_bytes``."""
    max_clients: int = DEFAULT_MAX_CLIENTS
    counters: Counters = field(default_factory=Counters)
    _clients: OrderedDict[str, _Client] = field(default_factory=OrderedDict)
    _global: Bucket | None = None

    def __post_init__(self) -> None:
        total = self.global_budget_bytes or 20 * self.budget_bytes
        self._global = Bucket(float(total), total / 60.0)

    def _client(self, client: str, now: float) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = _Client(
                Bucket(float(self.budget_bytes), self.budget_bytes / 60.0, stamp=now),
                Bucket(float(self.rate_pps), float(self.rate_pps), stamp=now),
            )
            self._clients[client] = state
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        return state

    def allow_send(self, client: str, num_bytes: int, now: float, packet: bool = True) -> bool:
        """Whether the helper may send ``num_bytes`` (one datagram when ``packet``) to ``client``.

        Tokens are taken only when every bucket has enough: a refused send costs nothing.
        """
        state = self._client(client, now)
        assert self._global is not None
        packets, budget, total = state.packets, state.bytes, self._global
        if packet and packets.refill(now) < 1:
            self.counters.over_packets += 1
        elif budget.refill(now) < num_bytes:
            self.counters.over_bytes += 1
        elif total.refill(now) < num_bytes:
            self.counters.over_global += 1
        else:
            if packet:
                packets.tokens -= 1
            budget.tokens -= num_bytes
            total.tokens -= num_bytes
            state.dropping = False
            return True
        return False

    def available(self, client: str, now: float) -> float:
        """The bytes ``client`` may be sent now: the smaller of its own budget and the global one
        (nothing is taken)."""
        state = self._client(client, now)
        assert self._global is not None
        return min(state.bytes.refill(now), self._global.refill(now))

    def newly_dropping(self, client: str) -> bool:
        """True the first time it is asked after ``client`` went over a limit (for logging once)."""
        state = self._clients.get(client)
        if state is None or state.dropping:
            return False
        state.dropping = True
        return True

    @property
    def clients(self) -> int:
        return len(self._clients)


@dataclass
class CallLimits:
    """Control-API calls per client and kind: ``per_minute[kind]`` calls a minute, bursting to it."""

    per_minute: dict[str, int]
    max_clients: int = DEFAULT_MAX_CLIENTS
    counters: Counters = field(default_factory=Counters)
    _buckets: OrderedDict[tuple[str, str], Bucket] = field(default_factory=OrderedDict)

    def allow(self, client: str, kind: str, now: float) -> bool:
        limit = self.per_minute.get(kind)
        if limit is None:
            return True
        key = (client, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(float(limit), limit / 60.0, stamp=now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(1, now):
            return True
        self.counters.over_calls += 1
        return False

    def retry_after(self, kind: str) -> int:
        """Seconds until one more call of ``kind`` is allowed, at most (for ``Retry-After``)."""
        limit = self.per_minute.get(kind) or 60
        return max(1, -(-60 // limit))

"""A token bucket per client, in memory only, in a bounded map.

Each client (a probe token's id, else the client's address) has a bucket of ``2 × rate`` tokens
that refills at ``rate`` tokens per second; a submission takes one. An empty bucket answers with the
seconds until the next token (the ``Retry-After`` of the 429).

Addresses are never written anywhere: the map lives in memory, holds at most ``max_clients``
buckets, and forgets the least recently seen client first (a forgotten client starts again with a
full bucket, which errs on the side of letting a probe through). The clock is passed in, so tests
need no sleeping.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, max_clients: int = 100_000) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = 2.0 * rate
        self.max_clients = max(1, max_clients)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, updated

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds to wait before one is available."""
        buckets = self._buckets
        state = buckets.get(client)
        if state is None:
            tokens = self.burst
            if len(buckets) >= self.max_clients:
                buckets.popitem(last=False)
        else:
            held, updated = state
            tokens = min(self.burst, held + max(0.0, now - updated) * self.rate)
            buckets.move_to_end(client)
        if tokens >= 1.0:
            buckets[client] = (tokens - 1.0, now)
            return 0.0
        buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))

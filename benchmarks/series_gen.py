"""Synthetic hourly series with injected blocking events of known truth, for event_detection.py.

Each series (a network × a service-function) has its own background failure rate (1–15 %), its own
measurement rate (mean 1–8 per bucket, Poisson), scattered empty buckets (5 %) and now and then a
multi-day outage of the probe (no measurements). Some series carry events: a start, an end (6 hours
to 14 days), a blocking share (30–100 %: the share of measurements the censor breaks; the others
still fail at the background rate) and a pattern: continuous, or episodic (blocked 2–8 buckets,
working 2–8 buckets, alternating). Everything is drawn from one seeded ``random.Random``.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrueEvent:
    """One injected event (bucket numbers relative to the series start; end exclusive)."""

    start: int
    end: int
    share: float
    pattern: str  # continuous | episodic


@dataclass
class SynthSeries:
    """One series: counts per bucket and its truth."""

    background: float
    totals: list[int]
    failing: list[int]
    events: list[TrueEvent] = field(default_factory=list)


class _Sampler:
    """Poisson and binomial draws by inverse CDF tables (one random() per draw)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tables: dict[tuple[int, float], list[float]] = {}

    def table(self, n: int, p: float) -> list[float]:
        key = (n, round(p, 4))
        found = self.tables.get(key)
        if found is None:
            cdf, acc = [], 0.0
            for k in range(n + 1):
                acc += math.comb(n, k) * p**k * (1 - p) ** (n - k)
                cdf.append(acc)
            found = self.tables[key] = cdf
        return found

    def poisson_table(self, mean: float) -> list[float]:
        cdf, acc, k = [], 0.0, 0
        while acc < 0.999999 and k < 60:
            acc += math.exp(-mean) * mean**k / math.factorial(k)
            cdf.append(acc)
            k += 1
        return cdf


def generate(rng: random.Random, buckets: int, event_probability: float) -> SynthSeries:
    """One series of ``buckets`` hourly buckets."""
    sampler = _Sampler(rng)
    background = rng.uniform(0.01, 0.15)
    mean = rng.uniform(1.0, 8.0)
    poisson = sampler.poisson_table(mean)
    rand = rng.random
    events: list[TrueEvent] = []
    if rng.random() < event_probability:
        for _ in range(rng.choice((1, 1, 2))):
            pattern = "episodic" if rng.random() < 0.35 else "continuous"
            start = rng.randrange(24 * 7, max(24 * 8, buckets - 24))
            end = min(buckets, start + rng.randint(48 if pattern == "episodic" else 6, 24 * 14))
            if all(end + 48 < e.start or start > e.end + 48 for e in events):
                events.append(TrueEvent(start, end, round(rng.uniform(0.3, 1.0), 3), pattern))
    events.sort(key=lambda e: e.start)
    share = [0.0] * buckets
    for ev in events:
        on, left = True, rng.randint(2, 8)
        for b in range(ev.start, ev.end):
            if ev.pattern == "episodic":
                if left == 0:
                    on, left = not on, rng.randint(2, 8)
                left -= 1
            if on:
                share[b] = ev.share
    outages: set[int] = set()
    for _ in range(rng.choice((0, 0, 1, 2))):
        at = rng.randrange(buckets)
        outages.update(range(at, min(buckets, at + rng.randint(24, 24 * 5))))
    totals, failing = [0] * buckets, [0] * buckets
    for b in range(buckets):
        if b in outages or rand() < 0.05:
            continue
        n = bisect.bisect_left(poisson, rand())
        if n == 0:
            continue
        s = share[b]
        p = background if s == 0.0 else s + (1.0 - s) * background
        totals[b] = n
        failing[b] = min(n, bisect.bisect_left(sampler.table(n, p), rand()))
    return SynthSeries(background, totals, failing, events)

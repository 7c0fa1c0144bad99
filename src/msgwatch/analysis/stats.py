"""Statistics for original-against-control replays, in pure Python (no numpy, no scipy).

What decides "this path treats call traffic differently" (``docs/method/calls.md``):

1. **Throughput, as Wehe decides it** (research note §1.3). Per-interval throughput samples of the
   original replay and of its bit-inverted control are compared two ways:

   - :func:`area_test`: the signed area between the two throughput quantile functions, integrated
     over the quantile range 0.001–1, divided by min(max original, max control). This is Wehe's
     ``doTests`` (``wehe-py3: src/testHypothesis.py``): ``list2CDF`` puts a point (0, 0) before the
     sorted samples, ``interp1d`` interpolates linearly, ``quad`` integrates control minus
     original. Here the integral is exact (the difference is piecewise linear between the
     quantile knots). Positive: the control got more throughput, the original was held back.
   - :func:`ks_2samp`: the two-sample Kolmogorov–Smirnov test.

   Differentiation when |area| ≥ 0.5 (0.3 when either mean throughput is above 10 Mbit/s) **and**
   KS p < 0.01; the area alone is "inconclusive" (Wehe's deployed clients: ``A_THRESHOLD = 50``,
   ``KS2PVAL_THRESHOLD = 1``, ``Consts.java``/``Replay.java``; the thresholds are "chosen ad-hoc"
   by their own admission).
2. **Loss**, which Wehe does not test and which matters more for constant-rate call media
   (Glasnost's authors: their throughput method does not suit VoIP): :func:`two_proportion_z` on
   lost/sent, significant at p < 0.01 **and** at least 10 percentage points apart, so that a
   statistically clear but harmless 1 % difference over thousands of packets does not count; 10 %
   is also where WebRTC's loss-based congestion control starts cutting the sending rate
   (draft-ietf-rmcat-gcc-02: above 10 % loss the estimate drops, below 2 % it grows).

Two deviations from Wehe, both for calls: samples with zero throughput are **kept** (Wehe's
``adjustedXput`` drops them; for a replay that is cut off after its first packets the zeros are the
finding), and a replay that got nothing through is decided before any statistic (Wehe's port test
does the same: "blocked" with throughput 0).

KS p-values: exact for n1·n2 ≤ :data:`KS_EXACT_CELLS` (the probability that a random lattice path
leaves the band |i/n1 − j/n2| < D, as scipy's ``method="exact"``; computed by summing the mass that
leaves, so small p-values keep their precision), otherwise the asymptotic Kolmogorov distribution
Q(λ) with λ = D·√(n1·n2/(n1+n2)) (scipy's asymptotic branch uses the finite-n distribution
``kstwo`` instead, and differs from this in the third decimal for moderate n). Wehe's samples are 100
buckets per replay: the exact branch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

AREA_THRESHOLD = 0.5
AREA_THRESHOLD_FAST = 0.3
FAST_BPS = 10_000_000.0
AREA_FROM_QUANTILE = 0.001
KS_ALPHA = 0.01
LOSS_ALPHA = 0.01
LOSS_MIN_DIFFERENCE = 0.10
GLASNOST_SPREAD = 0.20
KS_EXACT_CELLS = 250_000
MAX_SAMPLES = 100_000
MAX_BINS = 100_000

Verdict = Literal["same", "differentiated", "inconclusive"]
Which = Literal["original_worse", "control_worse"]


def ks_2samp(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided two-sample Kolmogorov–Smirnov test: (D, p)."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("both samples need at least one value")
    if n1 > MAX_SAMPLES or n2 > MAX_SAMPLES:
        raise ValueError("sample too large")
    d = _ks_statistic(sorted(a), sorted(b))
    if n1 * n2 <= KS_EXACT_CELLS:
        return _ks_exact(n1, n2, d)
    return d, kolmogorov_sf(d * math.sqrt(n1 * n2 / (n1 + n2)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of √n·D_n)."""
    if x <= 0:
        return 1.0
    if x < 1.0:
        # Jacobi's form converges fast for small x: 1 − √(2π)/x · Σ exp(−(2k−1)²π²/(8x²))
        total = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 8))
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * total))
    total = sum((1.0 if k % 2 else -1.0) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * total))


def _ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """max |F_a − F_b| over all sample values; ``a`` and ``b`` sorted."""
    n1, n2 = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n1 and j < n2:
        x = min(a[i], b[j])
        while i < n1 and a[i] == x:
            i += 1
        while j < n2 and b[j] == x:
            j += 1
        d = max(d, abs(i / n1 - j / n2))
    return d


def _ks_exact(n1: int, n2: int, d: float) -> tuple[float, float]:
    g = math.gcd(n1, n2)
    lcm = n1 // g * n2
    h = round(d * lcm)
    d = h / lcm
    if h == 0:
        return d, 1.0
    bound = h * g  # a lattice point (i, j) is outside when |i·n2 − j·n1| ≥ h·g, i.e. ≥ D apart
    row = [0.0] * (n2 + 1)
    row[0] = 1.0
    p_out = 0.0
    for i in range(n1 + 1):
        nxt = [0.0] * (n2 + 1)
        for j in range(n2 + 1):
            mass = row[j]
            if not mass:
                continue
            left1, left2 = n1 - i, n2 - j
            if left1 + left2 == 0:
                continue
            if left1:
                share = mass * left1 / (left1 + left2)
                if abs((i + 1) * n2 - j * n1) >= bound:
                    p_out += share
                else:
                    nxt[j] += share
            if left2:
                share = mass * left2 / (left1 + left2)
                if abs(i * n2 - (j + 1) * n1) >= bound:
                    p_out += share
                else:
                    row[j + 1] += share
        row = nxt
    return d, min(1.0, max(0.0, p_out))


def area_test(original: Sequence[float], control: Sequence[float]) -> float:
    """Wehe's normalised area between the throughput distributions (control minus original).

    Positive when the control had more throughput. Normalised by min(max original, max control);
    when one replay had no throughput at all that minimum is 0 and the larger maximum is used, so a
    silent replay against a steady control gives about ±1.
    """
    if not original or not control:
        raise ValueError("both samples need at least one value")
    if len(original) > MAX_SAMPLES or len(control) > MAX_SAMPLES:
        raise ValueError("sample too large")
    qa, qb = sorted(original), sorted(control)
    knots = sorted(
        {AREA_FROM_QUANTILE, 1.0}
        | {k / len(qa) for k in range(1, len(qa))}
        | {k / len(qb) for k in range(1, len(qb))}
    )
    knots = [q for q in knots if q >= AREA_FROM_QUANTILE]
    area = 0.0
    previous = _quantile(qb, knots[0]) - _quantile(qa, knots[0])
    for left, right in itertools.pairwise(knots):
        current = _quantile(qb, right) - _quantile(qa, right)
        area += (previous + current) / 2 * (right - left)
        previous = current
    scale = min(qa[-1], qb[-1]) or max(qa[-1], qb[-1])
    return area / scale if scale else 0.0


def _quantile(values: Sequence[float], q: float) -> float:
    """Wehe's interpolated inverse CDF: linear through (0, 0), (1/n, x1), …, (1, xn)."""
    position = q * len(values)
    k = min(int(position), len(values) - 1)
    low = values[k - 1] if k else 0.0
    return low + (values[k] - low) * (position - k)


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z test of x1/n1 against x2/n2: (z, two-sided p)."""
    if n1 <= 0 or n2 <= 0 or not 0 <= x1 <= n1 or not 0 <= x2 <= n2:
        raise ValueError("need 0 ≤ x ≤ n and n > 0")
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def loses_more(lost_a: int, sent_a: int, lost_b: int, sent_b: int) -> tuple[bool, float]:
    """Whether ``a`` lost significantly more than ``b``, by the loss rule of
    :func:`compare_replays` (pooled two-proportion z test at p < :data:`LOSS_ALPHA`, and at least
    :data:`LOSS_MIN_DIFFERENCE` apart): (answer, two-sided p). Every comparison of two kinds of
    replay goes through a test like this one, never through two thresholds alone."""
    _, p = two_proportion_z(lost_a, sent_a, lost_b, sent_b)
    return p < LOSS_ALPHA and lost_a / sent_a - lost_b / sent_b >= LOSS_MIN_DIFFERENCE, p


def jitter(arrivals: Sequence[tuple[float, float]]) -> float:
    """RFC 3550 interarrival jitter (§6.4.1, A.8), in seconds.

    ``arrivals``: (sent, received) offsets in seconds, in order of arrival. J += (|D| − J)/16 with
    D the difference of consecutive transit times.
    """
    value = 0.0
    previous: float | None = None
    for sent, received in arrivals:
        transit = received - sent
        if previous is not None:
            value += (abs(transit - previous) - value) / 16
        previous = transit
    return value


def interval_throughput(
    events: Sequence[tuple[float, int]], interval: float, duration: float | None = None
) -> list[float]:
    """Bits per second in consecutive intervals of ``interval`` seconds.

    ``events``: (offset in seconds, bytes). ``duration`` sets the number of intervals (default: up
    to the last event); events outside [0, duration) are ignored, a trailing partial interval counts
    as a whole one.
    """
    if not interval > 0:
        raise ValueError("interval must be positive")
    if duration is None:
        duration = max(t for t, _ in events) + interval / 2 if events else 0.0
    if not duration >= 0:
        raise ValueError("duration must not be negative")
    bins = math.ceil(duration / interval)
    if bins > MAX_BINS:
        raise ValueError("too many intervals")
    totals = [0] * bins
    for offset, size in events:
        if 0 <= offset < duration:
            totals[min(int(offset / interval), bins - 1)] += size
    return [8 * total / interval for total in totals]


def glasnost_consistent(values: Sequence[float], limit: float = GLASNOST_SPREAD) -> bool:
    """Glasnost's noise rule: repeated runs agree when (max − median) / max ≤ ``limit``."""
    if not values:
        return False
    top = max(values)
    if top <= 0:
        return True
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return (top - median) / top <= limit


@dataclass(frozen=True)
class ReplayStats:
    """What one replay delivered, as the receiving side counted it."""

    throughput: Sequence[float]
    """Bits per second in each interval (:func:`interval_throughput`), zeros included."""
    sent: int
    """Datagrams sent."""
    received: int
    """Datagrams that arrived (duplicates not counted)."""


@dataclass(frozen=True)
class Decision:
    """The comparison of an original replay with its control."""

    verdict: Verdict
    which: Which | None
    """The side that fared worse, when there is one."""
    reason: str
    """Stable id: ``no_difference``, ``throughput``, ``loss``, ``throughput_and_loss``,
    ``area_only``, ``conflict``, ``original_silent``, ``control_failed``, ``both_silent``."""
    area: float
    area_threshold: float
    ks_d: float
    ks_p: float
    mean_original_bps: float
    mean_control_bps: float
    loss_original: float
    loss_control: float
    loss_z: float
    loss_p: float


def compare_replays(original: ReplayStats, control: ReplayStats) -> Decision:
    """Original against control by the documented rule (module notes, ``docs/method/calls.md``)."""
    if original.sent <= 0 or control.sent <= 0:
        raise ValueError("a replay that sent nothing cannot be compared")
    got_o, got_c = min(original.received, original.sent), min(control.received, control.sent)
    lost_o, lost_c = original.sent - got_o, control.sent - got_c
    loss_o, loss_c = lost_o / original.sent, lost_c / control.sent
    loss_z, loss_p = two_proportion_z(lost_o, original.sent, lost_c, control.sent)
    mean_o, mean_c = _mean(original.throughput), _mean(control.throughput)
    threshold = AREA_THRESHOLD_FAST if max(mean_o, mean_c) > FAST_BPS else AREA_THRESHOLD
    area, ks_d, ks_p = 0.0, 0.0, 1.0
    if original.throughput and control.throughput:
        area = area_test(original.throughput, control.throughput)
        ks_d, ks_p = ks_2samp(original.throughput, control.throughput)

    def decide(verdict: Verdict, which: Which | None, reason: str) -> Decision:
        return Decision(verdict, which, reason, area, threshold, ks_d, ks_p, mean_o, mean_c,
                        loss_o, loss_c, loss_z, loss_p)  # fmt: skip

    if got_o == 0 and got_c == 0:
        return decide("inconclusive", None, "both_silent")
    if got_c == 0:
        return decide("inconclusive", None, "control_failed")
    if got_o == 0:
        return decide("differentiated", "original_worse", "original_silent")

    above, below = abs(area) >= threshold, ks_p < KS_ALPHA
    area_which: Which = "original_worse" if area > 0 else "control_worse"
    loss_which: Which = "original_worse" if loss_o > loss_c else "control_worse"
    loss_differs = loss_p < LOSS_ALPHA and abs(loss_o - loss_c) >= LOSS_MIN_DIFFERENCE
    if loss_differs and above and area_which != loss_which:
        return decide("inconclusive", None, "conflict")
    if loss_differs and above and below:
        return decide("differentiated", loss_which, "throughput_and_loss")
    if loss_differs:
        return decide("differentiated", loss_which, "loss")
    if above and below:
        return decide("differentiated", area_which, "throughput")
    if above:
        return decide("inconclusive", area_which, "area_only")
    return decide("same", None, "no_difference")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0

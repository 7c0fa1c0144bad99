"""A reference for event_detection.py: Page's CUSUM told what the real detector must guess.

For each blocking-share band, :class:`Reference` runs Page's CUSUM on the bucket counts of every
series with the series' **true** background failure rate ``p0`` and the band's lowest share ``s``
(the blocked rate ``p1 = s + (1 − s) · p0``, the generator's rule): the log-likelihood ratio of a
bucket with ``k`` failing of ``n`` is ``k · ln(p1/p0) + (n − k) · ln((1 − p1)/(1 − p0))``, and the
sum ``S = max(0, S + LLR)`` alarms above a threshold ``h``. The reference also **chooses its
threshold after the run**: ``h`` for ``k`` false alerts is the ``(k+1)``-th largest peak of ``S``
over the quiet stretches of all series (each stretch between the match windows
``[start − BEFORE, end + AFTER)`` of the true events, ``S`` from 0 at its start).

For one known change, Page's CUSUM has the least worst-case expected delay at a given mean time
between false alarms (Lorden 1971, Moustakides 1986). Here it is a reference, not a bound: the
benchmark scores median delays, with thresholds set by a run's largest quiet peaks, and the
generator's episodic events are not one known change.

What it is told that a real detector is not: each series' background, the band's share, and the
threshold its data need; and a stretch whose sum crosses ``h`` twice counts as one false alert.
What holds it back: one sum per band, tuned to the band's lowest share and a constant blocked
rate (episodic events alternate); its sum starts from 0 at each event's start (a real detector's
may have risen already, and the benchmark counts an alert already open when an event's match
window begins as a delay of 0). The four bands' references together alarm on at most the sum of
their false alerts: with ``k = 0`` each, the four together raise none.

The delay of an event: the first measured bucket from its true start at which ``S > h``, minus the
start (buckets without measurements are skipped), looking as far as the benchmark's match window
does (``end + AFTER``, or the next event's window, whichever is first); an event whose sum does
not cross ``h`` by then is missed, as the benchmark counts an event no alert matches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.series_gen import SynthSeries

MAX_COUNT = 200
"""Bucket counts the likelihood tables hold (the generator's Poisson means stay below 8)."""


def llr_table(p0: float, share: float, most: int) -> list[list[float]]:
    """``table[n][k]``: the log-likelihood ratio of ``k`` failing of ``n`` measurements, blocked at
    ``share`` (of the working rest) against the background ``p0`` (0 < p0 < 1)."""
    p1 = share + (1.0 - share) * p0
    fail, work = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))
    return [[k * fail + (n - k) * work for k in range(n + 1)] for n in range(most + 1)]


def cusum_peak(steps: Sequence[float]) -> float:
    """The largest value of Page's sum ``S = max(0, S + x)`` over ``steps`` (``S`` from 0).

    With ``C`` the running total, ``S_t = C_t − min(0, min_{j ≤ t} C_j)``, so the peak is found
    with two running folds instead of a loop in Python."""
    if not steps:
        return 0.0
    totals = list(itertools.accumulate(steps))
    lows = itertools.accumulate(totals, min)
    return max(0.0, max(c - min(0.0, low) for c, low in zip(totals, lows, strict=True)))


def first_crossing(steps: Sequence[tuple[int, float]], threshold: float) -> int | None:
    """The bucket of the first ``(bucket, x)`` at which Page's sum (from 0) exceeds ``threshold``."""
    total = 0.0
    for bucket, x in steps:
        total = max(0.0, total + x)
        if total > threshold:
            return bucket
    return None


@dataclass(frozen=True)
class BandFloor:
    """The reference of one band at one number of false alerts."""

    threshold: float
    delays: list[int]  # of the detected events, sorted
    missed: int


@dataclass
class Reference:
    """Page's CUSUM knowing the truth, one per band (see the module's notes)."""

    bands: Sequence[tuple[float, float]]
    before: int
    after: int
    peaks: list[list[float]] = field(init=False)  # per band: each quiet stretch's peak
    paths: list[list[tuple[int, list[tuple[int, float]]]]] = field(init=False)
    """Per band: each true event's start and its measured buckets' (bucket, LLR)."""

    def __post_init__(self) -> None:
        self.peaks = [[] for _ in self.bands]
        self.paths = [[] for _ in self.bands]

    def band_of(self, share: float) -> int:
        return next(i for i, (lo, hi) in enumerate(self.bands) if lo <= share < hi)

    def add(self, series: SynthSeries) -> None:
        """Take one series: its quiet stretches' peaks and its events' paths, for every band."""
        totals, failing, length = series.totals, series.failing, len(series.totals)
        most = min(MAX_COUNT, max(totals, default=0))
        quiet: list[tuple[int, int]] = []
        at = 0
        for event in series.events:  # sorted by start, never overlapping
            low, high = max(0, event.start - self.before), min(length, event.end + self.after)
            if low > at:
                quiet.append((at, low))
            at = max(at, high)
        if at < length:
            quiet.append((at, length))
        tables = [llr_table(series.background, low, most) for low, _ in self.bands]
        for band, table in enumerate(tables):
            for start, end in quiet:
                steps = [table[n][k] for n, k in zip(totals[start:end], failing[start:end],
                                                      strict=True) if 0 < n <= most]  # fmt: skip
                self.peaks[band].append(cusum_peak(steps))
        for number, event in enumerate(series.events):
            band = self.band_of(event.share)
            table = tables[band]
            stop = min(length, event.end + self.after)
            if number + 1 < len(series.events):  # up to where the next event's window begins
                stop = min(stop, max(event.end, series.events[number + 1].start - self.before))
            path = [(b, table[totals[b]][failing[b]]) for b in range(event.start, stop)
                    if 0 < totals[b] <= most]  # fmt: skip
            self.paths[band].append((event.start, path))

    def threshold(self, band: int, alerts: int) -> float:
        """The least threshold that at most ``alerts`` quiet stretches of ``band`` exceed."""
        peaks = sorted(self.peaks[band], reverse=True)
        return peaks[alerts] if alerts < len(peaks) else 0.0

    def floor(self, band: int, alerts: int) -> BandFloor:
        """The band's delays with the threshold of ``alerts`` false alerts."""
        threshold = self.threshold(band, alerts)
        delays, missed = [], 0
        for start, path in self.paths[band]:
            crossed = first_crossing(path, threshold)
            if crossed is None:
                missed += 1
            else:
                delays.append(crossed - start)
        return BandFloor(threshold, sorted(delays), missed)

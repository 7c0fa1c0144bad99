"""``benchmarks/cusum_reference.py``: the detection benchmark's reference, Page's CUSUM knowing the
truth, computes what its notes say."""

from __future__ import annotations

import math
import random

import pytest
from benchmarks.cusum_reference import Reference, cusum_peak, first_crossing, llr_table
from benchmarks.event_detection import AFTER, BANDS, BEFORE
from benchmarks.series_gen import SynthSeries, TrueEvent, generate


def _peak_by_loop(steps: list[float]) -> float:
    total = peak = 0.0
    for x in steps:
        total = max(0.0, total + x)
        peak = max(peak, total)
    return peak


@pytest.mark.parametrize("seed", range(20))
def test_peak_is_that_of_the_sum_step_by_step(seed: int) -> None:
    rng = random.Random(seed)
    steps = [rng.uniform(-2.0, 1.5) for _ in range(rng.randrange(0, 300))]
    assert cusum_peak(steps) == pytest.approx(_peak_by_loop(steps), abs=1e-9)


def test_likelihood_ratio_of_a_bucket() -> None:
    table = llr_table(0.1, 0.5, 3)
    p1 = 0.5 + 0.5 * 0.1
    assert table[3][2] == pytest.approx(2 * math.log(p1 / 0.1) + math.log((1 - p1) / 0.9))
    assert table[0] == [0.0]
    assert table[1][0] < 0 < table[1][1]  # a working measurement speaks for the background


def test_first_crossing_is_the_bucket_the_sum_exceeds_the_threshold() -> None:
    steps = [(10, 2.0), (11, -5.0), (12, 3.0), (13, 3.0)]  # sums 2, 0, 3, 6
    assert first_crossing(steps, 5.0) == 13
    assert first_crossing(steps, 1.5) == 10
    assert first_crossing(steps, 6.0) is None  # exceed, not reach


def _series(background: float, totals: list[int], failing: list[int],
            events: list[TrueEvent]) -> SynthSeries:  # fmt: skip
    return SynthSeries(background, totals, failing, events)


def test_quiet_stretches_leave_out_the_match_windows() -> None:
    """The event's window [start − BEFORE, end + AFTER) is not quiet: its failures raise no peak;
    a burst outside it does, and the event's path starts at its true start."""
    length = 400
    totals, failing = [4] * length, [0] * length
    event = TrueEvent(start=200, end=220, share=0.95, pattern="continuous")
    for b in range(event.start - BEFORE, event.end + AFTER):
        failing[b] = 4  # all failing, beyond the event on both sides: still inside its window
    reference = Reference(BANDS, BEFORE, AFTER)
    reference.add(_series(0.05, totals, failing, [event]))
    assert all(len(peaks) == 2 for peaks in reference.peaks)  # before and after the window
    assert max(max(peaks) for peaks in reference.peaks) == 0.0
    band = reference.band_of(0.95)
    assert [start for start, _ in reference.paths[band]] == [200]
    assert reference.floor(band, 0).delays == [0]  # 4 of 4 failing on a 5 % background

    failing[50:53] = [4, 4, 4]  # a quiet burst: now the threshold for no false alert is above it
    burst = Reference(BANDS, BEFORE, AFTER)
    burst.add(_series(0.05, totals, failing, [event]))
    table = llr_table(0.05, BANDS[band][0], 4)
    assert burst.threshold(band, 0) == pytest.approx(3 * table[4][4])
    assert burst.threshold(band, 1) == 0.0  # the other stretch never rises
    assert burst.floor(band, 0).delays == [3]  # the fourth bucket exceeds three buckets' sum


@pytest.mark.parametrize("at", [200 - BEFORE - 1, 220 + AFTER])
def test_a_burst_just_outside_the_window_is_quiet(at: int) -> None:
    """One bucket before the window, or the first after it, belongs to a quiet stretch."""
    totals, failing = [4] * 400, [0] * 400
    failing[at] = 4
    reference = Reference(BANDS, BEFORE, AFTER)
    reference.add(_series(0.05, totals, failing, [TrueEvent(200, 220, 0.95, "continuous")]))
    band = reference.band_of(0.95)
    assert reference.threshold(band, 0) == pytest.approx(llr_table(0.05, BANDS[band][0], 4)[4][4])


def test_an_event_is_followed_as_far_as_its_match_window() -> None:
    """The path runs to ``end + AFTER``, or to where the next event's window begins."""
    totals, failing = [2] * 600, [0] * 600
    first, second = TrueEvent(100, 110, 0.95, "continuous"), TrueEvent(140, 150, 0.95, "episodic")
    reference = Reference(BANDS, BEFORE, AFTER)
    reference.add(_series(0.05, totals, failing, [first, second]))
    (start1, path1), (start2, path2) = reference.paths[reference.band_of(0.95)]
    assert (start1, path1[0][0], path1[-1][0]) == (100, 100, 140 - BEFORE - 1)
    assert (start2, path2[0][0], path2[-1][0]) == (140, 140, 150 + AFTER - 1)


def test_more_false_alerts_allowed_never_slow_detection() -> None:
    rng = random.Random(7)
    reference = Reference(BANDS, BEFORE, AFTER)
    events = 0
    for _ in range(60):
        series = generate(rng, 24 * 60, 0.6)
        events += len(series.events)
        reference.add(series)
    assert events > 10
    for band in range(len(BANDS)):
        strict, loose = reference.floor(band, 0), reference.floor(band, 5)
        assert loose.threshold <= strict.threshold
        assert loose.missed <= strict.missed
        assert len(loose.delays) + loose.missed == len(strict.delays) + strict.missed
        detected = len(strict.delays)
        assert sum(loose.delays[:detected]) <= sum(strict.delays)
    assert sum(len(p) for p in reference.paths) == events

"""Statistics without scipy, checked against exact enumeration and values scipy gives.

scipy is not installed here. Where a value is "what scipy gives", it is one that follows from the
definition scipy implements and can be derived by hand: for two samples that do not overlap, the
exact two-sided KS p-value is 2 / C(m+n, m) (only the two extreme orderings reach D = 1), which is
``scipy.stats.ks_2samp([1, 2, 3], [4, 5, 6]).pvalue == 0.1``; everything else is checked against a
brute-force enumeration of all orderings with exact fractions (the quantity scipy's
``method="exact"`` computes) or against the Kolmogorov distribution's tabulated critical values.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgwatch.analysis import stats as S
from msgwatch.analysis.stats import ReplayStats


def _brute_force_p(a: list[float], b: list[float]) -> tuple[Fraction, Fraction]:
    """(D, P(D' ≥ D)) over all C(m+n, m) equally likely orderings of distinct values."""
    m, n = len(a), len(b)

    def statistic(first: set[int]) -> Fraction:
        i = j = 0
        d = Fraction(0)
        for position in range(m + n):
            if position in first:
                i += 1
            else:
                j += 1
            d = max(d, abs(Fraction(i, m) - Fraction(j, n)))
        return d

    merged = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    observed = statistic({k for k, (_, side) in enumerate(merged) if side == 0})
    orderings = list(itertools.combinations(range(m + n), m))
    extreme = sum(statistic(set(c)) >= observed for c in orderings)
    return observed, Fraction(extreme, len(orderings))


# -- Kolmogorov–Smirnov ------------------------------------------------------------------------


def test_ks_identical_samples() -> None:
    assert S.ks_2samp([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == (0.0, 1.0)
    assert S.ks_2samp([7.0] * 20, [7.0] * 30) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("m", "n", "expected"),
    [(3, 3, 0.1), (5, 5, 0.007936507936507936), (6, 3, 2 / 84), (10, 10, 2 / 184756)],
)
def test_ks_disjoint_samples(m: int, n: int, expected: float) -> None:
    d, p = S.ks_2samp(list(range(m)), [100 + k for k in range(n)])
    assert d == 1.0
    assert p == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("m", "n", "seed"), [(4, 4, 1), (5, 3, 2), (6, 7, 3), (8, 5, 4), (7, 7, 5)]
)
def test_ks_exact_matches_enumeration(m: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.random() for _ in range(m)]
    b = [rng.random() + 0.2 for _ in range(n)]
    d, p = S.ks_2samp(a, b)
    expected_d, expected_p = _brute_force_p(a, b)
    assert d == pytest.approx(float(expected_d), abs=1e-12)
    assert p == pytest.approx(float(expected_p), rel=1e-9)


def test_ks_small_p_values_keep_precision() -> None:
    d, p = S.ks_2samp(list(range(40)), [100 + k for k in range(40)])
    assert d == 1.0
    assert p == pytest.approx(2 / math.comb(80, 40), rel=1e-9)  # about 2e-23, no cancellation


@pytest.mark.parametrize(
    ("x", "sf"), [(1.0727, 0.20), (1.2238, 0.10), (1.3581, 0.05), (1.6276, 0.01), (1.9495, 0.001)]
)
def test_kolmogorov_critical_values(x: float, sf: float) -> None:
    assert S.kolmogorov_sf(x) == pytest.approx(sf, rel=5e-3)


def test_kolmogorov_distribution() -> None:
    assert S.kolmogorov_sf(1.0) == pytest.approx(0.26999967167735456, rel=1e-12)
    assert S.kolmogorov_sf(0) == 1.0 and S.kolmogorov_sf(5.0) < 1e-20
    assert abs(S.kolmogorov_sf(0.999999) - S.kolmogorov_sf(1.000001)) < 1e-5  # the two forms meet
    values = [S.kolmogorov_sf(x / 10) for x in range(1, 40)]
    assert values == sorted(values, reverse=True)


def test_ks_large_samples_use_the_asymptotic_distribution() -> None:
    rng = random.Random(6)
    a = [rng.gauss(0, 1) for _ in range(600)]
    b = [rng.gauss(0.25, 1) for _ in range(600)]
    d, p = S.ks_2samp(a, b)
    assert p == S.kolmogorov_sf(d * math.sqrt(300))
    assert p < 0.01
    exact_d, exact_p = S.ks_2samp(a[:400], b[:500])  # 200,000 cells: still exact
    assert exact_p == pytest.approx(S.kolmogorov_sf(exact_d * math.sqrt(400 * 500 / 900)), abs=0.02)


def test_ks_refuses_empty() -> None:
    with pytest.raises(ValueError):
        S.ks_2samp([], [1.0])


# -- area test -----------------------------------------------------------------------------------


def test_area_sign_and_value() -> None:
    # Original at 1, control at 2, ten samples each: the quantile functions rise from 0 over the
    # first tenth, then differ by 1; ∫0.001..0.1 of 10q dq + 0.9 = 0.049995 + 0.9, divided by 1.
    assert S.area_test([1.0] * 10, [2.0] * 10) == pytest.approx(0.949995, rel=1e-12)
    assert S.area_test([2.0] * 10, [1.0] * 10) == pytest.approx(-0.949995, rel=1e-12)
    assert S.area_test([3.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


def test_area_throttled_original_is_large_and_positive() -> None:
    rng = random.Random(7)
    original = [rng.uniform(90e3, 110e3) for _ in range(100)]
    control = [rng.uniform(0.9e6, 1.1e6) for _ in range(100)]
    area = S.area_test(original, control)
    assert area > 5  # normalised by the smaller maximum: the throttled side's
    assert S.area_test(control, original) == pytest.approx(-area)


def test_area_within_one_for_similar_scales() -> None:
    rng = random.Random(8)
    for _ in range(50):
        a = [rng.uniform(0.5, 1.0) for _ in range(30)]
        b = [rng.uniform(0.5, 1.0) for _ in range(40)]
        assert -1.0 <= S.area_test(a, b) <= 1.0


def test_area_with_a_silent_replay() -> None:
    # (∫0.001..0.05 of 100q dq + 5·0.95) / 5 = (0.12495 + 4.75) / 5
    assert S.area_test([0.0] * 20, [5.0] * 20) == pytest.approx(0.97499, rel=1e-12)
    assert S.area_test([0.0] * 5, [0.0] * 5) == 0.0


@given(
    st.lists(st.floats(0, 1e9), min_size=1, max_size=40),
    st.lists(st.floats(0, 1e9), min_size=1, max_size=40),
)
def test_area_is_antisymmetric_and_ks_in_range(a: list[float], b: list[float]) -> None:
    assert S.area_test(a, b) == pytest.approx(-S.area_test(b, a), rel=1e-9, abs=1e-9)
    d, p = S.ks_2samp(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= p <= 1.0


# -- proportions, jitter, throughput ------------------------------------------------------------


def test_two_proportion_z() -> None:
    # p = 0.375, se = √(0.375·0.625·0.02) = 0.0684653, z = 0.15 / se
    z, p = S.two_proportion_z(45, 100, 30, 100)
    assert z == pytest.approx(2.1908902300206643, rel=1e-12)
    assert p == pytest.approx(0.028459736916310575, rel=1e-9)
    assert S.two_proportion_z(30, 100, 45, 100)[0] == pytest.approx(-z)
    assert S.two_proportion_z(0, 50, 0, 80) == (0.0, 1.0)
    assert S.two_proportion_z(50, 50, 80, 80) == (0.0, 1.0)
    with pytest.raises(ValueError):
        S.two_proportion_z(5, 4, 0, 1)


def test_jitter_rfc3550() -> None:
    steady = [(k * 0.02, k * 0.02 + 0.05) for k in range(100)]
    assert S.jitter(steady) == pytest.approx(0.0, abs=1e-15)
    alternating = [(k * 0.02, k * 0.02 + (0.01 if k % 2 else 0.0)) for k in range(100)]
    assert S.jitter(alternating) == pytest.approx(0.01 * (1 - (15 / 16) ** 99), rel=1e-9)
    assert S.jitter([]) == 0.0 and S.jitter([(0.0, 1.0)]) == 0.0


def test_interval_throughput() -> None:
    events = [(0.0, 100), (0.4, 100), (1.2, 50)]
    assert S.interval_throughput(events, 0.5) == [3200.0, 0.0, 800.0]
    assert S.interval_throughput(events, 0.5, duration=2.0) == [3200.0, 0.0, 800.0, 0.0]
    assert S.interval_throughput(events, 1.0, duration=1.0) == [1600.0]  # 1.2 is outside
    assert S.interval_throughput([], 1.0) == []
    with pytest.raises(ValueError):
        S.interval_throughput(events, 0.0)
    with pytest.raises(ValueError):
        S.interval_throughput(events, 1e-9, duration=1.0)


def test_glasnost_consistent() -> None:
    assert S.glasnost_consistent([1.0, 0.95, 0.9])
    assert not S.glasnost_consistent([1.0, 0.5, 0.6])
    assert S.glasnost_consistent([0.0, 0.0]) and not S.glasnost_consistent([])


# -- the replay comparison rule ----------------------------------------------------------------


def _replay(
    mean: float, spread: float, seed: int, sent: int = 1500, received: int = 1500
) -> ReplayStats:
    rng = random.Random(seed)
    return ReplayStats([rng.uniform(mean * (1 - spread), mean * (1 + spread)) for _ in range(60)], sent, received)  # fmt: skip


def test_same_traffic_is_same() -> None:
    decision = S.compare_replays(_replay(64e3, 0.1, 1), _replay(64e3, 0.1, 2))
    assert (decision.verdict, decision.which, decision.reason) == ("same", None, "no_difference")
    assert decision.area_threshold == 0.5
    assert decision.ks_p > 0.01


def test_throttled_original() -> None:
    decision = S.compare_replays(_replay(8e3, 0.1, 3), _replay(64e3, 0.1, 4))
    assert (decision.verdict, decision.which, decision.reason) == (
        "differentiated", "original_worse", "throughput"
    )  # fmt: skip
    assert decision.area > 0.5 and decision.ks_p < 0.01
    assert decision.mean_original_bps < decision.mean_control_bps


def test_control_worse() -> None:
    decision = S.compare_replays(_replay(64e3, 0.1, 5), _replay(8e3, 0.1, 6))
    assert (decision.verdict, decision.which) == ("differentiated", "control_worse")


def test_area_without_significance_is_inconclusive() -> None:
    original = ReplayStats([8e3, 9e3, 10e3], 150, 150)
    control = ReplayStats([60e3, 64e3, 70e3], 150, 150)
    decision = S.compare_replays(original, control)
    assert decision.ks_p == pytest.approx(0.1)  # three samples each cannot go below 0.1
    assert (decision.verdict, decision.which, decision.reason) == (
        "inconclusive", "original_worse", "area_only"
    )  # fmt: skip


def test_loss_difference() -> None:
    decision = S.compare_replays(
        _replay(64e3, 0.1, 7, 1000, 700), _replay(64e3, 0.1, 7, 1000, 1000)
    )
    assert (decision.verdict, decision.which, decision.reason) == (
        "differentiated", "original_worse", "loss"
    )  # fmt: skip
    assert decision.loss_original == pytest.approx(0.3) and decision.loss_control == 0.0
    assert decision.loss_p < 0.01


def test_small_significant_loss_difference_is_not_enough() -> None:
    original = _replay(64e3, 0.1, 8, 10_000, 9_700)
    control = _replay(64e3, 0.1, 9, 10_000, 9_900)
    decision = S.compare_replays(original, control)
    assert decision.loss_p < 0.01  # significant, but 2 points apart
    assert decision.verdict == "same"


def test_throughput_and_loss_together() -> None:
    decision = S.compare_replays(_replay(8e3, 0.1, 10, 1000, 500), _replay(64e3, 0.1, 11))
    assert (decision.verdict, decision.which, decision.reason) == (
        "differentiated", "original_worse", "throughput_and_loss"
    )  # fmt: skip


def test_conflicting_signals_are_inconclusive() -> None:
    decision = S.compare_replays(_replay(8e3, 0.1, 12), _replay(64e3, 0.1, 13, 1500, 900))
    assert (decision.verdict, decision.which, decision.reason) == ("inconclusive", None, "conflict")


def test_fast_flows_use_the_lower_area_threshold() -> None:
    fast = S.compare_replays(_replay(15e6, 0.02, 14), _replay(20e6, 0.02, 15))
    assert fast.area_threshold == 0.3 and 0.3 <= fast.area < 0.5
    assert fast.verdict == "differentiated"
    slow = S.compare_replays(_replay(15e3, 0.02, 14), _replay(20e3, 0.02, 15))
    assert slow.area_threshold == 0.5 and slow.area == pytest.approx(fast.area)
    assert slow.verdict == "same"


def test_silent_replays() -> None:
    silent = ReplayStats([0.0] * 60, 1500, 0)
    fine = _replay(64e3, 0.1, 16)
    original_silent = S.compare_replays(silent, fine)
    assert (original_silent.verdict, original_silent.which, original_silent.reason) == (
        "differentiated", "original_worse", "original_silent"
    )  # fmt: skip
    control_failed = S.compare_replays(fine, silent)
    assert (control_failed.verdict, control_failed.reason) == ("inconclusive", "control_failed")
    both = S.compare_replays(silent, silent)
    assert (both.verdict, both.reason) == ("inconclusive", "both_silent")


def test_cut_off_after_the_first_packets() -> None:
    """Zeros are kept: a replay that dies after two seconds is not the same as its control."""
    original = ReplayStats([64e3, 64e3] + [0.0] * 58, 1500, 100)
    decision = S.compare_replays(original, _replay(64e3, 0.1, 17))
    assert (decision.verdict, decision.which) == ("differentiated", "original_worse")


def test_compare_refuses_replays_that_sent_nothing() -> None:
    with pytest.raises(ValueError):
        S.compare_replays(ReplayStats([], 0, 0), _replay(1.0, 0.1, 1))


@given(
    st.lists(st.floats(0, 1e8), max_size=30),
    st.lists(st.floats(0, 1e8), max_size=30),
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.floats(0, 1.5),
    st.floats(0, 1.5),
)
def test_compare_never_raises(
    a: list[float], b: list[float], sent_a: int, sent_b: int, got_a: float, got_b: float
) -> None:
    decision = S.compare_replays(
        ReplayStats(a, sent_a, int(sent_a * got_a)), ReplayStats(b, sent_b, int(sent_b * got_b))
    )
    assert decision.verdict in {"same", "differentiated", "inconclusive"}
    assert 0 <= decision.loss_original <= 1 and 0 <= decision.loss_control <= 1

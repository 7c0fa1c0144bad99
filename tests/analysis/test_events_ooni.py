"""OONI's production CUSUM, rewritten as the benchmark's baseline, behaves as ooni/data's does."""

from __future__ import annotations

from msgwatch.analysis.events.ooni_cusum import NEG, NO, POS, OoniCusum, median_blocked


def test_the_median_of_a_bucket_of_zero_one_values() -> None:
    assert (median_blocked(5, 3), median_blocked(4, 2), median_blocked(5, 2)) == (1.0, 0.5, 0.0)


def test_state_is_learned_silently_then_changes_are_emitted_after_h_over_the_step() -> None:
    det = OoniCusum()
    assert det.h == 7.0
    changes = [det.step(float(h), 0.0, 3) for h in range(21)]  # s_neg += 0.35: above 7 at the 21st
    assert changes == [NO] * 21 and det.state == "ok"
    changes = [
        det.step(float(21 + h), 1.0, 3) for h in range(11)
    ]  # s_pos += 0.65: above 7 at the 11th
    assert changes == [NO] * 10 + [POS] and det.state == "blk"
    changes = [det.step(float(32 + h), 0.0, 3) for h in range(21)]  # s_neg += 0.7 - 0.35
    assert NEG in changes[18:] and det.state == "ok"  # 0.35 · 20 = 7.000…01 in floating point


def test_empty_buckets_are_skipped_and_a_long_silence_decays_the_sums() -> None:
    det = OoniCusum(state="ok", last_hours=0.0)
    det.step(1.0, 1.0, 3)
    assert det.step(2.0, 1.0, 0) == NO and det.s_pos == 0.65
    det.step(1.0 + 48.0 + 1.0, 0.35, 3)  # 49 h later: halved (and a neutral value added)
    assert abs(det.s_pos - 0.65 * 0.5 ** (49 / 48)) < 1e-9

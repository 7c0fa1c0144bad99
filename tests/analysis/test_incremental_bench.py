"""``benchmarks/analysis_incremental.py``: the incremental passes it times analyse exactly the
new measurements it appends (new data, never late data), and its growth figure is a slope."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.analysis_incremental import SizeFigures, Timed, growth, measure


def test_each_round_analyses_only_its_new_measurements(tmp_path: Path) -> None:
    figures = measure(tmp_path, 40, 5, 2, networks=4, countries=2, days=1, group=10)
    assert figures.full.measurements == 40
    assert [r.measurements for r in figures.rounds] == [5, 5]
    assert all("events" in r.phases and "aggregates" in r.phases for r in figures.rounds)


def test_growth_is_the_slope_between_the_two_largest_lakes() -> None:
    def size(n: int, seconds: float) -> SizeFigures:
        return SizeFigures(n, Timed(1.0, n), [Timed(seconds, 5)])

    per, at = growth([size(10, 9.0), size(1_000, 1.0), size(101_000, 3.0)]) or (0.0, None)
    assert per == pytest.approx(
        2.0
    )  # 2 s more per 100,000 between 1,000 and 101,000 (the smallest is ignored)
    assert at == pytest.approx(101_000 + 57 / 2 * 100_000)
    assert growth([size(10, 1.0)]) is None

"""``benchmarks/analysis_throughput.py --costs``: every step of the pass is measured on a real
(synthetic) archive, through the pass's own functions, and the figures add up."""

from __future__ import annotations

from pathlib import Path

from benchmarks.analysis_throughput import costs, scaling
from benchmarks.synth_archive import SynthConfig, write


def test_costs_measure_each_step_of_the_pass(tmp_path: Path) -> None:
    write(tmp_path / "data", SynthConfig(count=60, networks=4, countries=2, days=1, group=20))
    work = tmp_path / "work"
    work.mkdir()
    steps = dict(costs(tmp_path / "data", 50, work))
    assert [name.split()[0].rstrip(":,") for name in steps] == [
        "read", "parse", "judge", "observations", "rows", "write", "orjson.loads"
    ]  # fmt: skip
    assert all(ms >= 0 for ms in steps.values()), steps
    assert steps[next(n for n in steps if n.startswith("judge"))] > 0
    assert sorted(work.rglob("*.parquet"))  # the write step wrote its parts


def test_scaling_parses_in_one_child_then_two(tmp_path: Path) -> None:
    write(tmp_path / "data", SynthConfig(count=30, networks=4, countries=2, days=1, group=10))
    alone, both, parsed = scaling(tmp_path / "data", 25)
    assert alone > 0 and both > 0
    assert parsed == 25  # each child, alone and side by side, parsed the first 25 measurements

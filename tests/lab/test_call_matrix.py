"""The call-blocking matrix in the lab: every service with a call function × every way calls get
blocked (ports, relays' prefixes, STUN, DPI of its own call traffic, policing), each cell's verdict
and mechanism asserted (``msgwatch.lab.matrix``: the table and how its cells share lab runs).

A cell the probe cannot see (``gap``: relays handed out per call and never published) must read
exactly as the table says the probe reads it instead — ``ok``, with coverage ``signalling`` (the
table's "call set-up only") — and the test fails the day the probe starts seeing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from msgwatch.lab.matrix import cell_for, matrix_scenarios
from msgwatch.lab.run import run_scenario

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

SCENARIOS = {s.name: s for s in matrix_scenarios()}


@pytest.fixture
def lab_available() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")


def _verdict(run: Any, isp: str, service: str, function: str) -> dict[str, Any]:
    phase = next(r for r in run.runs if r.isp == isp)
    return next(v for v in phase.verdicts
                if v["service"] == service and v["function"] == function)  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_call_matrix(name: str, tmp_path: Path, lab_available: None) -> None:
    scenario = SCENARIOS[name]
    run = run_scenario(scenario, tmp_path)
    assert run.rows, "the probe returned no verdicts"
    problems = []
    for row in run.rows:
        found = cell_for(scenario, row["isp"], row["service"])
        gap = found is not None and found[1].gap and row["function"] in ("voice", "video")
        got = (row["verdict"], row["mechanism"])
        if not gap:
            if not row["match"]:
                problems.append(f"{row['isp']}/{row['service']}/{row['function']}: expected "
                                f"{row['expected']} {row['expected_mechanism']}, got {got}")  # fmt: skip
            continue
        assert found is not None
        mechanism, cell = found
        coverage = _verdict(run, row["isp"], row["service"], row["function"])["coverage"]
        if row["match"]:
            problems.append(
                f"{row['service']}/{mechanism}: the probe now sees it; update the table"
            )
        elif got != cell.seen or coverage != "signalling":
            problems.append(f"{row['isp']}/{row['service']}/{row['function']} ({mechanism}, a "
                            f"gap): expected {cell.seen} call set-up only, got {got} {coverage}")  # fmt: skip
    assert not problems, "\n".join(problems)

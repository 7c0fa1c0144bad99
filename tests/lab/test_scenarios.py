"""Every shipped scenario: the probe's verdicts equal the ground truth, mechanism included.

Each test brings a whole lab up (namespaces, real servers, the censor's rules), runs the real
``msgwatch run`` from both ISPs' probe hosts, and compares. A scenario whose ground truth this
probe version cannot reach yet says why in ``probe_gap``; its test is a strict expected failure.
A run whose only differences from the truth are ``inconclusive`` verdicts is made again, in a
fresh lab, up to three runs: the probe saying it cannot tell is its answer to a machine too busy
to measure, never a wrong verdict, and any other difference fails at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from msgwatch.lab.run import ScenarioRun, run_scenario
from msgwatch.lab.scenario import Scenario, list_scenarios, load_scenario
from tests.format.check import assert_conforms
from tests.lab.quiet import measuring

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

LOG = logging.getLogger(__name__)
ATTEMPTS = 3
"""Runs of a scenario at most, while every verdict that differs from the truth is
``inconclusive``."""
SCENARIOS = [s.name for s in list_scenarios() if s.analysis is None and not s.circumvention]
# time: test_timeline; circumvention: tests/lab/circumvention/test_scenarios.py (one shared lab)


@pytest.fixture
def lab_available() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")


def _mismatches(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['phase']}/{r['isp']}/{r['service']}/{r['function']}: expected {r['expected']} "
        f"{r['expected_mechanism']}, got {r['verdict']} {r['mechanism']}"
        for r in rows
        if not r["match"]
    )


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_matches_ground_truth(
    name: str, tmp_path: Path, lab_available: None, request: pytest.FixtureRequest
) -> None:
    scenario = load_scenario(name)
    if scenario.probe_gap:
        # A scenario whose censor tosses coins (random_drop) can match its ground truth by
        # chance (issue 9: each failed chain is retried once, so an intermittent path reads
        # degraded when the coins differ): its expected failure cannot be strict.
        tossed = any(r.type == "random_drop" for p in scenario.phase for r in p.rule)
        request.applymarker(pytest.mark.xfail(reason=scenario.probe_gap, strict=not tossed))
    for attempt in range(1, ATTEMPTS + 1):
        seen: dict[str, bool] = {}
        check = _domestic_stun(seen) if name == "az-2017" else None
        with measuring():
            run = run_scenario(scenario, tmp_path / f"run{attempt}", after_phase=check)
        assert run.rows, "the probe returned no verdicts"
        wrong = [r for r in run.rows if not r["match"]]
        if scenario.probe_gap or not wrong or any(r["verdict"] != "inconclusive" for r in wrong):
            break
        # The probe could not tell (its own or the helper's stalls on a busy machine): a verdict
        # that survives repetition is what counts, as in tests/lab/test_call_matrix.py.
        LOG.warning("run %d, inconclusive only, made again:\n%s", attempt, _mismatches(wrong))
    assert_conforms([m for r in run.runs for m in r.measurements])
    assert run.matched == len(run.rows), _mismatches(run.rows)
    if scenario.observatory is not None:
        _check_observatory(scenario, run)
    if name == "az-2017":
        _check_domestic_calls_left_alone(run, seen)


def _check_observatory(scenario: Scenario, run: ScenarioRun) -> None:
    """Submission through blocking and a crash: held while blocked, nothing lost or twice."""
    assert run.observatory is not None
    assert run.observatory.exact, run.observatory.summary()
    assert run.observatory.made == run.observatory.collected > 0
    blocked = {p.name for p in scenario.phase if any(r.type == "blackhole" for r in p.rule)}
    assert blocked, "the scenario never blocks the collector"
    assert scenario.observatory is not None
    for phase_run in run.runs:
        assert len(phase_run.submissions) == scenario.observatory.runs
        for submission in phase_run.submissions:
            if phase_run.phase in blocked:
                # The spool holds: nothing acknowledged, everything made so far still pending.
                assert submission["ok"] is False and submission["stored"] == 0, submission
                assert submission["spool"]["pending"] > 0
            else:
                assert submission["ok"] is True, submission
                assert submission["remaining"] == 0
    restarted = [p.name for p in scenario.phase if p.collector == "restart"]
    assert run.observatory.collector_starts == 1 + len(restarted)


def _stun(address: str, port: int = 3478, timeout: float = 1.0) -> bool:
    """One STUN Binding over UDP from the calling thread's namespace: answered or not."""
    import socket

    from aioice import stun

    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(bytes(request), (address, port))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return False
    return stun.parse_message(data).transaction_id == request.transaction_id


def _domestic_stun(seen: dict[str, bool]) -> Any:
    """az-2017's check after each phase: STUN to the domestic and the foreign helper, into
    ``seen``."""

    def check(lab: Any, phase: str) -> None:
        for where in ("domestic", "abroad"):
            seen[f"isp1-{where}"] = lab.run_in("probe1", _stun, lab.helper_address(where))
        seen["isp2-abroad"] = lab.run_in("probe2", _stun, lab.helper_address("abroad"))

    return check


def _check_domestic_calls_left_alone(run: ScenarioRun, seen: dict[str, bool]) -> None:
    """While ISP 1 drops STUN abroad, STUN to the domestic helper still gets through (checked
    in az-2017's own run, not a second one)."""
    assert seen == {"isp1-domestic": True, "isp1-abroad": False, "isp2-abroad": True}
    # The verdicts tell "calls abroad blocked" from "calls blocked": the same call-shaped replay
    # to the domestic helper passed.
    isp1 = next(r for r in run.runs if r.isp == "isp1")
    calls = [
        v for v in isp1.verdicts if v["function"] in ("voice", "video") and v["verdict"] != "ok"
    ]
    assert calls and all(v["scope"] == "abroad" for v in calls), calls

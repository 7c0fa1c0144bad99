"""Every shipped circumvention scenario against its ground truth, in ONE lab.

The lab's private Tor network takes tens of seconds to come up, so this module brings up one
``Lab(circumvention=("tor", "vpn", "proxies"))`` and applies each scenario's rules to it in turn,
the way a timeline's phases change the rules of a running lab; in each phase the real ``msgwatch
run`` (when the scenario asks for the direct path) and ``msgwatch circumvent`` run in the probes'
namespaces, and every verdict is compared with the scenario's ground truth, mechanism included
(:mod:`msgwatch.lab.circumvention_run`).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.lab.run import (
    PhaseRun,
    apply_outages,
    apply_phase,
    circumvention_phase,
    compare,
    probe_all,
    write_geoip,
)
from msgwatch.lab.scenario import Scenario, list_scenarios
from msgwatch.lab.topology import Lab
from msgwatch.measurement.circumvention import TEST_NAME as CIRCUMVENTION
from msgwatch.measurement.validate import validate
from tests.lab.circumvention.conftest import UP

pytestmark = [pytest.mark.netns, pytest.mark.servers, pytest.mark.timeout(900)]

SCENARIOS = [s for s in list_scenarios() if s.circumvention]
ORDER = ("circumvention-baseline",)
"""Scenarios run first (the rest in name order): the baseline shows the lab works at all."""
NEEDED = (
    "msgwatch.lab.circumvention.tor", "msgwatch.lab.circumvention.vpn",
    "msgwatch.lab.circumvention.proxies", "msgwatch.analysis.verdicts.circumvention",
    "msgwatch.cli.circumvent", "msgwatch.circumvention.transports.tor",
    "msgwatch.circumvention.transports.tor_reach", "msgwatch.circumvention.transports.openvpn",
    "msgwatch.circumvention.transports.wireguard",
    "msgwatch.circumvention.transports.shadowsocks", "msgwatch.circumvention.transports.proxy",
)  # fmt: skip
"""Modules every scenario here needs (the lab's groups, the transports, the judge, the CLI)."""
TIMES: dict[str, float] = {}


def _ordered() -> list[Scenario]:
    first = [s for s in SCENARIOS if s.name in ORDER]
    return first + sorted((s for s in SCENARIOS if s.name not in ORDER), key=lambda s: s.name)


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def lab(circumvention_lab: Lab) -> Iterator[Lab]:
    missing = _missing()
    if missing:
        pytest.skip(f"not built yet: {', '.join(missing)}")
    TIMES.update(UP)
    yield circumvention_lab
    print(f"\ncircumvention scenarios, seconds: {TIMES}")  # noqa: T201


def _mismatches(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['phase']}/{r['isp']}/{r['service']}/{r['function']}: expected {r['expected']} "
        f"{r['expected_mechanism']}, got {r['verdict']} {r['mechanism']}"
        for r in rows
        if not r["match"]
    )


def _stages(runs: list[PhaseRun], rows: list[dict[str, Any]]) -> str:
    """What the mismatched entries' measurements say, stage by stage (for the failure message)."""
    wanted = {(r["phase"], r["isp"], r["service"]) for r in rows if not r["match"]}
    lines = []
    for run in runs:
        for m in run.measurements:
            keys = m.get("test_keys") or {}
            name = (keys.get("entry") or {}).get("name")
            if (run.phase, run.isp, name) not in wanted:
                continue
            stages = ", ".join(
                f"{st.get('stage')}{'' if st.get('failure') is None else ':' + str(st['failure'])}"
                for st in keys.get("stages") or []
            )
            through = ", ".join(
                f"{t.get('service')}.{t.get('function')}:{t.get('failure')}"
                for t in keys.get("through") or []
            )
            lines.append(f"  {run.isp} {name}: {stages}; control {keys.get('control')}; "
                         f"through {through}")  # fmt: skip
    return "\n".join(lines)


def _invalid(runs: list[PhaseRun]) -> str:
    """Every circumvention measurement's departures from its spec (what the collector would
    reject), one line each."""
    lines = []
    for run in runs:
        for m in run.measurements:
            if m.get("test_name") != CIRCUMVENTION:
                continue
            name = ((m.get("test_keys") or {}).get("entry") or {}).get("name")
            lines += [f"  {run.phase}/{run.isp}/{name}: {p}" for p in validate(m)[:5]]
    return "\n".join(lines)


def run_on(
    lab: Lab, scenario: Scenario, workdir: Path
) -> tuple[list[dict[str, Any]], list[PhaseRun]]:
    """Every phase of ``scenario`` on the running ``lab``: apply its rules, probe, compare."""
    write_geoip(lab, scenario)
    rows: list[dict[str, Any]] = []
    runs: list[PhaseRun] = []
    try:
        for index, phase in enumerate(scenario.phase):
            apply_phase(lab, scenario, index)
            apply_outages(lab, scenario, index, workdir)
            if scenario.circumvent.direct:
                for run in probe_all(lab, scenario, phase.name, workdir):
                    rows += compare(scenario, run.phase, run.isp, run.verdicts)
            found, compared = circumvention_phase(lab, scenario, phase.name, workdir)
            runs += found
            rows += compared
    finally:
        apply_phase(lab, scenario, 0, active=False)  # the next scenario starts from no rule
    return rows, runs


@pytest.mark.parametrize("scenario", _ordered(), ids=lambda s: s.name)
def test_circumvention_scenario_matches_ground_truth(
    lab: Lab, scenario: Scenario, tmp_path: Path
) -> None:
    started = time.monotonic()
    rows, runs = run_on(lab, scenario, tmp_path)
    TIMES[scenario.name] = round(time.monotonic() - started, 1)
    assert rows, "no verdicts"
    tunnels = {r["service"] for r in rows if r.get("test") == "circumvention"}
    assert tunnels == set(scenario.circumvention_entries())
    assert all(r["match"] for r in rows), f"{_mismatches(rows)}\n{_stages(runs, rows)}"
    assert any(m.get("test_name") == CIRCUMVENTION for r in runs for m in r.measurements)
    invalid = _invalid(runs)
    assert not invalid, f"measurements the collector would reject:\n{invalid}"

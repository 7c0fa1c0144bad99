"""The call matrix's table (msgwatch.lab.matrix) covers every service with call ports and every
mechanism, and its generated scenarios are well formed (the lab runs are tests/lab/)."""

from __future__ import annotations

from msgwatch.catalogue import load_catalogue
from msgwatch.lab.censor import build_rule
from msgwatch.lab.matrix import (
    GROUPS,
    MECHANISMS,
    POLICE_GROUPS,
    TABLE,
    cell_for,
    gap_for,
    matrix_scenarios,
    reads_as_documented,
)

CALLS = ("voice", "video")


def test_every_service_with_call_ports_has_a_row_with_every_mechanism() -> None:
    catalogue = load_catalogue()
    with_calls = {s.id for s in catalogue.services
                  if any(f.function in CALLS and f.call_ports for f in s.functions)}  # fmt: skip
    assert {r.service for r in TABLE} == with_calls
    for row in TABLE:
        assert set(row.cells) == set(MECHANISMS), row.service
        for cell in row.cells.values():
            assert cell.why and (not cell.gap or cell.seen != cell.truth("voice"))
    grouped = [s for g in GROUPS for s in g]
    assert sorted(grouped) == sorted(with_calls) and len(set(grouped)) == len(grouped)
    policed = [s for g in POLICE_GROUPS for s in g]
    assert sorted(policed) == sorted(with_calls)


def test_every_cell_is_in_one_lab_run() -> None:
    seen: dict[tuple[str, str], str] = {}
    for scenario in matrix_scenarios():
        for isp in ("isp1", "isp2"):
            for service in scenario.services:
                found = cell_for(scenario, isp, service)
                if found is not None:
                    key = (service, found[0])
                    assert key not in seen, (key, seen.get(key), scenario.name)
                    seen[key] = scenario.name
        for rule in scenario.phase[0].rule:
            fields = rule.fields()
            if fields.get("to") and all(str(t).startswith("service:") for t in fields["to"]):
                continue  # resolved against the running lab
            build_rule({k: v for k, v in fields.items() if k != "to"} | (
                {"to": ["198.18.16.0/24"]} if "to" in fields else {}))  # fmt: skip
    assert len(seen) == len(TABLE) * len(MECHANISMS)


def test_a_gap_reads_as_documented_only_on_its_calls_and_only_as_the_table_says() -> None:
    """The tests and the load benchmark share one reading of a cell the probe cannot see."""
    scenario = next(s for s in matrix_scenarios() if s.name == "call-matrix-dpi-relays-1")
    gaps = [(isp, service) for isp in ("isp1", "isp2") for service in scenario.services
            if (found := cell_for(scenario, isp, service)) is not None and found[1].gap]  # fmt: skip
    assert gaps, "call-matrix-dpi-relays-1 holds a relays gap"
    isp, service = gaps[0]
    found = gap_for(scenario, isp, service, "voice")
    assert found is not None and found[0] == "relays"
    assert gap_for(scenario, isp, service, "text") is None
    verdict, mechanism = found[1].seen
    row = {"isp": isp, "service": service, "function": "video", "verdict": verdict,
           "mechanism": mechanism}  # fmt: skip
    assert reads_as_documented(scenario, row)
    assert not reads_as_documented(scenario, {**row, "function": "text"})
    assert not reads_as_documented(scenario, {**row, "verdict": "blocked", "mechanism": "udp.x"})
    others = [(i, s) for i in ("isp1", "isp2") for s in scenario.services if (i, s) not in gaps]
    assert all(gap_for(scenario, i, s, "voice") is None for i, s in others)

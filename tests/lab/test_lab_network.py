"""Each lab ISP is its own network: the probe finds it in the lab's GeoIP database from its own
address, and its measurements say so (issue 9, item 16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from msgwatch.lab.plan import ISP_NETWORKS
from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import Scenario

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]


def test_each_isp_records_its_own_network(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    scenario = Scenario.model_validate(
        {
            "name": "networks",
            "title": "Two ISPs, two networks",
            "description": "Nothing censored; isp1 named by the scenario, isp2 by the plan.",
            "services": ["telegram"],
            "timeout": 3.0,
            "phase": [{"name": "open"}],
            "networks": {"isp1": {"asn": 64512, "cc": "AZ", "name": "Example Telecom"}},
        }
    )
    run = run_scenario(scenario, tmp_path)
    seen = {
        r.isp: {(m["probe_asn"], m["probe_cc"], m["probe_network_name"]) for m in r.measurements}
        for r in run.runs
    }
    asn2, cc2, name2 = ISP_NETWORKS["isp2"]
    assert seen == {
        "isp1": {("AS64512", "AZ", "Example Telecom")},
        "isp2": {(f"AS{asn2}", cc2, name2)},
    }
    for r in run.runs:
        for m in r.measurements:
            assert m["annotations"]["probe_asn_source"] == "geoip"
            assert m["probe_ip"] == "127.0.0.1"
            assert (
                "_AZ_64512_" in m["report_id"] if r.isp == "isp1" else "_64501_" in m["report_id"]
            )
    # The probes' own addresses are looked up, never stored.
    text = "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))
    assert "198.18.1.2" not in text and "198.18.2.2" not in text

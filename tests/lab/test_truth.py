"""The one ground-truth comparison (``msgwatch.lab.truth``), used by ``lab run``, ``demo`` and
``demo --mini``: the analysis's verdicts, matched on verdict and mechanism, in one row shape.

No lab is needed: the measurements are the committed ``tests/data/minilab-demo.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.lab import truth
from msgwatch.lab.loopback import topology
from msgwatch.lab.run import compare
from msgwatch.lab.scenario import load_scenario

FIXTURE = Path(__file__).parents[1] / "data" / "minilab-demo.jsonl"
ROW = {"service", "function", "expected", "expected_mechanism", "verdict", "mechanism",
       "evidence", "match", "why"}  # fmt: skip


@dataclass(frozen=True)
class Want:
    service: str
    function: str
    verdict: str
    mechanism: str | None
    why: str = "because"


def _measurements() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_a_row_matches_on_verdict_and_mechanism() -> None:
    want = Want("signal", "media", "blocked", "tls.timeout")
    found = {"service": "signal", "function": "media", "verdict": "blocked",
             "mechanism": "tls.timeout", "evidence": [3, 4]}  # fmt: skip
    row = truth.row(want, found)
    assert set(row) == ROW
    assert row["match"] and row["evidence"] == [3, 4] and row["why"] == "because"
    assert not truth.row(want, {**found, "mechanism": "tls.reset"})["match"]
    assert not truth.row(want, {**found, "verdict": "ok", "mechanism": None})["match"]


def test_a_missing_verdict_is_a_mismatch() -> None:
    row = truth.row(Want("zoom", "web", "ok", None), None)
    assert row["verdict"] is None and row["mechanism"] is None and row["evidence"] == []
    assert not row["match"]


def test_against_gives_one_row_per_expectation_in_order() -> None:
    wants = [Want("a", "text", "ok", None), Want("b", "voice", "blocked", "udp.timeout")]
    verdicts = [{"service": "b", "function": "voice", "verdict": "blocked",
                 "mechanism": "udp.timeout"}]  # fmt: skip
    rows = truth.against(wants, verdicts)
    assert [(r["service"], r["match"]) for r in rows] == [("a", False), ("b", True)]
    assert truth.matched(rows) == 1


def test_judged_is_the_analysis_view_never_an_embedded_one() -> None:
    measurements = _measurements()
    expected = [v for m in measurements for v in judge(m)]
    for m in measurements:  # whatever the probe may have embedded is not read
        m["test_keys"]["msgwatch_verdicts"] = [{"verdict": "planted"}]
    assert truth.judged(measurements) == expected


def test_the_committed_demo_run_matches_the_mini_internet_ground_truth() -> None:
    rows = truth.against(topology.EXPECTED, truth.judged(_measurements()))
    assert truth.matched(rows) == len(rows) == len(topology.EXPECTED), [
        r for r in rows if not r["match"]
    ]


def test_lab_run_rows_add_phase_isp_scope_and_explanation() -> None:
    scenario = load_scenario("az-2017")
    phase = scenario.phase[0].name
    verdict = {"service": "whatsapp", "function": "text", "verdict": "ok", "mechanism": None,
               "evidence": [1], "scope": None, "explanation": "it worked"}  # fmt: skip
    (row,) = compare(scenario, phase, "isp1", [verdict])
    assert set(row) == ROW | {"phase", "isp", "scope", "explanation"}
    assert (row["phase"], row["isp"], row["explanation"]) == (phase, "isp1", "it worked")
    assert row["match"] and row["expected"] == "ok"

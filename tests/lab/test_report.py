"""The lab's HTML report (``msgwatch.report.html``) from a scenario run, without a lab.

The report is typed against its own protocols (``LabRun``), not the lab's classes: :func:`_as_report`
makes mypy (which runs over the tests) hold ``ScenarioRun`` to them.
"""

from __future__ import annotations

from msgwatch.lab.run import PhaseRun, ScenarioRun, compare
from msgwatch.lab.scenario import load_scenario
from msgwatch.report.html import LabRun, scenario_report


def _as_report(run: ScenarioRun) -> LabRun:
    return run


def test_a_scenario_run_renders_escaped_with_its_summary() -> None:
    scenario = load_scenario("az-2017")
    phase = scenario.phase[0].name
    verdict = {"service": "whatsapp", "function": "text", "verdict": "ok", "mechanism": None,
               "evidence": [7], "scope": None, "explanation": None}  # fmt: skip
    target = {"transaction_ids": [7], "failure": "<script>", "endpoint_id": "chat",
              "host": "e1.whatsapp.net", "port": 443, "failed_step": "tcp_connect"}  # fmt: skip
    measurement = {"input": "whatsapp", "test_keys": {"msgwatch_targets": [target]}}
    run = ScenarioRun(scenario, rows=compare(scenario, phase, "isp1", [verdict]))
    run.runs.append(PhaseRun(phase, "isp1", [verdict], [measurement], 1.0))
    run.timings["total"] = 2.0
    page = scenario_report(_as_report(run))
    assert "<b>1 of 1</b> verdicts match" in page
    assert "tcp_connect → &lt;script&gt;" in page and "<script>" not in page
    assert "total 2.0 s" in page

"""What the demo says about the results comes from the verdicts (issue 9, item 20)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msgwatch.cli import lab as cli_lab
from msgwatch.cli.main import cli
from msgwatch.report.explain import findings, scope_sentence, working_sentences

SERVICES = {"whatsapp": ("text", "voice", "video", "media", "web"), "telegram": ("text", "voice")}
BLOCKED_ON_ISP1 = {("whatsapp", "voice"), ("whatsapp", "video")}


def _rows() -> list[dict[str, Any]]:
    """az-2017's shape: WhatsApp calls blocked abroad on isp1, everything else ok."""
    rows: list[dict[str, Any]] = []
    for isp in ("isp1", "isp2"):
        for service, functions in SERVICES.items():
            for function in functions:
                blocked = isp == "isp1" and (service, function) in BLOCKED_ON_ISP1
                rows.append(
                    {
                        "phase": "calls-abroad-blocked",
                        "isp": isp,
                        "service": service,
                        "function": function,
                        "expected": "blocked" if blocked else "ok",
                        "expected_mechanism": "udp.dpi_call" if blocked else None,
                        "verdict": "blocked" if blocked else "ok",
                        "mechanism": "udp.dpi_call" if blocked else None,
                        "match": True,
                        "why": "the scenario's reason",
                        "explanation": "STUN-framed call packets were dropped" if blocked else "",
                        "scope": "abroad" if blocked else None,
                        "evidence": [],
                    }
                )
    return rows


def _set(rows: list[dict[str, Any]], isp: str, service: str, function: str, **values: Any) -> None:
    for r in rows:
        if (r["isp"], r["service"], r["function"]) == (isp, service, function):
            r.update(values)


def test_sentences_follow_the_verdicts() -> None:
    rows = _rows()
    assert working_sentences(rows) == [
        "Working on both ISPs (isp1 and isp2): text, media and web of every service measured.",
        "Also working on isp2: voice and video of every service measured.",
        "On isp1, voice works for telegram only.",
    ]
    assert findings(rows) == [
        "isp1: whatsapp voice blocked (udp.dpi_call): STUN-framed call packets were dropped",
        "isp1: whatsapp video blocked (udp.dpi_call): STUN-framed call packets were dropped",
    ]
    assert scope_sentence(rows) == [
        "On isp1, the same call traffic to the helper inside the country got through for "
        "whatsapp voice and whatsapp video: calls abroad fail, domestic calls work."
    ]

    changed = copy.deepcopy(rows)
    _set(changed, "isp2", "telegram", "text", verdict="inconclusive", mechanism="dns.timeout")
    _set(changed, "isp1", "whatsapp", "video", scope="all")
    assert working_sentences(changed) == [
        "Working on both ISPs (isp1 and isp2): media and web of every service measured.",
        "Also working on isp1: text of every service measured.",
        "Also working on isp2: voice and video of every service measured.",
        "On isp1, voice works for telegram only.",
        "On isp2, text works for whatsapp only.",
    ]
    assert "isp2: telegram text inconclusive (dns.timeout)" in findings(changed)
    assert any("failed to the helper inside the country too" in s for s in scope_sentence(changed))

    for r in rows:
        r["verdict"] = "ok"
    assert working_sentences(rows) == [
        "Every function measured works on both ISPs (isp1 and isp2): nothing was found blocked."
    ]
    assert findings(rows) == [] and scope_sentence(rows) == []


@pytest.mark.parametrize("twist", ["none", "isp2-text-blocked", "all-ok"])
def test_demo_prints_only_what_the_verdicts_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, twist: str
) -> None:
    rows = _rows()
    if twist == "isp2-text-blocked":
        _set(rows, "isp2", "whatsapp", "text", verdict="blocked", mechanism="tcp.timeout")
    if twist == "all-ok":
        for r in rows:
            r.update(verdict="ok", mechanism=None, scope=None)
    summary = {
        "scenario": "az-2017",
        "results": rows,
        "matched": sum(r["match"] for r in rows),
        "total": len(rows),
        "output": str(tmp_path),
        "report": str(tmp_path / "az-2017-report.html"),
    }
    monkeypatch.setattr(cli_lab, "run_and_report", lambda *args, **kwargs: summary)
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "Everything else works" not in flat
    for sentence in working_sentences(rows) + findings(rows) + scope_sentence(rows):
        assert sentence in flat
    if twist == "isp2-text-blocked":
        assert "On isp2, text works for telegram only." in flat
        assert "Working on both ISPs (isp1 and isp2): media and web" in flat
    if twist == "all-ok":
        assert "nothing was found blocked" in flat
        assert "domestic calls work" not in flat


def test_demo_states_the_censor_rules_from_the_scenario() -> None:
    from msgwatch.lab.scenario import load_scenario
    from msgwatch.report.explain import censor_rules

    scenario = load_scenario("az-2017")
    assert censor_rules(scenario) == (
        "The scenario: isp1 applies drop_udp to service:whatsapp, service:skype and drop_stun "
        "to abroad; isp2 censors nothing."
    )
    data = scenario.model_dump()
    data["phase"][0]["rule"] = [{"isp": "isp2", "type": "drop_stun", "to": ["abroad"]}]
    changed = type(scenario).model_validate(data)
    assert censor_rules(changed) == (
        "The scenario: isp1 censors nothing; isp2 applies drop_stun to abroad."
    )

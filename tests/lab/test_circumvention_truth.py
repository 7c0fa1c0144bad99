"""Circumvention scenarios without a lab: their files, selectors, and the comparison of a run's
verdicts with their ground truth (``msgwatch.lab.circumvention_run.compare``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from msgwatch.lab import circumvention_run as C
from msgwatch.lab import truth
from msgwatch.lab.censor import build_rule
from msgwatch.lab.mapping import map_catalogue
from msgwatch.lab.plan import CIRCUMVENTION
from msgwatch.lab.scenario import (
    ENTRY_TYPES,
    LAB_ENTRIES,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    resolve_rule,
    resolve_selector,
)

SHIPPED = (
    "circumvention-baseline", "calls-via-vpn", "tor-relays-blocked", "openvpn-fingerprinted",
    "fully-encrypted-blocked", "flow-cut-50k", "proxy-ports-blocked",
)  # fmt: skip


def _scenario(**extra: Any) -> Scenario:
    base: dict[str, Any] = {
        "name": "t", "title": "t", "description": "t", "services": ["whatsapp"],
        "phase": [{"name": "p"}], "circumvention": ["tor", "vpn", "proxies"],
    }  # fmt: skip
    return Scenario.model_validate(base | extra)


def _v(entry: str, function: str = "tunnel", verdict: str = "ok", mech: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"service": entry, "function": function, "verdict": verdict, "mechanism": mech}


def test_the_shipped_circumvention_scenarios_load_with_sources_and_reasons() -> None:
    found = {s.name: s for s in list_scenarios() if s.circumvention}
    assert set(SHIPPED) <= set(found)
    for name in SHIPPED:
        s = found[name]
        assert s.source, name
        assert all(e.why for e in s.expect_circumvention), name
        assert all(e.why for e in s.expect), name
        for e in s.expect_circumvention:
            assert e.entry in s.circumvention_entries(), (name, e.entry)
            if e.verdict == "blocked":
                assert e.mechanism, (name, e.entry)
        assert s.circumvent.budgets, f"{name}: short budgets in the lab"


def test_every_rule_target_of_the_shipped_scenarios_resolves() -> None:
    mapping = map_catalogue(_catalogue())
    for name in SHIPPED:
        for phase in load_scenario(name).phase:
            for rule in phase.rule:
                for target in rule.fields().get("to", []):
                    assert resolve_selector(target, mapping), (name, target)
                assert build_rule(resolve_rule(rule, mapping)).type == rule.type


def _catalogue() -> Any:
    from msgwatch.catalogue import load_catalogue

    return load_catalogue()


def test_circumvention_selectors() -> None:
    mapping = map_catalogue(_catalogue())
    relays = resolve_selector("circumvention:tor-relays", mapping)
    assert relays == [f"198.18.4.{n}/32" for n in (1, 2, 3, 4, 5)]
    assert resolve_selector("circumvention:tor-bridge", mapping) == ["198.18.4.16/32"]
    assert resolve_selector("circumvention:openvpn", mapping) == [f"{CIRCUMVENTION['openvpn']}/32"]
    assert resolve_selector("circumvention:all", mapping) == ["198.18.4.0/24"]
    assert len(resolve_selector("circumvention:proxies", mapping)) == 4
    with pytest.raises(ScenarioError, match="no such circumvention role"):
        resolve_selector("circumvention:nope", mapping)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"circumvention": [], "expect_circumvention": [
            {"isp": "isp1", "entry": "tor", "verdict": "blocked"}]}, "need `circumvention`"),
        ({"circumvention": ["vpn"], "expect_circumvention": [
            {"isp": "isp1", "entry": "tor", "verdict": "blocked"}]}, "not in the groups"),
        ({"expect_circumvention": [{"isp": "isp1", "entry": "nope", "verdict": "ok"}]},
         "unknown lab entry"),
        ({"expect_circumvention": [{"isp": "isp1", "entry": "tor", "function": "voice",
                                    "verdict": "ok"}]}, "tunnel, reachability"),
        ({"expect_circumvention": [{"isp": "isp1", "entry": "tor", "verdict": "ok",
                                    "phase": "later"}]}, "no phase"),
        ({"circumvent": {"entries": ["nope"]}}, "unknown lab entries"),
        ({"circumvent": {"budgets": {"tor": 0}}}, "between 0 and 300"),
        ({"circumvent": {"budgets": {"ssh": 10}}}, "not an entry type"),
        ({"circumvention": ["tor", "ssh"]}, "circumvention"),
    ],
)  # fmt: skip
def test_bad_circumvention_fields_are_refused(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _scenario(**extra)


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\ntitle = "t"\ndescription = "t"\nservices = ["whatsapp"]\n'
        '[[phase]]\nname = "p"\n[[expect_circumvention]]\nisp = "isp1"\nentry = "tor"\n'
        'verdict = "blocked"\n'
    )
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        load_scenario(path)


def test_entries_default_to_the_groups_in_a_fixed_order() -> None:
    s = _scenario(circumvention=["proxies", "tor"])
    assert s.circumvention_entries() == [
        n for n, g in LAB_ENTRIES.items() if g in ("tor", "proxies")
    ]
    s = _scenario(circumvent={"entries": ["wireguard", "tor"]})
    assert s.circumvention_entries() == ["tor", "wireguard"]


def test_mechanism_alternatives() -> None:
    assert truth.mechanism_matches("a.b|c.d", "c.d")
    assert truth.mechanism_matches("a.b", "a.b")
    assert not truth.mechanism_matches("a.b|c.d", "a")
    assert not truth.mechanism_matches("a.b|c.d", None)
    assert truth.mechanism_matches(None, None)
    assert not truth.mechanism_matches(None, "a.b")


def test_compare_every_verdict_against_the_truth() -> None:
    s = load_scenario("tor-relays-blocked")
    verdicts = [
        _v("tor", verdict="blocked", mech="connect.timeout"),
        _v("tor-obfs4"),
        _v("tor-obfs4", "whatsapp.text"),
        _v("tor-obfs4", "whatsapp.voice", "not_measured", "tunnel.no_udp"),
        _v("tor", "whatsapp.text", "not_measured"),  # through a tunnel expected down: not compared
        _v("tor-reach", "reachability", "degraded", "reachability.partial"),
        _v("tor-moria1", verdict="inconclusive"),  # not a lab entry: left out
    ]
    rows = C.compare(s, "relays-blackholed", "isp1", verdicts)
    got = {(r["service"], r["function"]): r for r in rows}
    assert set(got) == {("tor", "tunnel"), ("tor-obfs4", "tunnel"), ("tor-obfs4", "whatsapp.text"),
                        ("tor-obfs4", "whatsapp.voice"), ("tor-reach", "reachability")}  # fmt: skip
    assert all(r["match"] for r in rows), rows
    assert {r["test"] for r in rows} == {"circumvention"}
    assert all(r["phase"] == "relays-blackholed" and r["isp"] == "isp1" for r in rows)


def test_a_wrong_mechanism_or_a_missing_verdict_is_a_mismatch() -> None:
    s = load_scenario("tor-relays-blocked")
    rows = C.compare(s, "relays-blackholed", "isp1", [
        _v("tor", verdict="blocked", mech="handshake.timeout"), _v("tor-obfs4"),
    ])  # fmt: skip
    got = {(r["service"], r["function"]): r for r in rows}
    assert not got[("tor", "tunnel")]["match"]
    missing = got[("tor-reach", "reachability")]
    assert missing["verdict"] is None and not missing["match"]
    assert missing["expected"] == "degraded"


def test_a_through_row_that_is_listed_is_compared_and_must_be_there() -> None:
    s = load_scenario("calls-via-vpn")
    ok = [_v(e) for e in s.circumvention_entries()]
    rows = C.compare(s, "call-dpi", "isp1", ok)
    absent = [r for r in rows if r["function"] == "whatsapp.voice"]
    assert len(absent) == 5 and not any(r["match"] for r in absent)
    voice = [_v(e, "whatsapp.voice") for e in s.circumvention_entries()]
    rows = C.compare(s, "call-dpi", "isp1", ok + voice)
    assert all(r["match"] for r in rows) and len(rows) == 10


def test_calls_through_a_tunnel_without_udp_are_not_measured_by_default() -> None:
    s = load_scenario("circumvention-baseline")
    rows = C.compare(s, "open", "isp2", [_v("http-connect"), _v("http-connect", "whatsapp.voice")])
    voice = next(r for r in rows if r["function"] == "whatsapp.voice")
    assert voice["expected"] == "not_measured" and voice["expected_mechanism"] == "tunnel.no_udp"
    assert not voice["match"]


def test_a_listed_expectation_holds_on_its_isp_only() -> None:
    s = load_scenario("openvpn-fingerprinted")
    rows = C.compare(s, "opcode-dpi", "isp2", [_v(e) for e in s.circumvention_entries()])
    assert all(r["match"] for r in rows) and len(rows) == 3


def test_the_entries_file_takes_the_scenarios_entries_from_the_labs(tmp_path: Path) -> None:
    class FakeLab:
        circumvention_file = tmp_path / "lab.json"

    entries = [{"name": n, "type": ENTRY_TYPES[n], "address": "198.18.4.1", "port": 1}
               for n in LAB_ENTRIES]  # fmt: skip
    FakeLab.circumvention_file.write_text(json.dumps({"transport": entries}))
    s = load_scenario("openvpn-fingerprinted")
    out = C.entries_file(FakeLab(), s, tmp_path / "mine.json")  # type: ignore[arg-type]
    names = [e["name"] for e in json.loads(out.read_text())["transport"]]
    assert names == ["openvpn-udp", "openvpn-tcp", "wireguard"]
    FakeLab.circumvention_file.write_text(json.dumps({"transport": entries[:3]}))
    with pytest.raises(RuntimeError, match="no entry openvpn-udp"):
        C.entries_file(FakeLab(), s, tmp_path / "mine.json")  # type: ignore[arg-type]
    FakeLab.circumvention_file.write_text("[not json")
    with pytest.raises(RuntimeError, match="circumvention file"):
        C.entries_file(FakeLab(), s, tmp_path / "mine.json")  # type: ignore[arg-type]


def test_measurements_are_read_bounded_and_bad_lines_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text('{"a": 1}\nnot json\n[1]\n{"b": 2}\n')
    assert C.read_measurements(out) == [{"a": 1}, {"b": 2}]
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "x.jsonl").write_text('{"c": 3}\n')
    assert C.read_measurements(folder) == [{"c": 3}]
    monkeypatch.setattr(C, "MAX_MEASUREMENT_BYTES", 4)
    with pytest.raises(RuntimeError, match="exceed"):
        C.read_measurements(out)


def test_the_runs_time_covers_its_slowest_budget() -> None:
    s = load_scenario("tor-relays-blocked")
    assert C.run_timeout(s) == 30 + s.circumvent.sustain + C.MARGIN
    s = _scenario(circumvent={"entries": ["socks5"]})
    assert C.run_timeout(s) == C.DEFAULT_BUDGET + s.circumvent.sustain + C.MARGIN


def test_the_command_runs_only_the_lab_entries_with_a_spool_of_its_own(tmp_path: Path) -> None:
    class FakeLab:
        catalogue_dir = tmp_path / "catalogue"
        ca_bundle = tmp_path / "ca.pem"

        def resolver(self, isp: str) -> str:
            return "198.18.1.1:53"

        def helper_address(self, where: str) -> str:
            return "198.18.3.10"

    s = load_scenario("tor-relays-blocked")
    argv = C.circumvent_command(FakeLab(), "isp1", s, tmp_path / "e.json", tmp_path / "o.jsonl",  # type: ignore[arg-type]
                                tmp_path / "state")  # fmt: skip
    assert argv[1:4] == ["-m", "msgwatch", "circumvent"]
    assert "--no-catalogue-entries" in argv and "--yes" in argv and "--json" in argv
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "state")
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert "tor=15" in argv and "obfs4=30" in argv


def test_the_lab_entries_agree_with_the_groups_and_the_types() -> None:
    from msgwatch.circumvention.model import TYPES
    from msgwatch.lab.circumvention import GROUPS
    from msgwatch.lab.scenario import NO_UDP

    assert set(LAB_ENTRIES.values()) == set(GROUPS)
    assert set(ENTRY_TYPES) == set(LAB_ENTRIES) and set(ENTRY_TYPES.values()) <= set(TYPES)
    assert set(NO_UDP) <= set(LAB_ENTRIES)

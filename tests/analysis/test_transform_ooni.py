"""transform on OONI's real published measurements (/work/shared/ooni-samples/real.jsonl; skipped
without it) and on edited copies of them where the samples lack a case."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import orjson
import pytest

from msgwatch.analysis.schema import OBSERVATION_COLUMNS, VERDICT_COLUMNS, names
from msgwatch.analysis.transform import BadMeasurement, Meta, Transformed, transform
from tests.measurement.samples import OONI

READ = {"whatsapp", "telegram", "signal", "facebook_messenger", "web_connectivity",
        "stun_reachability", "vanilla_tor", "tor", "torsf", "openvpn", "psiphon", "riseupvpn"}  # fmt: skip


@cache
def samples() -> tuple[bytes, ...]:
    if not OONI.exists():
        pytest.skip(f"{OONI} is absent")
    return tuple(OONI.read_bytes().splitlines())


def by_test(name: str) -> list[dict[str, Any]]:
    return [m for m in map(orjson.loads, samples()) if m.get("test_name") == name]


def run(m: dict[str, Any]) -> Transformed:
    return transform(m, Meta(where="real.jsonl:1", measurement_uid="u1"))


def functions(out: Transformed) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["service"], v["function"]): v for v in out.verdicts}


def test_each_read_test_gives_rows_and_others_are_skipped() -> None:
    seen: set[str] = set()
    for m in map(orjson.loads, samples()):
        try:
            out = run(m)
        except BadMeasurement as e:
            assert str(e) == "missing_key:test_keys"  # one web_connectivity sample has null keys
            continue
        if m["test_name"] not in READ:
            assert out.skipped == "unknown_test" and not out.verdicts and not out.observations
            continue
        if out.skipped == "not_a_catalogue_domain":
            continue
        seen.add(m["test_name"])
        assert out.verdicts, m["test_name"]
        assert all(tuple(r) == names(VERDICT_COLUMNS) for r in out.verdicts)
        assert all(tuple(r) == names(OBSERVATION_COLUMNS) for r in out.observations)
        assert all(r["source"] == "ooni" and r["probe_tag"] is None for r in out.verdicts)
        assert all(r["control_ok"] is None for r in out.verdicts)
    assert seen == READ


def test_whatsapp_maps_three_functions_and_keeps_the_anomaly() -> None:
    blocked = next(
        m for m in by_test("whatsapp") if m["test_keys"]["whatsapp_web_status"] == "blocked"
    )
    got = functions(run(blocked))
    assert set(got) == {("whatsapp", f) for f in ("text", "web", "registration")}
    web = got["whatsapp", "web"]
    assert web["verdict"] == "blocked" and web["ooni_anomaly"] is True
    assert web["mechanism"] is not None
    assert orjson.loads(web["evidence"]) == ["whatsapp_web_status", "whatsapp_web_failure"]
    assert got["whatsapp", "text"]["ooni_anomaly"] is (
        blocked["test_keys"]["whatsapp_endpoints_status"] == "blocked"
    )


def test_telegram_web_failure_gives_the_mechanism() -> None:
    m = next(m for m in by_test("telegram")
             if m["test_keys"].get("telegram_web_failure") == "connection_refused_error")  # fmt: skip
    got = functions(run(m))
    assert got["telegram", "web"]["mechanism"] == "http.refused"
    assert got["telegram", "text"]["verdict"] == "ok"
    assert got["telegram", "text"]["ooni_anomaly"] is False


def test_signal_and_messenger_give_text() -> None:
    for test in ("signal", "facebook_messenger"):
        for m in by_test(test):
            assert set(functions(run(m))) == {(test, "text")}
    dns = next(m for m in by_test("facebook_messenger") if m["test_keys"]["facebook_dns_blocking"])
    text = functions(run(dns))["facebook_messenger", "text"]
    assert (text["verdict"], text["mechanism"], text["ooni_anomaly"]) == (
        "blocked",
        "dns.blocked",
        True,
    )


def test_web_connectivity_of_a_catalogue_domain_is_its_web() -> None:
    m = copy.deepcopy(
        next(
            m
            for m in by_test("web_connectivity")
            if m["test_keys"] and m["test_keys"].get("blocking") == "dns"
        )
    )
    m["input"] = "https://web.whatsapp.com/"
    v = functions(run(m))["whatsapp", "web"]
    assert (v["verdict"], v["mechanism"], v["ooni_anomaly"]) == ("blocked", "dns.blocked", True)
    m["input"] = "http://www.example.org/"
    assert run(m).skipped == "not_a_catalogue_domain"
    m["input"] = "https://www.twitter.com"  # www. and the catalogue's bare host
    m["test_keys"]["blocking"] = False
    v = functions(run(m))["twitter", "web"]
    assert (v["verdict"], v["ooni_anomaly"]) == ("ok", False)


def test_stun_of_a_catalogue_server_is_that_service() -> None:
    m = copy.deepcopy(by_test("stun_reachability")[0])
    assert set(functions(run(m))) == {("stun", "reachability")}
    assert any(o["kind"] == "stun" for o in run(m).observations)
    m["test_name"] = "stunreachability"
    m["test_keys"]["endpoint"] = "stun.fbsbx.com:3478"
    m["test_keys"]["failure"] = "generic_timeout_error"
    got = functions(run(m))
    assert set(got) == {("facebook_messenger", "voice"), ("facebook_messenger", "video")}
    assert all(v["verdict"] == "blocked" and v["ooni_anomaly"] for v in got.values())
    assert got["facebook_messenger", "voice"]["mechanism"] == "udp.timeout"


def test_circumvention_tests_are_their_own_rows() -> None:
    for test in ("vanilla_tor", "torsf", "openvpn", "psiphon", "riseupvpn"):
        for m in by_test(test):
            out = run(m)
            v = functions(out)[test, "bootstrap"]
            failed = m["test_keys"].get("failure") is not None
            assert v["ooni_anomaly"] is (failed or m["test_keys"].get("api_status") == "blocked")
            assert v["verdict"] == ("blocked" if v["ooni_anomaly"] else "ok")
            assert any(o["kind"] == "bootstrap" for o in out.observations)
    for m in by_test("tor"):
        out = run(m)
        assert set(functions(out)) == {("tor", "reachability")}
        targets = m["test_keys"]["targets"]
        assert len([o for o in out.observations if o["kind"] == "bootstrap"]) == len(targets)


def test_traces_become_observations() -> None:
    m = by_test("signal")[0]
    out = run(m)
    keys = m["test_keys"]
    counts = {
        k: sum(1 for o in out.observations if o["kind"] == k) for k in ("dns", "tcp", "tls", "http")
    }
    assert counts == {"dns": len(keys["queries"]), "tcp": len(keys["tcp_connect"]),
                      "tls": len(keys["tls_handshakes"]), "http": len(keys["requests"])}  # fmt: skip
    assert all(o["service"] == "signal" and o["function"] == "text" for o in out.observations)

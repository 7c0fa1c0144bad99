"""The judge, from measurements alone: rules per endpoint, pools per function."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from msgwatch.analysis.verdicts.judge import dns_forged, judge
from msgwatch.analysis.verdicts.matching import Facts, match, match_blockpage
from msgwatch.analysis.verdicts.rules import load_rules


def _keys(targets: list[dict[str, Any]], mode: str = "any_of", **extra: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "msgwatch_service": "svc",
        "msgwatch_service_networks": ["198.18.10.0/24"],
        "msgwatch_functions": [{"function": "text", "mode": mode, "endpoints": []}],
        "msgwatch_targets": targets,
        "queries": [],
        "tls_handshakes": [],
        "requests": [],
    }
    keys.update(extra)
    return {"input": "svc", "test_keys": keys}


def _target(txid: int, step: str | None = None, failure: str | None = None) -> dict[str, Any]:
    return {"function": "text", "endpoint_id": f"e{txid}", "transaction_ids": [txid],
            "failed_step": step, "failure": failure}  # fmt: skip


def test_rule_ids_are_unique_and_end_with_a_catch_all() -> None:
    rules = load_rules().rule
    assert len({r.id for r in rules}) == len(rules)
    last = rules[-1]
    assert last.step is None and last.failures is None and last.control is None


@pytest.mark.parametrize(
    ("step", "failure", "control", "verdict", "mechanism", "rule_id"),
    [
        ("none", None, "none", "ok", None, "ok.chain"),
        ("dns", "dns_nxdomain_error", "none", "blocked", "dns.nxdomain", "dns.nxdomain"),
        ("dns", "dns_servfail_error", "none", "inconclusive", "dns.failure", "dns.other"),
        ("tcp_connect", "generic_timeout_error", "none", "blocked", "tcp.timeout", "tcp.timeout"),
        ("tcp_connect", "connection_reset", "none", "blocked", "tcp.reset", "tcp.reset"),
        ("tcp_connect", "connection_refused", "none", "inconclusive", "tcp.refused", "tcp.refused"),
        ("tls_handshake", "connection_reset", "ok", "blocked", "tls.reset", "tls.reset.sni"),
        ("tls_handshake", "connection_reset", "failed", "blocked", "tls.reset", "tls.reset"),
        ("tls_handshake", "generic_timeout_error", "ok", "blocked", "tls.timeout", "tls.timeout.sni"),
        ("tls_handshake", "ssl_invalid_hostname", "ok", "blocked", "tls.cert_invalid", "tls.cert_invalid"),
        ("tls_handshake", "ssl_failed_handshake", "ok", "inconclusive", "tls.failed", "tls.other"),
        ("udp_exchange", "generic_timeout_error", "none", "blocked", "udp.timeout", "udp.timeout"),
        ("udp_exchange", "connection_refused", "none", "inconclusive", "udp.refused", "udp.refused"),
        ("internal", "unknown_failure x", "none", "inconclusive", "unknown", "fallback"),
    ],
)  # fmt: skip
def test_rules_table(
    step: str, failure: str | None, control: str, verdict: str, mechanism: str | None, rule_id: str
) -> None:
    rule = match(Facts(step, failure, False, False, False, control))
    assert (rule.verdict, rule.mechanism, rule.id) == (verdict, mechanism, rule_id)


def test_forged_dns_wins_unless_a_certificate_was_verified() -> None:
    assert match(Facts("none", None, True, False, False, "none")).id == "dns.forged"
    assert match(Facts("none", None, True, True, False, "none")).id == "ok.chain"


def test_dns_forged_by_race_and_by_bogon_outside_networks() -> None:
    def q(addresses: list[str], tags: list[str] | None = None) -> dict[str, Any]:
        answers = [{"answer_type": "A", "ipv4": a} for a in addresses]
        return {"query_type": "A", "answers": answers, "tags": tags}

    networks = ["198.18.10.0/24"]
    assert not dns_forged([q(["198.18.10.5"])], networks)
    assert dns_forged([q(["198.18.99.1"])], networks)  # non-public, outside the service
    assert dns_forged([q(["198.18.10.5"]), q(["198.18.10.6"], ["late"])], networks)  # a race
    assert not dns_forged([q(["198.18.10.5"]), q(["198.18.10.5"], ["late"])], networks)
    assert not dns_forged([q(["8.8.8.8"])], [])  # a public address is judged by a control later


def test_blockpage_fingerprints() -> None:
    assert match_blockpage(451, [], b"") == "http.451"
    body = b"<h1>Access to this resource has been blocked by order of the court</h1>"
    assert match_blockpage(403, [], body) == "generic.blocked_by_order"
    assert match_blockpage(200, [], b"<html>chat</html>") is None


def test_remembered_matches_are_the_rules_first_match() -> None:
    """match() remembers its answer per combination of facts; the rule set passed in is matched
    afresh. Both agree on every combination the rules name, twice over, and the memory stays
    bounded however many failure strings a hostile measurement invents."""
    rules = load_rules()
    steps = sorted({r.step for r in rules.rule if r.step} | {"none", "elsewhere"})
    failures = sorted({f for r in rules.rule for f in r.failures or []} | {"invented"})
    for _ in range(2):
        for step in steps:
            for failure in [None, *failures]:
                for flags in range(16):
                    forged, verified, page, throttled = (bool(flags >> i & 1) for i in range(4))
                    for control in ("ok", "failed", "none"):
                        facts = Facts(step, failure, forged, verified, page, control, throttled)
                        assert match(facts) is match(facts, rules)
    memo = sys.modules["msgwatch.analysis.verdicts.matching"]
    for i in range(memo.MEMO_SIZE + 10):
        match(Facts("tcp_connect", f"invented_{i}", False, False, False, "none"))
    assert 0 < memo._remembered.cache_info().currsize <= memo.MEMO_SIZE
    assert (
        match(Facts("dns", "dns_nxdomain_error", False, False, False, "none")).id == "dns.nxdomain"
    )


def test_blockpage_shortcut_agrees_with_each_fingerprint() -> None:
    """The one search with every body pattern (most responses match none) never hides a match:
    a page of each fingerprint's wording is found, under its own id, in any case and after 63 KiB
    of padding; past the 64 KiB searched it is not."""
    pages = {
        "generic.blocked_by_order": b"Access to this website has been BLOCKED",
        "ru.rkn": b'<a href="https://blocklist.rkn.gov.ru/">',
        "ir.peyvandha": b'<iframe src="http://10.10.34.35/">',
        "tr.5651": b"5651 sayili kanun",
        "az.blocked": "Bu sayta giriş məhdudlaşdırılıb".encode(),
    }
    for fingerprint, page in pages.items():
        assert match_blockpage(200, [], page) == fingerprint
        assert match_blockpage(200, [], page.upper()) == fingerprint
        assert match_blockpage(None, [("X", "y")], b"x" * 63 * 1024 + page) == fingerprint
        assert match_blockpage(200, [], b"x" * 64 * 1024 + page) is None
    assert match_blockpage(451, [("Server", "nginx")], b"<html>ok</html>") == "http.451"
    assert match_blockpage(None, [], b"") is None


def test_pool_is_ok_when_any_endpoint_works() -> None:
    m = _keys([_target(1, "tcp_connect", "generic_timeout_error"), _target(2)])
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["evidence"], v["rule_id"]) == (
        "ok",
        None,
        [2],
        "ok.chain",
    )
    assert v["endpoints"] == {"total": 2, "ok": 1, "failed": 1}


def test_pool_blocked_takes_the_most_common_mechanism() -> None:
    m = _keys(
        [
            _target(1, "tcp_connect", "generic_timeout_error"),
            _target(2, "tcp_connect", "generic_timeout_error"),
            _target(3, "tcp_connect", "connection_reset"),
        ]
    )
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["evidence"]) == ("blocked", "tcp.timeout", [1, 2])


def test_all_of_is_blocked_by_one_failure_and_inconclusive_without_blocking() -> None:
    m = _keys([_target(1), _target(2, "dns", "dns_nxdomain_error")], mode="all_of")
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["evidence"]) == ("blocked", "dns.nxdomain", [2])
    m = _keys([_target(1), _target(2, "tcp_connect", "connection_refused")], mode="all_of")
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"]) == ("inconclusive", "tcp.refused")


def test_blockpage_in_a_completed_chain() -> None:
    request = {
        "transaction_id": 1,
        "response": {"code": 403, "headers_list": [["Server", "x"]],
                     "body": "Access to this site has been blocked by order of the ministry"},
    }  # fmt: skip
    (v,) = judge(_keys([_target(1)], requests=[request]))
    assert (v["verdict"], v["mechanism"], v["rule_id"]) == (
        "blocked",
        "http.blockpage",
        "http.blockpage",
    )


def test_sni_control_raises_confidence() -> None:
    handshakes = [
        {"transaction_id": 1, "failure": "connection_reset", "no_tls_verify": False},
        {"transaction_id": 2, "failure": None, "no_tls_verify": True, "tags": ["control"]},
    ]
    target = _target(1, "tls_handshake", "connection_reset")
    target["transaction_ids"] = [1, 2]
    (v,) = judge(_keys([target], tls_handshakes=handshakes))
    assert (v["rule_id"], v["confidence"]) == ("tls.reset.sni", 0.9)


def test_hostile_measurement_does_not_crash_the_judge() -> None:
    m = _keys(
        [_target(1), {"function": "text", "transaction_ids": "x"}],
        requests=[{"transaction_id": 1, "response": {"code": "x", "headers_list": [[1]], "body": {"format": "base64", "data": "!!"}}}],
        queries=[{"transaction_id": 1, "answers": [{"ipv4": "not-an-ip"}]}],
    )  # fmt: skip
    assert judge(m)[0]["verdict"] in ("ok", "blocked", "inconclusive")


def test_call_path_is_required_in_addition_to_the_pool() -> None:
    path = _target(3, "udp_exchange", "generic_timeout_error")
    path["role"] = "call_path"
    m = _keys([_target(1), _target(2), path])
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["evidence"], v["call_path"]) == (
        "blocked",
        "udp.timeout",
        [3],
        True,
    )
    path.update(failed_step=None, failure=None)
    (v,) = judge(m)
    assert (v["verdict"], v["evidence"]) == ("ok", [1, 2])


def test_throttled_needs_a_fast_control_that_moved_enough() -> None:
    from msgwatch.analysis.verdicts.judge import throttled

    def rec(control: bool, kbit_s: float, moved: int) -> dict[str, Any]:
        return {"control": control, "kbit_s": kbit_s, "bytes": moved}

    assert throttled([rec(False, 130, 24_000), rec(True, 50_000, 512_000)])
    assert not throttled([rec(False, 20_000, 512_000), rec(True, 50_000, 512_000)])  # < 4x
    assert not throttled([rec(False, 130, 24_000), rec(True, 50_000, 10_000)])  # control too small
    assert not throttled([rec(False, 130, 24_000)])  # no control: nothing to compare


def test_a_pool_of_throttled_endpoints_is_throttled() -> None:
    m = _keys(
        [_target(1), _target(2)],
        msgwatch_throughput=[
            {"transaction_id": 1, "control": False, "kbit_s": 150, "bytes": 30_000},
            {"transaction_id": 1, "control": True, "kbit_s": 90_000, "bytes": 524_288},
            {"transaction_id": 2, "control": False, "kbit_s": 140, "bytes": 30_000},
            {"transaction_id": 2, "control": True, "kbit_s": 80_000, "bytes": 524_288},
        ],
    )
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["rule_id"], v["evidence"]) == (
        "throttled",
        "throttle",
        "throttle.sni",
        [1, 2],
    )


def _throttled_downloads(stalls: list[list[float]]) -> dict[str, Any]:
    """One media endpoint whose real-name download ran 1/100 of the benign one's speed, both over
    [1.0, 2.5] s, with the probe's loop stalls given (``msgwatch_probe_lag``)."""
    return _keys(
        [_target(1)],
        msgwatch_throughput=[
            {
                "transaction_id": 1,
                "control": False,
                "kbit_s": 150,
                "bytes": 30_000,
                "t0": 1.0,
                "t": 2.5,
            },
            {
                "transaction_id": 1,
                "control": True,
                "kbit_s": 15_000,
                "bytes": 524_288,
                "t0": 1.0,
                "t": 2.5,
            },
        ],
        msgwatch_probe_lag={"stalls": stalls},
    )


def test_a_throttle_reading_while_the_probe_stalled_is_the_probes() -> None:
    # Seen on an uncensored ISP under CPU load (issue 9, item 10): the two downloads' bytes are
    # what a stalled probe found time to read, so their ratio is not evidence of a policer.
    (v,) = judge(_throttled_downloads([[1.1, 0.4], [1.8, 0.3]]))
    assert (v["verdict"], v["mechanism"]) == ("inconclusive", "probe.overloaded")
    # Stalls elsewhere in the run, or short ones, leave the network's throttle standing.
    (v,) = judge(_throttled_downloads([[5.0, 2.0], [1.2, 0.05]]))
    assert (v["verdict"], v["mechanism"]) == ("throttled", "throttle")
    (v,) = judge(_throttled_downloads([]))
    assert (v["verdict"], v["mechanism"]) == ("throttled", "throttle")

"""The OONI map's pieces: failure strings as mechanisms, catalogue domains and STUN servers."""

from __future__ import annotations

import pytest

from msgwatch.analysis.transform.ooni_map import TESTS, mechanism, read, web_service


@pytest.mark.parametrize(
    ("failure", "step", "expected"),
    [
        (None, "tcp", None),
        ("", "tcp", None),
        ("connection_reset", "tcp", "tcp.reset"),
        ("connection_refused_error", "http", "http.refused"),
        ("generic_timeout_error", "tunnel", "tunnel.timeout"),
        ("dns_nxdomain_error", "http", "dns.nxdomain"),
        ("ssl_invalid_hostname", "http", "tls.cert_invalid"),
        ("ssl_unknown_authority", "tcp", "tls.other"),
        ("eof_error", "tcp", "tcp.reset"),
        ("unknown_failure: something", "udp", "udp.other"),
    ],
)
def test_failure_strings_become_mechanisms(failure: str | None, step: str, expected: str) -> None:
    assert mechanism(failure, step) == expected


@pytest.mark.parametrize(
    ("url", "service"),
    [
        ("https://web.whatsapp.com/", "whatsapp"),
        ("http://www.facebook.com", "facebook"),
        ("https://facebook.com/", "facebook"),
        ("https://www.messenger.com/", "facebook_messenger"),
        ("https://web.telegram.org/k/", "telegram"),
        ("https://example.org/", None),
        ("not a url at all [", None),
        (None, None),
        (12, None),
    ],
)
def test_catalogue_web_domains(url: object, service: str | None) -> None:
    assert web_service(url) == service


def test_unknown_tests_and_the_list_read() -> None:
    assert read("ndt", {}, None) == "unknown_test"
    assert {"whatsapp", "telegram", "signal", "facebook_messenger", "web_connectivity",
            "stunreachability", "stun_reachability", "vanilla_tor", "tor", "torsf", "openvpn",
            "psiphon", "riseupvpn"} == set(TESTS)  # fmt: skip


def test_messenger_function_ooni_could_not_judge_is_inconclusive() -> None:
    mapped = read("telegram", {"telegram_tcp_blocking": None, "telegram_web_status": "ok"}, None)
    assert not isinstance(mapped, str)
    got = {m.function: (m.verdict, m.ooni_anomaly) for m in mapped}
    assert got == {"text": ("inconclusive", None), "web": ("ok", False)}


def test_tor_all_targets_failed_is_blocked() -> None:
    keys = {"targets": {"a": {"failure": "connection_reset"}, "b": {"failure": "eof_error"}}}
    mapped = read("tor", keys, None)
    assert not isinstance(mapped, str)
    assert [(m.verdict, m.mechanism, m.ooni_anomaly) for m in mapped] == [
        ("blocked", "tcp.reset", True)
    ]

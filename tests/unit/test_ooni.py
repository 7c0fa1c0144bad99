"""OONI's messenger tests read as verdict facts (msgwatch.analysis.ooni)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from msgwatch.analysis import ooni
from msgwatch.analysis.ooni import Fact

OONI = Path("/work/shared/ooni-samples/real.jsonl")


def ooni_samples() -> list[dict[str, Any]]:
    if not OONI.exists():
        pytest.skip(f"{OONI} is not there")
    return [json.loads(line) for line in OONI.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("test_name", "test_keys", "expected"),
    [
        (
            "whatsapp",
            {
                "whatsapp_endpoints_status": "ok",
                "whatsapp_web_status": "blocked",
                "whatsapp_web_failure": "ssl_invalid_hostname",
                "registration_server_status": "blocked",
                "registration_server_failure": None,
            },
            [
                ("whatsapp", "text", "ok", None),
                ("whatsapp", "web", "blocked", "ssl_invalid_hostname"),
                ("whatsapp", "registration", "blocked", None),
            ],
        ),
        (
            "telegram",
            {
                "telegram_tcp_blocking": False,
                "telegram_http_blocking": True,
                "telegram_web_status": "ok",
            },
            [
                ("telegram", "text", "blocked", "telegram_http_blocking"),
                ("telegram", "web", "ok", None),
            ],
        ),
        ("telegram", {}, []),
        (
            "signal",
            {"signal_backend_status": "blocked", "signal_backend_failure": "dns_nxdomain_error"},
            [("signal", "text", "blocked", "dns_nxdomain_error")],
        ),
        (
            "facebook_messenger",
            {"facebook_tcp_blocking": False, "facebook_dns_blocking": True},
            [("facebook_messenger", "text", "blocked", "facebook_dns_blocking")],
        ),
        (
            "facebook_messenger",
            {"facebook_tcp_blocking": None, "facebook_dns_blocking": None},
            [],
        ),
        ("web_connectivity", {"blocking": "dns", "accessible": False}, []),
        ("signal", {"signal_backend_status": None}, []),
    ],
)
def test_ooni_messenger_facts(
    test_name: str, test_keys: dict[str, Any], expected: list[tuple[Any, ...]]
) -> None:
    assert ooni.facts({"test_name": test_name, "test_keys": test_keys}) == [
        Fact(*e) for e in expected
    ]


@pytest.mark.parametrize(
    "measurement",
    [
        {},
        {"test_keys": None},
        {"test_name": "whatsapp", "test_keys": ["not", "an", "object"]},
        {"test_name": ["whatsapp"], "test_keys": {"whatsapp_endpoints_status": "ok"}},
        {"test_name": "signal", "test_keys": {"signal_backend_status": ["blocked"]}},
    ],
)
def test_odd_measurements_give_no_fact(measurement: dict[str, Any]) -> None:
    assert ooni.facts(measurement) == []


def test_the_functions_each_test_covers() -> None:
    assert ooni.functions("whatsapp") == ("text", "web", "registration")
    assert ooni.functions("telegram") == ("text", "web")
    assert ooni.functions("signal") == ooni.functions("facebook_messenger") == ("text",)
    assert ooni.functions("web_connectivity") == ooni.functions(None) == ()


def test_services_and_functions_are_the_catalogues() -> None:
    from msgwatch.catalogue import load_catalogue
    from msgwatch.catalogue.schema import FUNCTIONS

    ids = {s.id for s in load_catalogue().services}
    assert set(ooni.TESTS) <= ids
    assert {c.function for checks in ooni.TESTS.values() for c in checks} <= set(FUNCTIONS)


def test_real_ooni_measurements() -> None:
    seen: Counter[tuple[str, str, str]] = Counter()
    for m in ooni_samples():
        found = ooni.facts(m)  # never raises, whatever real data lacks
        if m.get("test_name") not in ooni.TESTS:
            assert found == []
        for fact in found:
            assert fact.service == m["test_name"]
            seen[(fact.service, fact.function, fact.verdict)] += 1
    # what the samples hold (see /work/shared/ooni-samples/README.md), function by function
    assert seen[("whatsapp", "text", "ok")] == 6
    assert seen[("whatsapp", "web", "blocked")] == 2
    assert seen[("whatsapp", "registration", "blocked")] == 1
    assert seen[("telegram", "web", "blocked")] == 2
    assert seen[("telegram", "text", "ok")] == 7  # one sample has empty test_keys
    assert seen[("signal", "text", "blocked")] == 4
    assert seen[("signal", "text", "ok")] == 5
    assert seen[("facebook_messenger", "text", "blocked")] == 1
    assert seen[("facebook_messenger", "text", "ok")] == 2


def test_the_japanese_whatsapp_sample_in_detail() -> None:
    (m,) = [
        m for m in ooni_samples() if m.get("test_name") == "whatsapp" and m.get("probe_cc") == "JP"
    ]
    assert ooni.facts(m) == [
        Fact("whatsapp", "text", "ok", None),
        Fact("whatsapp", "web", "blocked", "ssl_invalid_hostname"),
        Fact("whatsapp", "registration", "blocked", "ssl_invalid_hostname"),
    ]

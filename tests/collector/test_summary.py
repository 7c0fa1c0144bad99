"""The index row of a measurement: summary columns and verdicts (msgwatch's own and OONI's)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.collector.summary import (
    LONG_TEXT,
    MESSENGER_TESTS,
    VerdictRow,
    clean_text,
    input_json,
    summarise,
    verdicts_of,
)

OONI = Path("/work/shared/ooni-samples/real.jsonl")


def ooni_samples() -> list[dict[str, Any]]:
    if not OONI.exists():
        pytest.skip(f"{OONI} is not there")
    return [json.loads(line) for line in OONI.read_text().splitlines() if line.strip()]


def test_msgwatch_verdicts_are_taken_as_the_probe_wrote_them(minilab: list[dict[str, Any]]) -> None:
    for measurement in minilab:
        own = measurement["test_keys"]["msgwatch_verdicts"]
        rows = verdicts_of(measurement)
        assert [r.as_dict() for r in rows] == [
            {k: v[k] for k in ("service", "function", "verdict", "mechanism")} for v in own
        ]
        assert rows, "every demo measurement has verdicts"


def test_summary_columns_of_a_msgwatch_measurement(minilab: list[dict[str, Any]]) -> None:
    m = minilab[0]
    row = summarise(m)
    assert row.report_id == m["report_id"]
    assert row.measurement_start_time == m["measurement_start_time"]
    assert (row.probe_cc, row.probe_asn, row.test_name, row.software_name) == (
        "ZZ",
        "AS0",
        "msgwatch_service",
        "msgwatch",
    )
    assert row.input_json == json.dumps(m["input"])
    assert summarise(m, "20261124T000000Z_x_ZZ_0_n1_abcdefabcdefabcd").report_id.endswith("abcd")  # type: ignore[union-attr]


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
def test_ooni_messenger_verdicts(
    test_name: str, test_keys: dict[str, Any], expected: list[tuple[Any, ...]]
) -> None:
    rows = verdicts_of({"test_name": test_name, "test_keys": test_keys})
    assert rows == [VerdictRow(*e) for e in expected]


def test_real_ooni_measurements() -> None:
    samples = ooni_samples()
    seen: Counter[tuple[str, str, str]] = Counter()
    for m in samples:
        row = summarise(m)  # never raises, whatever real data lacks
        if m.get("test_name") not in MESSENGER_TESTS:
            assert row.verdicts == ()
            continue
        for v in row.verdicts:
            assert v.service == m["test_name"]
            assert v.verdict in ("ok", "blocked")
            seen[(v.service, v.function, v.verdict)] += 1
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
    assert [v.as_dict() for v in summarise(m).verdicts] == [
        {"service": "whatsapp", "function": "text", "verdict": "ok", "mechanism": None},
        {
            "service": "whatsapp",
            "function": "web",
            "verdict": "blocked",
            "mechanism": "ssl_invalid_hostname",
        },
        {
            "service": "whatsapp",
            "function": "registration",
            "verdict": "blocked",
            "mechanism": "ssl_invalid_hostname",
        },
    ]


@pytest.mark.parametrize(
    "measurement",
    [
        {},
        {"test_keys": None},
        {"test_keys": {"msgwatch_verdicts": [None, 3, {"service": "x"}, {"service": 1}]}},
        {"test_name": "whatsapp", "test_keys": ["not", "an", "object"]},
        {"probe_cc": None, "probe_asn": 17, "input": {"a": [1, 2]}},
    ],
)
def test_odd_measurements_never_raise(measurement: dict[str, Any]) -> None:
    row = summarise(measurement)
    assert row.verdicts == ()
    assert row.probe_cc == "ZZ"


def test_text_is_made_safe_for_every_index() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x?y"
    assert len(clean_text("x" * 10_000)) == 128
    row = summarise({"test_name": "t\x00", "input": "i" * 100_000})
    assert "\x00" not in row.test_name
    assert row.input_json is not None and len(row.input_json) <= LONG_TEXT + 2
    assert orjson.loads(row.input_json) == "i" * LONG_TEXT


def test_input_keeps_its_json_type() -> None:
    assert input_json(None) is None
    assert input_json("https://web.whatsapp.com/") == '"https://web.whatsapp.com/"'
    assert orjson.loads(input_json(["a", "b"]) or "") == ["a", "b"]
    assert input_json(2**70) == '"1180591620717411303424"'  # beyond orjson: kept as text


# --- issue 9, item 5: what one measurement may carry into the index -------------------------------


def _entry(n: int, **changes: Any) -> dict[str, Any]:
    entry = {"service": "whatsapp", "function": "voice", "verdict": "blocked", "mechanism": "x"}
    entry["mechanism"] = f"udp.timeout.{n}"
    entry.update(changes)
    return entry


def test_the_verdict_rows_of_one_measurement_are_bounded() -> None:
    from msgwatch.collector.summary import MAX_VERDICTS

    entries = [_entry(n) for n in range(100_000)]
    rows = verdicts_of(
        {"test_name": "msgwatch_service", "test_keys": {"msgwatch_verdicts": entries}}
    )
    assert len(rows) == MAX_VERDICTS
    assert [r.mechanism for r in rows] == [f"udp.timeout.{n}" for n in range(MAX_VERDICTS)]


@pytest.mark.parametrize(
    "changes",
    [
        {"verdict": "blokced"},
        {"verdict": "BLOCKED"},
        {"function": "voyce"},
        {"service": "What's App"},
        {"service": "w" * 64},
        {"service": ""},
    ],
)
def test_verdict_rows_outside_the_vocabulary_are_not_indexed(changes: dict[str, Any]) -> None:
    entries = [_entry(0, **changes), _entry(1)]
    rows = verdicts_of(
        {"test_name": "msgwatch_service", "test_keys": {"msgwatch_verdicts": entries}}
    )
    assert [r.mechanism for r in rows] == ["udp.timeout.1"]


def test_the_vocabulary_is_the_probes() -> None:
    import typing

    from msgwatch.analysis.verdicts.rules import Verdict
    from msgwatch.catalogue.schema import FUNCTIONS
    from msgwatch.collector.summary import INDEXED_FUNCTIONS, INDEXED_VERDICTS

    assert set(INDEXED_VERDICTS) == set(typing.get_args(Verdict))
    assert set(INDEXED_FUNCTIONS) == set(FUNCTIONS)

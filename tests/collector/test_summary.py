"""The index row of a measurement: its envelope (summary columns, service, functions), never a
verdict: the probe's own and OONI's stay in the archive (verdicts are the analysis's)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis import ooni
from msgwatch.collector.summary import (
    LONG_TEXT,
    SummaryRow,
    clean_text,
    functions_of,
    input_json,
    service_of,
    summarise,
)

OONI = Path("/work/shared/ooni-samples/real.jsonl")


def ooni_samples() -> list[dict[str, Any]]:
    if not OONI.exists():
        pytest.skip(f"{OONI} is not there")
    return [json.loads(line) for line in OONI.read_text().splitlines() if line.strip()]


def test_a_msgwatch_measurement_is_indexed_by_what_it_measured(
    minilab: list[dict[str, Any]],
) -> None:
    for measurement in minilab:
        keys = measurement["test_keys"]
        row = summarise(measurement)
        assert row.service == keys["msgwatch_service"] == measurement["input"]
        assert row.functions == tuple(f["function"] for f in keys["msgwatch_functions"])
        assert row.functions, "every demo measurement measured some function"


def test_the_probes_verdicts_are_not_trusted(minilab: list[dict[str, Any]]) -> None:
    """The index holds no verdict: whatever the probe wrote in ``msgwatch_verdicts`` (or left
    out), the row is the same."""
    assert "verdicts" not in {f.name for f in dataclasses.fields(SummaryRow)}
    for measurement in minilab:
        keys = measurement["test_keys"]
        row = summarise(measurement)
        keys.pop("msgwatch_verdicts", None)
        assert summarise(measurement) == row
        keys["msgwatch_verdicts"] = [
            {"service": "zoom", "function": "voice", "verdict": "blocked", "mechanism": "x"}
        ] * 50  # another service, another function: the index takes none of it
        assert summarise(measurement) == row


def test_service_from_input_when_the_keys_do_not_name_it() -> None:
    m = {"test_name": "msgwatch_service", "input": "signal", "test_keys": {}}
    assert service_of(m) == "signal"
    assert service_of({**m, "test_keys": {"msgwatch_service": "telegram"}}) == "telegram"
    assert service_of({**m, "test_name": "web_connectivity"}) is None  # another test's input


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


def test_an_ooni_messenger_test_is_indexed_by_service_and_functions_not_by_its_verdicts() -> None:
    keys = {"telegram_tcp_blocking": True, "telegram_web_status": "blocked"}
    for test_keys in (keys, {}, None):
        row = summarise({"test_name": "telegram", "test_keys": test_keys})
        assert (row.service, row.functions) == ("telegram", ("text", "web"))


def test_real_ooni_measurements() -> None:
    for m in ooni_samples():
        row = summarise(m)  # never raises, whatever real data lacks
        assert row.service == (m["test_name"] if m.get("test_name") in ooni.TESTS else None)
        assert row.functions == ooni.functions(m.get("test_name"))


@pytest.mark.parametrize(
    "measurement",
    [
        {},
        {"test_keys": None},
        {"test_name": "msgwatch_service", "test_keys": {"msgwatch_functions": [None, 3, {}]}},
        {"test_name": "msgwatch_service", "test_keys": {"msgwatch_service": 1}, "input": [1]},
        {"test_name": "whatsapp", "test_keys": ["not", "an", "object"]},
        {"probe_cc": None, "probe_asn": 17, "input": {"a": [1, 2]}},
    ],
)
def test_odd_measurements_never_raise(measurement: dict[str, Any]) -> None:
    row = summarise(measurement)
    test_name = measurement.get("test_name")
    assert row.service == (test_name if test_name == "whatsapp" else None)
    assert row.functions == ooni.functions(test_name)
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


def test_the_functions_of_one_measurement_are_bounded() -> None:
    names = ["voice", "text", "voice", "web", "media", "video", "registration", "text"]
    entries = [{"function": names[n % len(names)], "n": n} for n in range(100_000)]
    m = {"test_name": "msgwatch_service", "test_keys": {"msgwatch_functions": entries}}
    assert functions_of(m) == ("voice", "text", "web", "media", "video", "registration")


@pytest.mark.parametrize(
    ("keys", "service", "functions"),
    [
        ({"msgwatch_service": "What's App"}, None, ()),
        ({"msgwatch_service": "w" * 64}, None, ()),
        ({"msgwatch_service": ""}, None, ()),
        ({"msgwatch_functions": [{"function": "voyce"}, {"function": "VOICE"}]}, None, ()),
        ({"msgwatch_functions": [{"function": "voyce"}, {"function": "text"}]}, None, ("text",)),
    ],
)
def test_what_is_outside_the_vocabulary_is_not_indexed(
    keys: dict[str, Any], service: str | None, functions: tuple[str, ...]
) -> None:
    m = {"test_name": "msgwatch_service", "test_keys": keys}
    assert (service_of(m), functions_of(m)) == (service, functions)


def test_the_vocabulary_is_the_catalogues() -> None:
    from msgwatch.catalogue.schema import FUNCTIONS
    from msgwatch.collector.summary import INDEXED_FUNCTIONS

    assert set(INDEXED_FUNCTIONS) == set(FUNCTIONS)

"""transform on hostile measurements: the envelope's keys missing or wrong (BadMeasurement with
the key), odd content inside test_keys (skipped, never raised), huge lists (capped), the probe's
own address echoed back (never stored)."""

from __future__ import annotations

import copy
import gzip
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.transform import BadMeasurement, Meta, Transformed, transform
from msgwatch.analysis.transform.base import MAX_JSON, MAX_OBSERVATIONS, MAX_TEXT

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"
PROBE_IP = "203.0.113.77"


@cache
def lab() -> bytes:
    with gzip.open(LAB) as f:
        return f.readline()


def measurement() -> dict[str, Any]:
    m: dict[str, Any] = orjson.loads(lab())
    return m


def run(m: Any) -> Transformed:
    return transform(m, Meta(where="x:1", measurement_uid="u"))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("test_name", None, "missing_key:test_name"),
        ("test_name", 7, "wrong_type:test_name"),
        ("test_keys", None, "missing_key:test_keys"),
        ("test_keys", [], "wrong_type:test_keys"),
        ("probe_cc", None, "missing_key:probe_cc"),
        ("probe_cc", 12, "wrong_type:probe_cc"),
        ("probe_asn", None, "missing_key:probe_asn"),
        ("probe_asn", True, "wrong_type:probe_asn"),
        ("probe_asn", "64512", "bad_value:probe_asn"),
        ("measurement_start_time", None, "missing_key:measurement_start_time"),
        ("measurement_start_time", 1.5, "wrong_type:measurement_start_time"),
        ("measurement_start_time", "yesterday", "bad_value:measurement_start_time"),
        ("measurement_start_time", "2024-13-40 25:00:00", "bad_value:measurement_start_time"),
        ("measurement_start_time", "2024-01-01T00:00:00Z", "bad_value:measurement_start_time"),
        ("measurement_start_time", "0500-01-01 10:00:00", "bad_value:measurement_start_time"),
        ("measurement_start_time", "1969-12-31 23:59:59", "bad_value:measurement_start_time"),
        ("measurement_start_time", "9999-12-31 23:00:00", "bad_value:measurement_start_time"),
    ],
)
def test_envelope_problems_name_the_key(key: str, value: Any, reason: str) -> None:
    m = measurement()
    if value is None:
        del m[key]
    else:
        m[key] = value
    with pytest.raises(BadMeasurement) as raised:
        run(m)
    assert str(raised.value) == reason


def test_not_an_object_and_unknown_tests() -> None:
    with pytest.raises(BadMeasurement, match="wrong_type:measurement"):
        run([1, 2])
    m = measurement()
    m["test_name"] = "ndt"
    del m["test_keys"]  # an unread test is skipped before its envelope is read
    out = run(m)
    assert (out.test_name, out.skipped, out.verdicts) == ("ndt", "unknown_test", [])


def test_an_int_asn_and_an_odd_country() -> None:
    m = measurement()
    m["probe_asn"], m["probe_cc"] = 64512, "xx-"
    row = run(m).verdicts[0]
    assert (row["probe_asn"], row["probe_cc"]) == ("AS64512", "ZZ")


ODD: list[Any] = [None, 1, "x", [], {}, [None, 1, "x", [[]], {"transaction_id": "x"}]]


@pytest.mark.parametrize("value", ODD)
def test_odd_values_inside_test_keys_never_raise(value: Any) -> None:
    m = measurement()
    for key in list(m["test_keys"]):
        m["test_keys"][key] = value
    out = run(m)
    assert out.verdicts == [] or all(v["verdict"] for v in out.verdicts)
    ooni = {"test_name": "whatsapp", "measurement_start_time": "2024-01-01 00:00:00",
            "probe_cc": "IT", "probe_asn": "AS1", "input": value,
            "test_keys": dict.fromkeys(("whatsapp_web_status", "queries", "requests",
                                        "tcp_connect", "tls_handshakes", "targets"), value)}  # fmt: skip
    for test in ("whatsapp", "tor", "web_connectivity", "stunreachability", "riseupvpn"):
        ooni["test_name"] = test
        run(ooni)


def test_entries_with_wrong_types_inside_are_kept_with_none() -> None:
    m = measurement()
    keys = m["test_keys"]
    keys["queries"][0].update(hostname=["x"], t="soon", transaction_id=True, answers="many")
    keys["tcp_connect"][0]["status"] = "fine"
    rows = run(m).observations
    assert any(r["kind"] == "dns" and r["hostname"] is None and r["t"] is None for r in rows)


def test_numbers_too_large_for_their_columns_are_dropped() -> None:
    m = measurement()
    keys = m["test_keys"]
    keys["tcp_connect"][0].update(port=1 << 40, t=10**400, transaction_id=1 << 70)
    keys["tls_handshakes"][0]["address"] = "198.18.0.1:99999999999999"
    for exchange in keys["msgwatch_udp_exchanges"]:
        exchange["attempts"] = [{"num_bytes": (1 << 62)}] * 4
    rows = run(m).observations
    tcp = next(r for r in rows if r["kind"] == "tcp")
    assert (tcp["port"], tcp["t"], tcp["transaction_id"]) == (None, None, None)
    assert all(r["bytes_sent"] is None for r in rows if r["kind"] in ("stun", "turn"))
    for row in rows:
        for column in ("port", "attempt", "status_code"):
            assert row[column] is None or -(1 << 31) < row[column] < (1 << 31)


def test_huge_lists_are_capped_and_counted() -> None:
    m = measurement()
    query = m["test_keys"]["queries"][0]
    m["test_keys"]["queries"] = [query] * 100_000
    rows = run(m).observations
    assert len(rows) == MAX_OBSERVATIONS
    assert orjson.loads(rows[-1]["detail"])["more_rows"] > 0


def test_a_measurement_too_large_to_judge_keeps_its_observations() -> None:
    m = measurement()
    keys = m["test_keys"]
    keys["network_events"] = (keys["network_events"] * 100)[:4000]
    keys["msgwatch_targets"] = (keys["msgwatch_targets"] * 100)[:1000]
    out = run(m)
    assert out.verdicts == [] and out.problem == "judge_skipped:too_large"
    assert out.observations


def test_long_text_and_json_are_cut() -> None:
    m = measurement()
    query = m["test_keys"]["queries"][0]
    query["failure"] = "x" * 100_000
    query["answers"] = [{"answer_type": "A", "ipv4": "198.18.0." + "9" * 100}] * 60
    row = next(r for r in run(m).observations if r["kind"] == "dns")
    assert len(row["failure"]) <= MAX_TEXT
    assert len(row["answers"]) <= MAX_JSON + 64


def test_nesting_bomb_inside_test_keys() -> None:
    bomb: Any = []
    for _ in range(5000):
        bomb = [bomb]
    m = measurement()
    m["test_keys"]["msgwatch_targets"][0]["endpoint_id"] = bomb
    m["test_keys"]["queries"][0]["answers"] = bomb
    out = run(m)
    assert out.observations  # the rows that do not need the judge stay
    assert out.verdicts == [] and out.problem == "judge_failed:RecursionError"


def test_the_probe_ip_is_never_stored() -> None:
    m = measurement()
    m["probe_ip"] = PROBE_IP
    m["resolver_ip"] = "198.18.1.1"
    keys = m["test_keys"]
    keys["queries"][0]["answers"] = [{"answer_type": "A", "ipv4": PROBE_IP}]
    keys["tcp_connect"][0]["ip"] = PROBE_IP
    keys["tls_handshakes"][0]["address"] = f"{PROBE_IP}:443"
    keys["msgwatch_replays"][0]["address"] = f"{PROBE_IP}:3478"
    out = run(m)
    text = orjson.dumps(out.observations + out.verdicts).decode()
    assert PROBE_IP not in text
    assert any(r["kind"] == "tcp" and r["ip"] is None for r in out.observations)


def test_the_loopback_placeholder_is_kept() -> None:
    m = measurement()
    assert m["probe_ip"] == "127.0.0.1"
    keys = m["test_keys"]
    keys["tcp_connect"][0]["ip"] = "127.0.0.1"
    assert any(r["ip"] == "127.0.0.1" for r in run(m).observations)


def test_input_is_not_changed() -> None:
    m = measurement()
    before = copy.deepcopy(m)
    run(m)
    assert m == before

"""transform on real msgwatch lab measurements (az-2017: ISP 1, AS64512, drops calls abroad by
DPI; ISP 2, AS64513, and the baseline networks are open)."""

from __future__ import annotations

import copy
import gzip
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from msgwatch.analysis.schema import OBSERVATION_COLUMNS, VERDICT_COLUMNS, names
from msgwatch.analysis.transform import RULES_VERSION, Meta, Transformed, transform
from msgwatch.measurement.vocab import VERDICTS

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"


@cache
def lines() -> tuple[bytes, ...]:
    with gzip.open(LAB) as f:
        return tuple(f.read().splitlines())


def measurements() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines()]


def run(m: dict[str, Any], uid: str = "u1", tag: str | None = "tag1") -> Transformed:
    return transform(m, Meta(where="lab:1", measurement_uid=uid, probe_tag=tag))


@cache
def transformed() -> tuple[tuple[dict[str, Any], Transformed], ...]:
    """Every lab measurement with its rows (transformed once for the module)."""
    return tuple((m, run(m)) for m in measurements())


def found(service: str, asn: str) -> tuple[dict[str, Any], Transformed]:
    return next(
        (m, out)
        for m, out in transformed()
        if m["test_keys"]["msgwatch_service"] == service and m["probe_asn"] == asn
    )


def one(service: str, asn: str) -> dict[str, Any]:
    return found(service, asn)[0]


def verdicts(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = next(out for n, out in transformed() if n is m)
    return {v["function"]: v for v in out.verdicts}


def test_every_row_has_exactly_the_schema_columns() -> None:
    for m, out in transformed():
        assert out.skipped is None and out.test_name == "msgwatch_service"
        assert out.observations and out.verdicts
        assert all(tuple(r) == names(OBSERVATION_COLUMNS) for r in out.observations)
        assert all(tuple(r) == names(VERDICT_COLUMNS) for r in out.verdicts)
        for row in out.verdicts + out.observations:
            assert row["source"] == "msgwatch" and row["measurement_uid"] == "u1"
            assert row["probe_tag"] == "tag1" and row["probe_asn"] == m["probe_asn"]
            assert row["measurement_start_time"] == m["measurement_start_time"]
            assert row["day"] == m["measurement_start_time"][:10]
        assert all(v["verdict"] in VERDICTS for v in out.verdicts)
        assert all(v["rules_version"] == RULES_VERSION for v in out.verdicts)


def test_az_2017_calls_blocked_on_isp1_text_works() -> None:
    for service in ("whatsapp", "skype"):  # the DPI knows their call signatures
        isp1, isp2 = verdicts(one(service, "AS64512")), verdicts(one(service, "AS64513"))
        for function in ("voice", "video"):
            assert isp1[function]["verdict"] == "blocked", (service, function)
            assert isp1[function]["mechanism"]
            assert isp2[function]["verdict"] == "ok", (service, function)
    for service in ("whatsapp", "telegram"):
        assert verdicts(one(service, "AS64512"))["text"]["verdict"] == "ok"
    assert verdicts(one("telegram", "AS64512"))["voice"]["verdict"] == "ok"


def test_control_ok_says_the_control_replay_got_through() -> None:
    blocked = verdicts(one("whatsapp", "AS64512"))
    assert blocked["voice"]["control_ok"] is True  # the bit-inverted replay passed: DPI
    assert blocked["text"]["control_ok"] is None  # no control for text


def test_verdict_evidence_names_transaction_ids_of_the_measurement() -> None:
    m = one("whatsapp", "AS64512")
    voice = verdicts(m)["voice"]
    evidence = orjson.loads(voice["evidence"])
    replayed = {r["transaction_id"] for r in m["test_keys"]["msgwatch_replays"]}
    assert evidence and set(evidence) <= replayed | {
        i for t in m["test_keys"]["msgwatch_targets"] for i in t["transaction_ids"]
    }


def test_observations_cover_each_kind_and_attribute_targets() -> None:
    m = one("whatsapp", "AS64512")
    keys = m["test_keys"]
    out = run(m)
    kinds = {o["kind"] for o in out.observations}
    assert {"dns", "tcp", "tls", "http", "stun", "app", "replay", "throughput"} <= kinds
    # every query is a row at least once, attributed to the targets holding its transaction id
    owners: dict[int, set[tuple[str, str]]] = {}
    for target in keys["msgwatch_targets"]:
        for txid in target["transaction_ids"]:
            owners.setdefault(txid, set()).add((target["function"], target["endpoint_id"]))
    dns = [o for o in out.observations if o["kind"] == "dns"]
    expected = sum(len(owners.get(q["transaction_id"]) or [None]) for q in keys["queries"])
    assert len(dns) == expected
    for row in dns:
        if row["transaction_id"] in owners:
            assert (row["function"], row["target"]) in owners[row["transaction_id"]]


def test_replay_rows_carry_loss_from_the_counts() -> None:
    m = one("whatsapp", "AS64512")
    by_txid = {r["transaction_id"]: r for r in m["test_keys"]["msgwatch_replays"]}
    rows = [o for o in run(m).observations if o["kind"] == "replay"]
    assert rows
    for row in rows:
        record = by_txid[row["transaction_id"]]
        assert row["role"] == record["role"]
        if record["sent_packets"]:
            expected = 1 - record["received_packets"] / record["sent_packets"]
            assert abs(row["loss"] - max(0.0, expected)) < 1e-9
    originals = [r for r in rows if r["role"] == "replay_original"]
    controls = [r for r in rows if r["role"] == "replay_control"]
    assert all(r["loss"] > 0 for r in originals)  # the DPI dropped the marked packets
    assert all(r["loss"] == 0 for r in controls)  # and let the bit-inverted ones through


def test_stun_and_turn_rows_count_packets() -> None:
    for m, out in transformed():
        exchanges = m["test_keys"].get("msgwatch_udp_exchanges") or []
        rows = [o for o in out.observations if o["kind"] in ("stun", "turn")]
        if exchanges:
            assert {o["kind"] for o in rows} <= {"stun", "turn"}
            by_txid = {e["transaction_id"]: e for e in exchanges}
            for row in rows:
                record = by_txid[row["transaction_id"]]
                assert row["kind"] == record["protocol"]
                assert row["packets_sent"] == len(record["attempts"])
                assert row["packets_received"] == len(record["responses"])


def test_same_input_same_rows() -> None:
    m = one("skype", "AS64512")
    assert run(m).observations == run(m).observations
    assert run(m).verdicts == run(m).verdicts


def test_control_ok_from_the_helper_view_or_the_control_replay() -> None:
    m = copy.deepcopy(one("skype", "AS64512"))
    assert verdicts(one("skype", "AS64512"))["voice"]["control_ok"] is True
    for view in m["test_keys"]["msgwatch_helper_views"]:
        for result in view["results"]:
            result["failure"] = "generic_timeout_error"
    assert {v["function"]: v["control_ok"] for v in run(m).verdicts}["voice"] is True  # replays
    for replay in m["test_keys"]["msgwatch_replays"]:
        if replay["role"] in ("replay_control", "replay_down_control"):
            replay["received_packets"] = 0
    got = {v["function"]: v["control_ok"] for v in run(m).verdicts}
    assert got["voice"] is False and got["video"] is False  # no control got through either
    assert got["web"] is None

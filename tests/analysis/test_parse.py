"""msgwatch.analysis.parse: a msgwatch_service line read with its network events deferred gives
what orjson gives, verdicts included; every other line is orjson's, errors included."""

from __future__ import annotations

import copy
import gzip
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.parse import DEFERRED_KEY, Deferred, deferring, parse, resolved
from msgwatch.analysis.transform import Meta, transform
from msgwatch.analysis.verdicts.overload import TIMEOUT, overloaded

DATA = Path(__file__).resolve().parents[1] / "data"


@cache
def lab_lines() -> tuple[bytes, ...]:
    with gzip.open(DATA / "lab-measurements.jsonl.gz") as f:
        return tuple(f.read().splitlines())


def loaded(value: Any) -> Any:
    """``value`` with its deferred events loaded (a copy)."""
    value = copy.copy(value)
    keys = value.get("test_keys")
    if isinstance(keys, dict) and isinstance(keys.get(DEFERRED_KEY), Deferred):
        value["test_keys"] = {**keys, DEFERRED_KEY: keys[DEFERRED_KEY].load()}
    return value


def rows(measurement: dict[str, Any]) -> Any:
    out = transform(measurement, Meta(where="lab:1", measurement_uid="u1", probe_tag="t1"))
    return out.observations, out.verdicts, out.skipped


def test_lab_measurements_are_read_deferred_and_equal_to_orjson() -> None:
    for line in lab_lines():
        value = parse(line)
        assert isinstance(value["test_keys"][DEFERRED_KEY], Deferred)
        assert loaded(value) == orjson.loads(line)


def test_lab_measurements_give_the_same_rows_and_verdicts_deferred() -> None:
    for line in lab_lines():
        assert rows(parse(line)) == rows(orjson.loads(line))


def _stalled_timeout() -> tuple[bytes, dict[str, Any]]:
    """A lab measurement in which the probe's loop stalled through the whole chain of a
    timed-out target (which only its network events can tell), and that target."""
    for line in lab_lines():
        m = orjson.loads(line)
        keys = m["test_keys"]
        for target in keys["msgwatch_targets"]:
            ids = set(target.get("transaction_ids") or [])
            times = [e[k] for e in keys["network_events"] if e.get("transaction_id") in ids
                     for k in ("t0", "t") if isinstance(e.get(k), float)]  # fmt: skip
            if target.get("failure") == TIMEOUT and len(times) > 1:
                start, end = min(times), max(times)
                keys["msgwatch_probe_lag"]["stalls"] = [[start, max(end - start, 0.3)]]
                return orjson.dumps(m), target
    raise AssertionError("no timed-out target with network events in the lab's measurements")


def test_the_judge_reads_deferred_network_events_as_loaded_ones() -> None:
    line, target = _stalled_timeout()
    deferred, whole = parse(line), orjson.loads(line)
    assert isinstance(deferred["test_keys"][DEFERRED_KEY], Deferred)
    assert overloaded(target, deferred["test_keys"]) and overloaded(target, whole["test_keys"])
    assert isinstance(deferred["test_keys"][DEFERRED_KEY], list)  # loaded once, kept
    assert rows(parse(line)) == rows(whole)


def test_resolved_loads_deferred_events_once_and_keeps_them() -> None:
    keys: dict[str, Any] = {DEFERRED_KEY: Deferred(b'[{"transaction_id": 1}]')}
    first = resolved(keys, DEFERRED_KEY)
    assert first == [{"transaction_id": 1}] and keys[DEFERRED_KEY] is first
    assert resolved(keys, DEFERRED_KEY) is first
    assert resolved(keys, "absent") is None


def test_shapes_apply_in_order_and_unreadable_bytes_load_as_none() -> None:
    deferred = Deferred(b"[1, 2, 3]").shaped(lambda v: v[:2]).shaped(len)
    assert deferred.load() == 2
    assert Deferred(b"[1e999]").load() is None  # the one difference the module's rules leave


def _line(**change: Any) -> bytes:
    m = orjson.loads(lab_lines()[0])
    m.update(change)
    return orjson.dumps(m)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(_line(extra_key=1), id="a key the probe does not write"),
        pytest.param(_line(test_name="whatsapp"), id="another test"),
        pytest.param(_line(probe_network_name="Azərbaycan"), id="not ASCII"),
        pytest.param(_line(test_keys=None), id="test_keys not an object"),
        pytest.param(b'{"test_name":"msgwatch_service","x":1}', id="another shape"),
    ],
)
def test_other_lines_are_read_whole_by_orjson(line: bytes) -> None:
    assert deferring(line) is None
    assert parse(line) == orjson.loads(line)


def test_a_repeated_key_keeps_the_last_as_orjson_does() -> None:
    line = lab_lines()[0]
    repeated = line[:-1] + b',"probe_cc":"ZZ","test_keys":' + orjson.dumps(
        {**orjson.loads(line)["test_keys"], "msgwatch_service": "other"}) + b"}"  # fmt: skip
    assert loaded(parse(repeated)) == orjson.loads(repeated)


def _broken_events(inside: bytes) -> bytes:
    line = lab_lines()[0]
    at = line.index(b'"network_events":[') + len(b'"network_events":[')
    return line[:at] + inside + b"," + line[at:]


@pytest.mark.parametrize(
    "inside",
    [b"[" * 5000 + b"]" * 5000, b'{"t0": 01}', b'{"t0": 1,}', b'"\\x"', b"\xff", b"tru"],
    ids=["nesting bomb", "bad number", "trailing comma", "bad escape", "bad UTF-8", "bad literal"],
)
def test_malformed_events_fail_the_line_with_orjsons_error(inside: bytes) -> None:
    line = _broken_events(inside)
    with pytest.raises(orjson.JSONDecodeError) as expected:
        orjson.loads(line)
    with pytest.raises(ValueError) as raised:
        parse(line)
    assert str(raised.value) == str(expected.value)


def test_integers_beyond_64_bits_are_read_as_orjson_reads_them_in_other_lines() -> None:
    line = b'{"test_name":"x","n":' + b"9" * 30 + b"}"
    assert parse(line) == orjson.loads(line)


def test_a_service_line_with_huge_numbers_is_still_analysed() -> None:
    """The second difference the module's rules leave: an integer beyond 64 bits is msgspec's int
    (orjson's float), one beyond a double's range too (orjson refuses the line). Either is out of
    every column's range; the measurement is judged, never a failed pass."""
    m = orjson.loads(lab_lines()[0])
    m["test_runtime"], m["test_keys"]["msgwatch_dropped_events"] = 4242.25, 424242
    line = orjson.dumps(m).replace(b"4242.25", b"9" * 30).replace(b"424242", b"9" * 400)
    value = parse(line)
    assert value["test_runtime"] == int("9" * 30)
    assert value["test_keys"]["msgwatch_dropped_events"] == int("9" * 400)
    _, verdicts, skipped = rows(value)
    assert verdicts and skipped is None


def test_an_integer_beyond_a_double_where_the_judge_reads_a_number_is_a_judge_failure() -> None:
    m = orjson.loads(lab_lines()[0])
    m["test_keys"]["msgwatch_probe_lag"]["stalls"] = [[424242, 1.0]]
    out = transform(parse(orjson.dumps(m).replace(b"424242", b"9" * 400)), Meta("lab:1", "u1"))
    assert out.problem == "judge_failed:OverflowError" and not out.verdicts


def _never(value: Any) -> Any:
    raise AssertionError("the network events were loaded")


def test_the_helper_api_fact_reads_the_events_only_when_every_call_failed() -> None:
    from msgwatch.analysis.verdicts.calls import _api

    untouched = {DEFERRED_KEY: Deferred(b"[]", _never)}
    assert _api([], untouched) == "none"
    ok, failed = {"transaction_id": 4, "failure": None}, {"transaction_id": 5, "failure": "x"}
    assert _api([failed, ok], untouched) == "ok"
    events = b'[{"transaction_id": 5, "operation": "write"}]'
    assert _api([failed], {DEFERRED_KEY: Deferred(events)}) == "failed"
    assert _api([failed], {DEFERRED_KEY: Deferred(b'[{"transaction_id": 6}]')}) == "none"
    assert _api([failed], {}) == "none"


@pytest.mark.parametrize("events", [50, 3000])
def test_the_judges_budget_counts_deferred_events_as_it_counts_loaded_ones(events: int) -> None:
    m = orjson.loads(lab_lines()[0])
    keys = m["test_keys"]
    keys["msgwatch_targets"] = (keys["msgwatch_targets"] * 200)[:200]
    keys["network_events"] = (keys["network_events"] * 100)[:events]
    line = orjson.dumps(m)
    value = parse(line)
    assert isinstance(value["test_keys"][DEFERRED_KEY], Deferred)
    meta = Meta("lab:1", "u1")
    deferred, whole = transform(value, meta), transform(orjson.loads(line), meta)
    assert (deferred.problem, deferred.skipped) == (whole.problem, whole.skipped)
    assert (deferred.observations, deferred.verdicts) == (whole.observations, whole.verdicts)
    assert (whole.problem == "judge_skipped:too_large") is (events == 3000)

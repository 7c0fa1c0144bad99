"""msgwatch.measurement.validate: the one validator, on real data, on broken data, on hostile data."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.measurement import model
from msgwatch.measurement.validate import MAX_PROBLEMS, check, extra_keys, validate
from tests.measurement.samples import current, demo, ooni


def test_a_complete_current_measurement_is_valid_and_has_no_unknown_keys() -> None:
    m = current()
    assert validate(m) == []
    assert extra_keys(m) == []


def test_the_committed_demo_run_is_valid() -> None:
    assert [p for m in demo() for p in validate(m)] == []


def test_every_ooni_sample_is_valid() -> None:
    problems = {i: validate(m) for i, m in enumerate(ooni())}
    assert {i: p for i, p in problems.items() if p} == {}


def test_verdicts_are_optional_and_checked_when_present() -> None:
    m = current()
    assert "msgwatch_verdicts" not in m["test_keys"]
    old = demo()[4]["test_keys"]["msgwatch_verdicts"]  # the run current() is made of
    m["test_keys"]["msgwatch_verdicts"] = old
    assert validate(m) == []
    m["test_keys"]["msgwatch_verdicts"] = [dict(old[0], verdict="pwned")]
    assert validate(m) == [
        "test_keys.msgwatch_verdicts[0].verdict: 'pwned' is not one of 'ok', 'blocked', "
        "'inconclusive', 'throttled', 'degraded', 'not_measured'"
    ]


def _broken(path: str, value: Any) -> list[str]:
    """Problems of the current measurement with ``path`` (dotted, [n] for list items) set."""
    m = current()
    *parents, last = path.replace("[", ".[").split(".")
    node: Any = m
    for part in parents:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return validate(m)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("test_keys.msgwatch_replays[0].role", "replay_sideways", "msgwatch_replays[0].role"),
        ("test_keys.msgwatch_replays[0].loss", "high", "msgwatch_replays[0].loss: a string"),
        ("test_keys.msgwatch_replays[0].intervals", [{"t": 0}], "missing test_keys.msgwatch_replays[0].intervals[0].tx_packets"),
        ("test_keys.msgwatch_replays[0].helper", {"rx_packets": True}, "helper.rx_packets: a boolean"),
        ("test_keys.msgwatch_replays[0].probe", {"cut": "no"}, "probe.cut: a string"),
        ("test_keys.msgwatch_replays[0].failure", "it_broke", "is not a failure string"),
        ("test_keys.msgwatch_replays[0].t0", 5.0, "times t0=5.0 t=3.0"),
        ("test_keys.msgwatch_helper_views[0].results", {"kind": "stun"}, "msgwatch_helper_views[0].results: an object, not a list"),
        ("test_keys.msgwatch_helper_views[0].failure", 3, "msgwatch_helper_views[0].failure: an integer"),
        ("test_keys.msgwatch_throughput[0].control", "yes", "msgwatch_throughput[0].control: a string"),
        ("test_keys.msgwatch_throughput[0].kbit_s", KeyError, "missing test_keys.msgwatch_throughput[0].kbit_s"),
        ("test_keys.msgwatch_app_handshakes[0].protocol", "xmpp", "msgwatch_app_handshakes[0].protocol"),
        ("test_keys.msgwatch_targets[0].attempt", KeyError, "missing test_keys.msgwatch_targets[0].attempt"),
        ("test_keys.msgwatch_targets[0].not_measured", "bored", "not_measured"),
        ("test_keys.msgwatch_targets[0].failed_step", "lunch", "failed_step"),
        ("test_keys.msgwatch_functions[0].function", "fax", "msgwatch_functions[0].function"),
        ("test_keys.msgwatch_probe_lag", KeyError, "missing test_keys.msgwatch_probe_lag"),
        ("test_keys.msgwatch_udp_exchanges[0].responses", [{"class": "weird"}], "responses[0].class: 'weird'"),
        ("test_keys.tcp_connect[0].status.failure", "nope", "status.failure: 'nope' is not a failure string"),
        ("test_keys.requests[0].response.body_is_truncated", KeyError, "body_is_truncated"),
        ("test_keys.msgwatch_service", "telegram", "input differs from test_keys.msgwatch_service"),
        ("probe_ip", "203.0.113.9", "probe_ip: '203.0.113.9' is not"),
        ("probe_asn", "12345", "probe_asn: '12345' is not AS<n>"),
        ("measurement_start_time", "2026-11-24T10:32:25Z", "measurement_start_time"),
        ("data_format_version", "0.3.0", "data_format_version"),
        ("input", KeyError, "missing input"),
        ("test_keys", None, "test_keys: null, not an object"),
    ],
)  # fmt: skip
def test_each_departure_is_named(path: str, value: Any, problem: str) -> None:
    problems = _broken(path, value)
    assert any(problem in p for p in problems), problems


def test_other_versions_are_checked_for_types_not_completeness() -> None:
    m = current()
    m["test_version"] = "0.1.0"
    del m["test_keys"]["msgwatch_targets"]
    del m["input"]
    assert validate(m) == []
    m["test_keys"]["msgwatch_replays"][0]["loss"] = "high"
    assert validate(m) == ["test_keys.msgwatch_replays[0].loss: a string, not a number"]


@pytest.mark.parametrize("failure", ["unknown_failure", "unknown_failure boom [scrubbed]",
                                     "dns_server_failure_notimp", "helper_status_404",
                                     "mtproto_nonce_mismatch", "budget_exceeded"])  # fmt: skip
def test_failure_strings_of_every_home(failure: str) -> None:
    assert _broken("test_keys.msgwatch_replays[0].failure", failure) == []


NASTY: list[Any] = [
    None, True, 0, -1, 2**80, 1.5e308, "", "x" * 100_000, "\x00\ud800", [], {}, [[[[[]]]]],
    {"": None}, {"test_name": None}, {"test_name": "msgwatch_service"},
    {"test_name": "msgwatch_service", "test_keys": []},
    {"test_name": ["msgwatch_service"], "test_keys": {}},
    {"test_name": "msgwatch_service", "test_version": {"a": 1}, "test_keys": {"queries": {}}},
    {"test_name": "msgwatch_service", "test_version": "0.3.0", "test_keys": "x"},
    {"test_name": "whatsapp", "test_keys": {"whatsapp_endpoints_status": [1, 2]}},
]  # fmt: skip


def _mutants() -> list[Any]:
    """The current measurement with every value, in turn, replaced by nasty ones."""
    out: list[Any] = []
    base = current()

    def walk(node: Any, path: list[Any]) -> None:
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))[:2]
        for key, child in items:
            for nasty in (None, {"t": [None]}):
                m = copy.deepcopy(base)
                target: Any = m
                for step in path:
                    target = target[step]
                target[key] = nasty
                out.append(m)
            if isinstance(child, dict | list) and len(path) < 5:
                walk(child, [*path, key])

    walk(base, [])
    return out


@pytest.mark.parametrize("value", NASTY, ids=range(len(NASTY)))
def test_never_raises_on_nasty_values(value: Any) -> None:
    problems = validate(value)
    assert isinstance(problems, list)
    assert all(isinstance(p, str) and len(p) <= 300 for p in problems)


def test_never_raises_and_stays_bounded_on_mutants() -> None:
    mutants = _mutants()
    assert len(mutants) > 200
    for m in mutants:
        problems = validate(m)
        assert len(problems) <= MAX_PROBLEMS
        assert not any(p.startswith("validator error") for p in problems), problems


def test_a_hostile_measurement_gets_a_bounded_answer() -> None:
    m = current()
    m["test_keys"]["network_events"] = [{"t": "x" * 10_000}] * 100_000
    problems = validate(m)
    assert len(problems) == MAX_PROBLEMS
    assert len(json.dumps(problems)) < MAX_PROBLEMS * 300
    assert all("x" * 41 not in p for p in problems)  # input is never echoed long


def test_validation_does_not_change_the_measurement() -> None:
    m = current()
    before = copy.deepcopy(m)
    validate(m)
    assert m == before


def test_the_analysis_verdicts_are_verdict_records() -> None:
    """The spec's "Verdicts" as the judge writes them: every key, of its type, no other."""
    verdicts = judge(current())
    assert len(verdicts) == len(current()["test_keys"]["msgwatch_functions"])
    assert check(verdicts, list[model.VerdictRecord], "verdicts") == []
    assert {key for v in verdicts for key in v} == set(model.VerdictRecord.__annotations__)
    assert check([{"verdict": "ok"}], list[model.VerdictRecord])[0] == "missing [0].service"

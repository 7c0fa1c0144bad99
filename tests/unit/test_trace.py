"""The trace: archival records, bounded lists, increasing ids, times from a monotonic clock."""

from __future__ import annotations

import pytest

from msgwatch.steps.trace import Trace, TraceLimits, b64, encode_bytes


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def test_times_are_seconds_since_the_start_to_the_microsecond() -> None:
    clock = FakeClock()
    trace = Trace(clock=clock)
    assert trace.now() == 0.0
    clock.advance(0.1234567)
    t0 = trace.now()
    assert t0 == 0.123457
    clock.advance(0.5)
    trace.event("connect", txid=1, t0=t0, address="127.0.0.1:443", proto="tcp")
    assert trace.network_events == [
        {
            "operation": "connect",
            "t0": 0.123457,
            "t": 0.623457,
            "transaction_id": 1,
            "address": "127.0.0.1:443",
            "proto": "tcp",
            "failure": None,
        }
    ]


def test_times_are_monotonic_with_the_real_clock() -> None:
    trace = Trace()
    for i in range(50):
        trace.event("write", txid=1, t0=trace.now(), num_bytes=i)
    times = [(e["t0"], e["t"]) for e in trace.network_events]
    assert all(t0 <= t for t0, t in times)
    assert [t for _, t in times] == sorted(t for _, t in times)


def test_transaction_ids_increase_from_one() -> None:
    trace = Trace()
    assert [trace.new_transaction() for _ in range(4)] == [1, 2, 3, 4]
    assert Trace().new_transaction() == 1  # per measurement, not global


def test_event_keeps_only_the_keys_given() -> None:
    trace = Trace(clock=FakeClock())
    trace.event("tls_handshake_start", txid=2, t0=0.0)
    trace.event("read", txid=2, t0=0.0, num_bytes=0, failure="eof_error")
    assert trace.network_events == [
        {"operation": "tls_handshake_start", "t0": 0.0, "t": 0.0, "transaction_id": 2,
         "failure": None},
        {"operation": "read", "t0": 0.0, "t": 0.0, "transaction_id": 2, "num_bytes": 0,
         "failure": "eof_error"},
    ]  # fmt: skip


def test_lists_are_bounded_and_the_rest_counted() -> None:
    trace = Trace(limits=TraceLimits(max_records=3))
    for i in range(5):
        trace.event("write", txid=1, t0=0.0, num_bytes=i)
    for i in range(4):
        trace.query({"n": i})
        trace.request({"n": i})
    trace.tcp(txid=1, t0=0.0, ip="127.0.0.1", port=1, failure=None)
    assert [e["num_bytes"] for e in trace.network_events] == [0, 1, 2]  # the first ones are kept
    assert [q["n"] for q in trace.queries] == [0, 1, 2]
    assert [r["n"] for r in trace.requests] == [2, 1, 0]  # most recent first, the 4th dropped
    assert len(trace.tcp_connect) == 1
    assert trace.dropped == 2 + 1 + 1
    assert trace.test_keys()["msgwatch_dropped_events"] == 4


def test_tcp_record_is_df005() -> None:
    trace = Trace(clock=FakeClock())
    trace.tcp(txid=3, t0=0.0, ip="127.0.0.1", port=443, failure="connection_refused")
    assert trace.tcp_connect == [
        {
            "ip": "127.0.0.1",
            "port": 443,
            "status": {"success": False, "failure": "connection_refused", "blocked": None},
            "t0": 0.0,
            "t": 0.0,
            "transaction_id": 3,
        }
    ]


def test_test_keys_are_copies() -> None:
    trace = Trace()
    keys = trace.test_keys()
    assert sorted(keys) == [
        "msgwatch_app_handshakes",
        "msgwatch_bytes",
        "msgwatch_dropped_events",
        "msgwatch_helper_views",
        "msgwatch_replays",
        "msgwatch_throughput",
        "msgwatch_udp_exchanges",
        "network_events",
        "queries",
        "requests",
        "tcp_connect",
        "tls_handshakes",
    ]
    keys["queries"].append({"x": 1})
    assert trace.queries == []


def test_probe_addresses_exclude_loopback_and_keep_the_rest() -> None:
    trace = Trace()
    for address in ("127.0.0.1", "::1", "0.0.0.0", "::", "", None, "not-an-ip", "127.8.9.10"):
        trace.note_probe_address(address)
    assert trace.probe_addresses == set()
    trace.note_probe_address("198.51.100.7")
    trace.note_probe_address("fe80::1%eth0")
    trace.note_probe_address("2001:DB8::1")
    assert trace.probe_addresses == {"198.51.100.7", "fe80::1", "2001:db8::1"}


def test_bodies_are_text_or_base64() -> None:
    assert encode_bytes("héllo".encode()) == "héllo"
    assert encode_bytes(b"\xff\x00") == {"format": "base64", "data": "/wA="}
    assert b64(b"abc") == {"format": "base64", "data": "YWJj"}


def test_budget_refuses_to_send_past_the_limit_and_counts_both_ways() -> None:
    from msgwatch.failures import ProbeFailure
    from msgwatch.steps.trace import Budget

    budget = Budget(limit=100)
    first, second = Trace(budget=budget), Trace(budget=budget)
    first.spend(40)
    second.received(50)
    with pytest.raises(ProbeFailure) as info:
        second.spend(20)
    assert info.value.failure == "budget_exceeded"
    second.spend(10)
    assert (budget.sent, budget.received) == (50, 50)
    assert first.test_keys()["msgwatch_bytes"] == {"sent": 40, "received": 0}
    assert second.test_keys()["msgwatch_bytes"] == {"sent": 10, "received": 50}

"""Budgets and per-flow counters, with time passed in (no clock, no sockets)."""

from __future__ import annotations

from msgwatch.helper.flows import OVER_LIMITS, SEND_BUFFER_FULL, SOURCE_PORT, FlowTable
from msgwatch.helper.limits import Bucket, CallLimits, Limits


def test_bucket_refills_continuously() -> None:
    bucket = Bucket(100.0, 10.0)
    assert bucket.take(100, 0.0)
    assert not bucket.take(1, 0.0)
    assert bucket.take(5, 0.5)  # 5 tokens earned in 0.5 s
    assert not bucket.take(1, 0.5)
    assert bucket.refill(1000.0) == 100.0  # never above capacity


def test_byte_budget_per_client() -> None:
    limits = Limits(budget_bytes=1000, rate_pps=10_000)
    sent = sum(limits.allow_send("192.0.2.1", 100, 0.0) for _ in range(20))
    assert sent == 10
    assert limits.counters.over_bytes == 10
    assert limits.allow_send("192.0.2.2", 100, 0.0)  # another client has its own budget
    assert not limits.allow_send("192.0.2.1", 100, 1.0)  # 1000/60 B earned in a second
    assert limits.allow_send("192.0.2.1", 100, 6.0)


def test_a_refused_send_costs_nothing() -> None:
    limits = Limits(budget_bytes=1000, rate_pps=10_000)
    assert not limits.allow_send("c", 1001, 0.0)
    assert limits.allow_send("c", 1000, 0.0)


def test_packet_rate_per_client() -> None:
    limits = Limits(budget_bytes=10**9, rate_pps=50)
    assert sum(limits.allow_send("c", 10, 0.0) for _ in range(200)) == 50
    assert limits.counters.over_packets == 150
    assert sum(limits.allow_send("c", 10, 0.1) for _ in range(200)) == 5
    assert limits.allow_send("c", 10**6, 0.1, packet=False)  # TCP bytes take no packet tokens


def test_global_budget_spans_clients() -> None:
    limits = Limits(budget_bytes=1000, rate_pps=10_000, global_budget_bytes=3000)
    sent = sum(limits.allow_send(f"198.51.100.{i}", 500, 0.0) for i in range(20))
    assert sent == 6
    assert limits.counters.over_global == 14


def test_client_table_is_bounded_and_drops_logged_once() -> None:
    limits = Limits(budget_bytes=100, rate_pps=10, max_clients=3)
    for i in range(10):
        limits.allow_send(f"c{i}", 1, 0.0)
    assert limits.clients == 3
    assert not limits.allow_send("c9", 1000, 0.0)
    assert limits.newly_dropping("c9")
    assert not limits.newly_dropping("c9")
    assert limits.allow_send("c9", 1, 0.0)
    assert not limits.allow_send("c9", 1000, 0.0)
    assert limits.newly_dropping("c9")  # again after an allowed send


def test_call_limits() -> None:
    calls = CallLimits({"measure": 10})
    assert sum(calls.allow("c", "measure", 0.0) for _ in range(15)) == 10
    assert calls.allow("c", "health", 0.0)  # no limit for unnamed kinds
    assert calls.allow("other", "measure", 0.0)
    assert not calls.allow("c", "measure", 5.0)
    assert calls.allow("c", "measure", 6.1)  # one call every 6 s
    assert calls.retry_after("measure") == 6
    assert calls.counters.over_calls == 6


KEY = ("192.0.2.7", 50000, 3478)


def test_flow_intervals_of_100_ms() -> None:
    table = FlowTable()
    for t in (10.00, 10.01, 10.09):
        table.received(KEY, 100, t)
        table.sent(KEY, 100, t + 0.001)
    table.received(KEY, 60, 10.25)  # interval 2 (10.2-10.3); interval 1 had nothing
    view = table.view(KEY, now=11.0, wall_now=1000.0)
    assert view is not None
    assert view["intervals"] == [
        {"t": 0.0, "rx_packets": 3, "rx_bytes": 300, "tx_packets": 3, "tx_bytes": 300},
        {"t": 0.2, "rx_packets": 1, "rx_bytes": 60, "tx_packets": 0, "tx_bytes": 0},
    ]
    assert view["first_seen"] == 999.0 and view["last_seen"] == 999.25
    assert view["totals"] == {"rx_packets": 4, "rx_bytes": 360, "tx_packets": 3, "tx_bytes": 300}
    assert view["interval"] == 0.1 and view["truncated"] is False
    assert view["declined"] == {
        "over_limits": 0,
        "send_buffer_full": 0,
        "source_port": 0,
        "own_reply": 0,
    }
    assert table.view(("192.0.2.8", 50000, 3478), 11.0, 1000.0) is None


def test_declines_are_counted_per_flow_and_reason_as_totals() -> None:
    table = FlowTable()
    other = ("192.0.2.7", 50001, 3478)
    for i, reason in enumerate([OVER_LIMITS] * 3 + [SEND_BUFFER_FULL] * 2):
        table.received(KEY, 100, 1.0 + i * 0.05)
        table.declined(KEY, reason)
    table.received(KEY, 100, 1.3)
    table.sent(KEY, 100, 1.3)
    table.received(other, 10, 1.0)
    table.declined(other, SOURCE_PORT)
    view = table.view(KEY, 2.0, 0.0)
    assert view is not None
    assert view["declined"] == {
        "over_limits": 3,
        "send_buffer_full": 2,
        "source_port": 0,
        "own_reply": 0,
    }
    # Every datagram received is answered or declined: the counts add up.
    totals = view["totals"]
    assert totals["rx_packets"] == totals["tx_packets"] + sum(view["declined"].values()) == 6
    assert all(set(row) == {"t", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes"}
               for row in view["intervals"])  # totals only: nothing per interval  # fmt: skip
    other_view = table.view(other, 2.0, 0.0)
    assert other_view is not None
    assert other_view["declined"] == {
        "over_limits": 0,
        "send_buffer_full": 0,
        "source_port": 1,
        "own_reply": 0,
    }
    # A decline for a flow the table does not hold makes no flow (and no unbounded growth).
    table.declined(("192.0.2.9", 1, 3478), OVER_LIMITS)
    assert len(table) == 2 and table.view(("192.0.2.9", 1, 3478), 2.0, 0.0) is None
    # A flow that expired starts again from zero declines, like its totals.
    table.received(KEY, 100, 200.0)
    view = table.view(KEY, 200.0, 0.0)
    assert view is not None and view["totals"]["rx_packets"] == 1
    assert view["declined"] == {
        "over_limits": 0,
        "send_buffer_full": 0,
        "source_port": 0,
        "own_reply": 0,
    }


def test_flows_expire_and_restart() -> None:
    table = FlowTable(expire=120.0)
    table.received(KEY, 10, 0.0)
    assert table.view(KEY, 119.0, 0.0) is not None
    assert table.view(KEY, 121.0, 0.0) is None
    table.received(KEY, 10, 200.0)  # a new flow, anchored anew
    view = table.view(KEY, 200.0, 0.0)
    assert view is not None and view["totals"]["rx_packets"] == 1
    assert table.expire_idle(400.0) == 1 and len(table) == 0 and table.intervals == 0


def test_flow_table_bounds() -> None:
    table = FlowTable(max_flows=10, max_intervals=40, max_total_intervals=100)
    for port in range(50):
        table.received(("192.0.2.1", port + 1, 3478), 1, 0.0)
    assert len(table) == 10 and table.evicted == 40
    assert table.view(("192.0.2.1", 50, 3478), 0.0, 0.0) is not None  # the newest stay
    assert table.view(("192.0.2.1", 1, 3478), 0.0, 0.0) is None
    for i in range(100):  # one flow, 100 intervals: trimmed to at most 40
        table.received(KEY, 1, 1.0 + i * 0.1)
    view = table.view(KEY, 12.0, 0.0)
    assert view is not None and 30 <= len(view["intervals"]) <= 40 and view["truncated"]
    assert view["totals"]["rx_packets"] == 100  # totals include trimmed intervals
    assert table.intervals <= 100

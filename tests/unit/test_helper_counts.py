"""The helper's counts of a flow as the probe keeps them (``steps.control``): checked, bounded,
``declined`` included when the helper says it, accepted without it from an older helper."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from msgwatch.steps.control import MAX_FLOW_INTERVALS, _counts, helper_flows
from msgwatch.steps.trace import Trace
from tests.helper.util import UDPClient, config, running

ROW = {"t": 0.0, "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 7, "tx_bytes": 700}
ANSWER: dict[str, Any] = {
    "interval": 0.1, "first_seen": 1.0, "last_seen": 2.0, "intervals": [ROW],
    "totals": {"rx_packets": 10, "rx_bytes": 1000, "tx_packets": 7, "tx_bytes": 700},
    "declined": {"over_limits": 2, "send_buffer_full": 1, "source_port": 0},
    "truncated": False, "stalls": {"count": 1, "seconds": 0.3, "longest": 0.3},
}  # fmt: skip


def _with(**changes: Any) -> dict[str, Any]:
    answer = copy.deepcopy(ANSWER)
    answer.update(changes)
    return answer


def test_counts_keep_the_declines() -> None:
    counts = _counts(copy.deepcopy(ANSWER))
    assert counts == {
        "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 7, "tx_bytes": 700,
        "declined": {"over_limits": 2, "send_buffer_full": 1, "source_port": 0},
        "stalls": {"count": 1, "seconds": 0.3, "longest": 0.3},
        "interval": 0.1, "intervals": [ROW], "truncated": False,
    }  # fmt: skip


def test_an_older_helper_without_declines_is_accepted() -> None:
    older = _with()
    del older["declined"]
    counts = _counts(older)
    assert counts is not None and counts["declined"] is None and counts["tx_packets"] == 7
    counts = _counts(_with(declined=None))
    assert counts is not None and counts["declined"] is None


def test_reasons_the_probe_does_not_know_are_dropped() -> None:
    declined = {"over_limits": 0, "send_buffer_full": 0, "source_port": 3, "x" * 1000: 5}
    counts = _counts(_with(declined=declined))
    assert counts is not None
    assert counts["declined"] == {"over_limits": 0, "send_buffer_full": 0, "source_port": 3}


@pytest.mark.parametrize(
    "declined",
    [
        [1, 2, 3],
        "over_limits",
        7,
        {},
        {"over_limits": 1, "send_buffer_full": 0},  # a reason missing
        {"over_limits": -1, "send_buffer_full": 0, "source_port": 0},
        {"over_limits": 1.5, "send_buffer_full": 0, "source_port": 0},
        {"over_limits": "1", "send_buffer_full": 0, "source_port": 0},
        {"over_limits": True, "send_buffer_full": 0, "source_port": 0},
        {"over_limits": None, "send_buffer_full": 0, "source_port": 0},
        {"over_limits": 2**64, "send_buffer_full": 0, "source_port": 0},
        {"over_limits": {"n": 1}, "send_buffer_full": 0, "source_port": 0},
    ],
)
def test_malformed_declines_make_the_answer_invalid(declined: Any) -> None:
    assert _counts(_with(declined=declined)) is None


def test_an_older_helper_without_stalls_is_accepted() -> None:
    older = _with()
    del older["stalls"]
    counts = _counts(older)
    assert counts is not None and counts["stalls"] is None and counts["rx_packets"] == 10
    counts = _counts(_with(stalls={"count": 0, "seconds": 0, "longest": 0}))
    assert counts is not None and counts["stalls"] == {"count": 0, "seconds": 0.0, "longest": 0.0}


@pytest.mark.parametrize(
    "stalls",
    [
        [1, 0.3, 0.3],
        {"count": 1, "seconds": 0.3},  # a figure missing
        {"count": -1, "seconds": 0.3, "longest": 0.3},
        {"count": True, "seconds": 0.3, "longest": 0.3},
        {"count": 1.0, "seconds": 0.3, "longest": 0.3},
        {"count": 1, "seconds": -0.1, "longest": 0.3},
        {"count": 1, "seconds": float("nan"), "longest": 0.3},
        {"count": 1, "seconds": 0.3, "longest": float("inf")},
        {"count": 1, "seconds": 0.3, "longest": 1e9},
        {"count": 1, "seconds": "0.3", "longest": 0.3},
        {"count": 1, "seconds": 0.3, "longest": False},
    ],
)
def test_malformed_stalls_make_the_answer_invalid(stalls: Any) -> None:
    assert _counts(_with(stalls=stalls)) is None


def test_the_rest_is_still_checked_and_bounded() -> None:
    assert _counts([ANSWER]) is None
    assert _counts(_with(totals={"rx_packets": -1, "rx_bytes": 0, "tx_packets": 0,
                                 "tx_bytes": 0})) is None  # fmt: skip
    many = _counts(_with(intervals=[ROW] * (MAX_FLOW_INTERVALS + 5)))
    assert many is not None and len(many["intervals"]) == MAX_FLOW_INTERVALS and many["truncated"]


def test_helper_flows_brings_the_helpers_declines() -> None:
    """Against the real helper on loopback: a client over its budget, a flow the helper never saw."""

    async def scenario() -> None:
        async with running(config(budget_bytes=2_000)) as helper:
            target, control = helper.bound["udp"][0], helper.bound["control"][0]
            client = await UDPClient.open(target, source="127.0.0.1")
            for i in range(20):  # distinct: the helper declines a third copy as an echo's
                client.send(bytes([i]) + b"d" * 499)
                await asyncio.sleep(0)
            await client.wait_for(20, timeout=0.3)
            trace = Trace()
            loop = asyncio.get_running_loop()
            flows = [(client.port, target[1]), (client.port + 1, target[1])]
            counts, failure = await helper_flows(trace, trace.new_transaction(), control[0],
                                                 flows, loop.time() + 5, port=control[1])  # fmt: skip
            client.close()
            assert failure is None
            mine, unseen = counts
            assert unseen is None  # 404: nothing from that port
            assert mine is not None and mine["rx_packets"] == 20
            assert 3 <= mine["tx_packets"] <= 5  # 2 kB of 10 kB
            assert mine["declined"] == {"over_limits": 20 - mine["tx_packets"],
                                        "send_buffer_full": 0, "source_port": 0}  # fmt: skip

    asyncio.run(scenario())


def test_helper_flows_brings_the_helpers_own_stalls() -> None:
    """Against the real helper on loopback, in this test's own event loop: datagrams sent while
    that loop is blocked wait, are echoed late, and their flow's view says the helper stalled; a
    flow that ended long before the stall does not carry it."""

    async def scenario() -> None:
        async with running(config()) as helper:
            target, control = helper.bound["udp"][0], helper.bound["control"][0]
            early = await UDPClient.open(target, source="127.0.0.1")
            for i in range(5):
                early.send(bytes([i]) * 100)
            await early.wait_for(5, timeout=2.0)
            await asyncio.sleep(1.5)  # past the longest shadow of the stall below
            late = await UDPClient.open(target, source="127.0.0.1")
            for i in range(5):
                late.send(bytes([i]) * 100)
            time.sleep(0.6)  # the helper's loop (this one) stops: the datagrams wait
            await late.wait_for(5, timeout=2.0)
            trace = Trace()
            loop = asyncio.get_running_loop()
            flows = [(early.port, target[1]), (late.port, target[1])]
            counts, failure = await helper_flows(trace, trace.new_transaction(), control[0],
                                                 flows, loop.time() + 5, port=control[1])  # fmt: skip
            early.close()
            late.close()
            assert failure is None
            before, during = counts
            # (a busy machine may stall the loop a little at any time: never for half a second)
            assert before is not None and before["stalls"]["longest"] < 0.5
            assert during is not None and during["stalls"]["count"] >= 1
            assert 0.5 <= during["stalls"]["longest"] <= during["stalls"]["seconds"]

    asyncio.run(scenario())

"""The downstream replay step against a real test helper in this process (loopback only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from msgwatch.helper.server import Helper
from msgwatch.probe.calls import stun_framed
from msgwatch.steps.control import HelperLink
from msgwatch.steps.downstream import downstream
from msgwatch.steps.replay import ReplayOptions, ReplayResult
from msgwatch.steps.trace import Budget, Trace
from msgwatch.wire.calltraffic import Marker
from msgwatch.wire.helper_api import FlowView, Schedule, schedule
from msgwatch.wire.packets import STUN_COOKIE_BYTES
from tests.helper.util import running
from tests.unit.servers import deadline

SECONDS = 0.4


class _Lossy:
    """A transport that loses the datagrams ``drop`` picks (a censor on the way down)."""

    def __init__(self, real: Any, drop: Callable[[bytes], bool]) -> None:
        self.real, self.drop = real, drop

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self.drop(data):
            self.real.sendto(data, addr)

    def is_closing(self) -> bool:
        return bool(self.real.is_closing())


def _run(
    censor: Callable[[Helper], None] | None = None,
    trace: Trace | None = None,
    control: bool = True,
    marker: Marker | None = "whatsapp",
) -> tuple[Trace, ReplayResult, FlowView | None]:
    trace = trace or Trace()

    async def scenario() -> tuple[ReplayResult, FlowView | None]:
        async with running() as helper:
            if censor is not None:
                censor(helper)
            port = helper.bound["udp"][0][1]
            control_port = helper.bound["control"][0][1] if control else 9
            link = HelperLink("127.0.0.1", control_port)
            marked = stun_framed(schedule("voice", "original", SECONDS, 3, "whatsapp"))
            plan = Schedule("voice", "original", SECONDS, 3, marker)
            options = ReplayOptions(label={"role": "replay_down_original"}, marked=marked)
            result = await downstream(trace, 5, link, port, plan, deadline(3.0), options)
            flow = helper.flows.view(("127.0.0.1", result.local_port or 0, port), 0, 0)
            return result, flow

    result, flow = asyncio.run(scenario())
    return trace, result, flow


def test_the_helpers_schedule_arrives_and_is_counted() -> None:
    trace, result, flow = _run()
    expected = schedule("voice", "original", SECONDS, 3, "whatsapp")
    assert result.failure is None
    assert result.sent_packets == result.received_packets == len(expected)
    assert result.sent_bytes == result.received_bytes == sum(len(p.payload) for p in expected)
    record = result.record
    assert record["direction"] == "down" and record["role"] == "replay_down_original"
    assert record["send"]["packets"] == len(expected) and record["send_failure"] is None
    assert record["marked_sent"] == record["marked_received"] > 0
    assert sum(r["tx_packets"] for r in record["intervals"]) == len(expected)
    assert sum(r["rx_packets"] for r in record["intervals"]) == len(expected)
    assert trace.replays == [record]
    # The helper's side: three pinholes received (echoed before the send began), the schedule sent.
    assert flow is not None and flow["totals"]["rx_packets"] == 3
    assert flow["originated"]["tx_packets"] == len(expected)
    # Received bytes count against the run's budget.
    assert trace.budget.received >= result.received_bytes


def test_what_is_lost_on_the_way_down() -> None:
    def censor(helper: Helper) -> None:
        for endpoint in helper.udp.endpoints.values():
            lossy = _Lossy(endpoint.transport, lambda d: d[4:8] == STUN_COOKIE_BYTES)
            endpoint.transport = cast(asyncio.DatagramTransport, lossy)

    _, result, flow = _run(censor)
    record = result.record
    assert record["marked_sent"] > 0 and record["marked_received"] == 0
    assert result.received_packets == result.sent_packets - record["marked_sent"]
    assert flow is not None and flow["originated"]["tx_packets"] == result.sent_packets


def test_no_control_api_no_send() -> None:
    _, result, _ = _run(control=False)
    assert result.failure == "connection_refused" == result.record["send_failure"]
    assert result.sent_packets == result.received_packets == 0
    assert result.record["send"] is None


def test_the_budget_is_checked_before_asking() -> None:
    _, result, flow = _run(trace=Trace(budget=Budget(limit=1000)))
    assert result.failure == "budget_exceeded"
    assert result.sent_packets == 0 and flow is None  # not even a pinhole went out

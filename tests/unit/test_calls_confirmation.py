"""The confirmation run: an unclear original-against-control comparison is replayed once more."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from msgwatch.catalogue.loader import FunctionTargets, Service
from msgwatch.catalogue.schema import Source
from msgwatch.probe.calls import run_replays, unclear
from msgwatch.probe.steps.replay import ReplayResult
from msgwatch.probe.trace import Trace
from tests.unit.servers import Reply, deadline, udp_server


def _result(rx: list[int], sent: int = 50, got: int = 50) -> ReplayResult:
    return ReplayResult(sent_packets=sent, received_packets=got,
                        intervals=[{"rx_bytes": b} for b in rx])  # fmt: skip


def test_unclear_when_the_area_crosses_but_ks_cannot_confirm() -> None:
    # Three intervals each: a tenfold gap, too few samples for KS to be significant.
    assert unclear(_result([100, 100, 100]), _result([1000, 1000, 1000]))
    # Five intervals: KS confirms; clear differentiation, no confirmation needed.
    assert not unclear(_result([100] * 5), _result([1000] * 5))
    assert not unclear(_result([1000] * 10), _result([1000] * 10))
    assert not unclear(_result([], sent=0, got=0), _result([1000] * 10))


def _service(port: int) -> tuple[Service, FunctionTargets]:
    source = Source(id="doc", title="t", url="https://example.org/", checked=dt.date(2026, 11, 24))
    function = FunctionTargets("voice", "any_of", (), "", "full", (port,), "doc")
    service = Service("svc", "Svc", "svc.toml", "", "", None, None, (source,), (), (function,))
    return service, function


def test_a_clear_comparison_is_not_replayed_again() -> None:
    def echo(data: bytes, reply: Reply) -> None:
        reply(data)

    trace = Trace()

    async def scenario() -> list[Any]:
        async with udp_server(echo) as server:
            service, function = _service(server.port)
            return await run_replays(trace, service, function, server.ip, 0.3, 7, deadline(5.0))

    done = asyncio.run(scenario())
    roles = sorted(role for role, _ in done)
    assert roles == ["replay_control", "replay_neutral", "replay_original"]
    assert {r["attempt"] for r in trace.replays} == {1}

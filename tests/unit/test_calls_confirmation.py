"""Rounds and confirmation: what is replayed, in which order, and how the rounds are compared."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from msgwatch.analysis.rounds import compare_rounds
from msgwatch.catalogue.loader import FunctionTargets, Service
from msgwatch.catalogue.schema import Source
from msgwatch.probe.calls import plans, run_replays, unclear
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from tests.unit.servers import Reply, deadline, udp_server


def _service(*ports: int, name: str = "voice", sid: str = "svc") -> tuple[Service, FunctionTargets]:
    source = Source(id="doc", title="t", url="https://example.org/", checked=dt.date(2026, 11, 24))
    function = FunctionTargets(name, "any_of", (), "", "full", ports, "doc")
    service = Service(sid, "Svc", "svc.toml", "", "", None, None, (source,), (), (function,))
    return service, function


def test_the_plan_rounds_plain_echoes_and_order() -> None:
    service, function = _service(3478, 3480, 3478, sid="whatsapp")
    chosen = plans(service, function, 1.5, 7, domestic=True, neutral_port=40000)
    pairs = [p for p in chosen if p.round is not None]
    assert sorted(p.slot for p in pairs if p.slot is not None) == list(range(6))
    for number in (1, 2, 3):
        original, control = (
            next(p for p in pairs if p.round == number and p.role == role)
            for role in ("replay_original", "replay_control")
        )
        # Identical sizes and timing, bit-inverted payload, one replay a third of the length.
        assert [(p.offset, len(p.payload)) for p in original.packets] == [
            (p.offset, len(p.payload)) for p in control.packets
        ]
        assert C.control(original.packets) == control.packets
        assert max(p.offset for p in original.packets) <= 0.5
        assert {original.slot, control.slot} == {2 * number - 2, 2 * number - 1}
    plain = [p for p in chosen if p.role == "replay_plain"]
    assert [p.port for p in plain] == [3478, 3480]  # every call port, once
    assert plain[0].packets != plain[1].packets
    assert [p.role for p in chosen if p.round is None] == [
        "replay_plain", "replay_plain", "replay_neutral", "replay_domestic",
    ]  # fmt: skip
    # The same seed gives the same plan; the order of each round is drawn from it.
    assert chosen == plans(service, function, 1.5, 7, domestic=True, neutral_port=40000)
    orders = set()
    for seed in range(12):
        drawn = plans(service, function, 1.5, seed)
        orders.add(tuple(p.role for p in sorted((p for p in drawn if p.slot is not None),
                                               key=lambda p: p.slot or 0)))  # fmt: skip
    assert len(orders) > 2  # not always original first, not the same in every round


def test_the_plain_payload_is_random_per_run() -> None:
    service, function = _service(3478)
    one = next(p for p in plans(service, function, 1.0, 1) if p.role == "replay_plain")
    two = next(p for p in plans(service, function, 1.0, 2) if p.role == "replay_plain")
    assert [x.payload for x in one.packets] != [x.payload for x in two.packets]
    # Nothing of it parses as STUN (cookie) in more than chance.
    assert sum(x.payload[4:8] == bytes.fromhex("2112a442") for x in one.packets) == 0


def _record(rx: list[int], sent: int = 50, got: int = 50, round_: int | None = None,
            tx: int = 5) -> dict[str, Any]:  # fmt: skip
    return {"sent_packets": sent, "received_packets": got, "round": round_, "attempt": 1,
            "intervals": [{"t": i / 10, "tx_packets": tx, "rx_bytes": b}
                          for i, b in enumerate(rx)]}  # fmt: skip


def test_rounds_are_pooled() -> None:
    # Each round alone has three intervals, too few for KS; the three together are enough.
    originals = [_record([100] * 3, round_=n) for n in (1, 2, 3)]
    controls = [_record([1000] * 3, round_=n) for n in (1, 2, 3)]
    assert compare_rounds(originals, controls) == ("original_worse", "throughput")
    assert compare_rounds(originals[:1], controls[:1])[1] == "area_only"


def test_controls_that_disagree_make_the_comparison_inconclusive() -> None:
    originals = [_record([100] * 5, round_=n) for n in (1, 2, 3)]
    controls = [_record([1000] * 5, round_=1), _record([1000] * 5, round_=2),
                _record([3000] * 5, round_=3)]  # fmt: skip
    assert compare_rounds(originals, controls) == ("inconclusive", "noisy_controls")


def test_a_difference_from_one_round_only_is_not_taken() -> None:
    # Round 1: the original lost most of its datagrams; rounds 2 and 3: both alike.
    originals = [_record([1000] * 5, got=5, round_=1), _record([1000] * 5, round_=2),
                 _record([1000] * 5, round_=3)]  # fmt: skip
    controls = [_record([1000] * 5, round_=n) for n in (1, 2, 3)]
    assert compare_rounds(originals, controls) == ("inconclusive", "rounds_disagree")
    originals[1]["received_packets"] = 5
    assert compare_rounds(originals, controls) == ("original_worse", "loss")


def test_unclear_when_the_rounds_cannot_confirm() -> None:
    # Two intervals a round, one round: the area crosses, KS cannot confirm.
    assert unclear([_record([100, 100])], [_record([1000, 1000])])
    clear = [_record([100] * 5, round_=n) for n in (1, 2, 3)]
    assert not unclear(clear, [_record([1000] * 5, round_=n) for n in (1, 2, 3)])
    assert not unclear(clear, [_record([100] * 5, round_=n) for n in (1, 2, 3)])
    noisy = [_record([1000] * 5, round_=n) for n in (1, 2)] + [_record([3000] * 5, round_=3)]
    assert unclear(clear, noisy)


@pytest.mark.parametrize("rounds", [3, 4])
def test_a_clear_comparison_is_not_replayed_again(rounds: int) -> None:
    def echo(data: bytes, reply: Reply) -> None:
        reply(data)

    trace = Trace()

    async def scenario() -> list[Any]:
        async with udp_server(echo) as server:
            service, function = _service(server.port)
            return await run_replays(trace, service, function, server.ip, 0.6, 7, deadline(5.0),
                                     rounds=rounds, neutral_port=server.port)  # fmt: skip

    done = asyncio.run(scenario())
    roles = sorted(role for role, _ in done)
    assert roles == sorted(["replay_original", "replay_control"] * rounds
                           + ["replay_plain", "replay_neutral"]
                           + ["replay_down_original", "replay_down_control"] * 2)  # fmt: skip
    assert {r["attempt"] for r in trace.replays} == {1}
    # No control API on this echo server: the counts are missing, and say why.
    assert all(r["helper"]["failure"] == "connection_refused" for r in trace.replays
               if r.get("direction") != "down")  # fmt: skip
    # Nor can it send downstream: those fail before anything is counted.
    down = [r for r in trace.replays if r.get("direction") == "down"]
    assert [r["send_failure"] for r in down] == ["connection_refused"] * 4
    assert all(r["sent_packets"] == 0 and "helper" not in r for r in down)

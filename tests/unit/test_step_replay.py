"""Call-traffic replay to an in-process echo server: counts, loss, intervals, the budget."""

from __future__ import annotations

import asyncio
import itertools
import socket

from msgwatch.steps import net
from msgwatch.steps.replay import ReplayOptions, ReplayResult, replay
from msgwatch.steps.trace import Budget, Trace
from tests.unit.servers import Reply, UDPHandler, closed_udp_port, deadline, silent, udp_server

# 40 distinct datagrams at 100 per second: 0.39 s of traffic.
PACKETS = [(i / 100, bytes([i]) * (60 + i)) for i in range(40)]


def echo(data: bytes, reply: Reply) -> None:
    reply(data)


def _replay(handler: UDPHandler, trace: Trace | None = None) -> tuple[Trace, ReplayResult]:
    trace = trace or Trace()

    async def scenario() -> ReplayResult:
        async with udp_server(handler) as server:
            options = ReplayOptions(label={"profile": "test", "variant": "original"})
            return await replay(trace, 7, server.ip, server.port, PACKETS, deadline(3.0), options)

    return trace, asyncio.run(scenario())


def test_every_datagram_echoed() -> None:
    trace, result = _replay(echo)
    sent = sum(len(p) for _, p in PACKETS)
    assert (result.sent_packets, result.sent_bytes) == (40, sent)
    assert (result.received_packets, result.received_bytes, result.failure) == (40, sent, None)
    assert result.loss == 0.0
    assert sum(r["tx_bytes"] for r in result.intervals) == sent
    assert sum(r["rx_packets"] for r in result.intervals) == 40
    (record,) = trace.replays
    assert (record["profile"], record["variant"], record["loss"], record["transaction_id"]) == (
        "test", "original", 0.0, 7,
    )  # fmt: skip
    # One summary pair of events, not one per datagram.
    assert [e["operation"] for e in trace.network_events] == ["write_to", "read_from"]
    assert trace.test_keys()["msgwatch_bytes"] == {"sent": sent, "received": sent}


def test_half_dropped() -> None:
    toggle = itertools.cycle([True, False])

    def every_other(data: bytes, reply: Reply) -> None:
        if next(toggle):
            reply(data)

    _, result = _replay(every_other)
    assert result.received_packets == 20
    assert abs(result.loss - 0.5) < 1e-9
    assert result.failure is None


def test_nothing_comes_back() -> None:
    trace, result = _replay(silent)
    assert (result.sent_packets, result.received_packets, result.failure) == (
        40, 0, "generic_timeout_error",
    )  # fmt: skip
    assert trace.replays[0]["loss"] == 1.0


def test_port_unreachable() -> None:
    trace = Trace()

    async def scenario() -> ReplayResult:
        return await replay(trace, 1, "127.0.0.1", closed_udp_port(), PACKETS, deadline(2.0))

    result = asyncio.run(scenario())
    assert result.failure == "connection_refused"
    assert result.received_packets == 0


def test_budget_stops_the_replay() -> None:
    trace = Trace(budget=Budget(limit=500))
    _, result = _replay(echo, trace)
    assert result.failure == "budget_exceeded"
    assert 0 < result.sent_bytes <= 500


def test_marked_datagrams_are_accounted_for_by_stun_transaction_id() -> None:
    stun_like = [(i / 100, bytes(4) + bytes.fromhex("2112a442") + bytes([i]) * 12 + bytes(20))
                 for i in range(5)]  # fmt: skip
    packets = stun_like + PACKETS[5:]

    def drop_stun(data: bytes, reply: Reply) -> None:
        if data[4:8] != bytes.fromhex("2112a442"):
            reply(data)

    trace = Trace()

    async def scenario() -> ReplayResult:
        async with udp_server(drop_stun) as server:
            options = ReplayOptions(marked=frozenset(range(5)))
            return await replay(trace, 2, server.ip, server.port, packets, deadline(3.0), options)

    result = asyncio.run(scenario())
    record = trace.replays[0]
    assert (record["marked_sent"], record["marked_received"]) == (5, 0)
    assert result.received_packets == 35


class _FakeTransport:
    def __init__(self, port: int) -> None:
        self.port, self.closed = port, False

    def get_extra_info(self, name: str) -> tuple[str, int]:
        assert name == "sockname"
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        self.closed = True


def _picks(ports: list[int], avoid: set[int], attempts: int = 16) -> tuple[int, list[bool]]:
    made: list[_FakeTransport] = []
    queue = iter(ports)

    async def make() -> tuple[asyncio.DatagramTransport, None]:
        made.append(_FakeTransport(next(queue)))
        return made[-1], None  # type: ignore[return-value]

    async def scenario() -> int:
        transport, _ = await net.fresh_local_port(make, avoid, attempts)
        return int(transport.get_extra_info("sockname")[1])

    port = asyncio.run(scenario())
    return port, [t.closed for t in made]


def test_a_helper_port_is_never_the_source_port() -> None:
    """The helper answers nothing from its own ports (40000 lies in Linux's ephemeral range):
    the kernel's pick of such a port is rejected and closed, the next one kept."""
    assert 40000 in net.REFUSED_LOCAL_PORTS
    assert _picks([40000, 3478, 51234], {40000, 3478}) == (51234, [True, True, False])
    assert _picks([51234], {40000}) == (51234, [False])
    # Bounded: the last attempt is kept whatever its port.
    assert _picks([40000] * 3, {40000}, attempts=3) == (40000, [True, True, False])


def test_udp_open_rejects_a_port_to_avoid() -> None:
    """Real sockets: the first bound to a port to avoid, the second free; the first is closed."""

    async def scenario() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        taken = probe.getsockname()[1]
        probe.close()
        binds = iter([taken, 0])
        made: list[asyncio.DatagramTransport] = []

        async def make() -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
            transport, protocol = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", next(binds))
            )
            made.append(transport)
            return transport, protocol

        transport, _ = await net.fresh_local_port(make, {taken})
        port = int(transport.get_extra_info("sockname")[1])
        transport.close()
        return port, made[0].is_closing() and port != taken

    port, first_closed = asyncio.run(scenario())
    assert first_closed and port > 0


def test_settle_and_record_make_one_shape_for_both_directions() -> None:
    """An echo replay counts what it sent; a downstream one takes the helper's word for it."""
    from msgwatch.steps.replay import Tally, record_replay, settle

    echo = Tally(0.0, sends=[(0.0, 100), (0.05, 100)], arrivals=[(0.02, 100)],
                 pairs=[(0.0, 0.02)], marked=(1, 0))  # fmt: skip
    result = ReplayResult()
    settle(result, echo, 0.1)
    assert (result.sent_packets, result.sent_bytes, result.received_packets) == (2, 200, 1)
    assert result.loss == 0.5 and result.failure is None
    assert [r["tx_packets"] for r in result.intervals] == [2]
    down = Tally(0.0, sends=[(0.0, 100)], sent=(3, 300))
    silent_down = ReplayResult()
    settle(silent_down, down, 0.1)
    assert (silent_down.sent_packets, silent_down.failure) == (3, "generic_timeout_error")
    trace = Trace()
    record_replay(trace, 4, result, echo, {"role": "r", "address": "a"}, {"probe": {}})
    record_replay(trace, 5, silent_down, down, {"direction": "down"}, {"send": None})
    up, down_record = trace.replays
    assert list(up)[:2] == ["role", "address"] and up["marked_sent"] == 1
    assert down_record["send"] is None and down_record["transaction_id"] == 5
    common = set(up) - {"role", "address", "probe"}
    assert common <= set(down_record)

"""UDP: STUN answers (checked with aioice), echo never larger, counters, privacy, budgets."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from aioice import stun
from hypothesis import given, settings
from hypothesis import strategies as st

from msgwatch.helper.flows import FlowTable
from msgwatch.helper.limits import Limits
from msgwatch.helper.udp import UDPService, binding_response
from msgwatch.steps.stun import build_request
from tests.helper.util import UDPClient, config, http, running


def _parse(data: bytes) -> stun.Message:
    return stun.parse_message(data)  # checks the FINGERPRINT when there is one


def test_binding_answer_for_msgwatch_request_over_ipv4() -> None:
    request = bytes(build_request("stun"))  # SOFTWARE + FINGERPRINT: 40 bytes
    answer = binding_response(request, ("203.0.113.5", 40001))
    assert answer is not None and len(answer) == len(request) == 40
    message = _parse(answer)
    assert message.message_method == stun.Method.BINDING
    assert message.message_class == stun.Class.RESPONSE
    assert message.transaction_id == _parse(request).transaction_id
    assert message.attributes["XOR-MAPPED-ADDRESS"] == ("203.0.113.5", 40001)
    assert "FINGERPRINT" in message.attributes


def test_answers_are_never_larger_than_requests() -> None:
    bare = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST))  # 20 bytes
    answer = binding_response(bare, ("203.0.113.5", 40001))
    assert answer is not None and len(answer) == 20  # a success without attributes
    assert _parse(answer).message_class == stun.Class.RESPONSE
    # IPv6: 40 bytes are too few for XOR-MAPPED-ADDRESS (44); 52 fit it and FINGERPRINT.
    v6 = ("2001:db8::5", 40001)
    assert len(binding_response(bytes(build_request("stun")), v6) or b"") == 20
    padded = build_request("stun")
    padded.attributes["SOFTWARE"] = "msgwatch" + " " * 12
    padded.add_fingerprint()
    answer = binding_response(bytes(padded), v6)
    assert answer is not None and len(answer) == len(bytes(padded)) == 52
    assert _parse(answer).attributes["XOR-MAPPED-ADDRESS"] == v6


def test_what_is_not_a_binding_request_is_echoed() -> None:
    allocate = bytes(build_request("turn"))
    broken = bytearray(bytes(build_request("stun")))
    broken[-1] ^= 1  # bad FINGERPRINT
    for data in (allocate, bytes(broken), b"\x00\x01\x00\x00" + os.urandom(16), b"hello"):
        assert binding_response(data, ("203.0.113.5", 40001)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.booleans())
def test_no_reply_is_ever_larger(data: bytes, stunlike: bool) -> None:
    if stunlike and len(data) >= 20:  # a header that passes the cheap check, random attributes
        body = data[20 : 20 + (len(data) - 20) // 4 * 4]
        data = b"\x00\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + data[8:20] + body
    service = UDPService(FlowTable(), Limits(), frozenset())
    reply = service.handle(data, ("2001:db8::77", 50000), 3478, 0.0)
    assert reply is not None and len(reply) <= len(data)


NO_DECLINES = {"over_limits": 0, "send_buffer_full": 0, "source_port": 0, "own_reply": 0}


def _declined(service: UDPService, port: int, local_port: int = 3478) -> dict[str, int]:
    view = service.flows.view(("203.0.113.5", port, local_port), 10.0, 0.0)
    assert view is not None
    totals = view["totals"]
    # Whatever happened, each datagram received was answered or declined for one reason.
    assert totals["rx_packets"] == totals["tx_packets"] + sum(view["declined"].values())
    return dict(view["declined"])


def test_no_answer_to_low_or_own_source_ports() -> None:
    service = UDPService(FlowTable(), Limits(), frozenset({3478, 40000}))
    for port in (7, 19, 53, 123, 1023, 3478, 40000):
        assert service.handle(b"x" * 30, ("203.0.113.5", port), 3478, 0.0) is None
    assert service.counters.refused_source_port == 7
    assert service.handle(b"x" * 30, ("203.0.113.5", 1024), 3478, 0.0) == b"x" * 30
    assert service.counters.rx_packets == 8  # refused ones are still counted as received
    for port in (7, 1023, 3478, 40000):  # ... and declined on their flow, for their source port
        assert _declined(service, port) == NO_DECLINES | {"source_port": 1}
    assert _declined(service, 1024) == NO_DECLINES


def test_no_answer_while_the_send_buffer_is_full() -> None:
    service = UDPService(FlowTable(), Limits(), frozenset())
    assert service.handle(b"x" * 30, ("203.0.113.5", 5000), 3478, 0.0, sendable=False) is None
    assert service.counters.send_buffer_full == 1 and service.counters.rx_packets == 1
    assert service.counters.tx_packets == 0
    assert _declined(service, 5000) == NO_DECLINES | {"send_buffer_full": 1}


def test_declines_per_flow_and_reason() -> None:
    # 100-byte budget a minute: one 60-byte echo, then the client is over its limits.
    service = UDPService(FlowTable(), Limits(budget_bytes=100, rate_pps=1000), frozenset({3478}))
    peer = ("203.0.113.5", 5001)
    assert service.handle(b"a" * 60, peer, 3478, 0.0) == b"a" * 60
    for i in range(4):
        assert service.handle(b"a" * 60, peer, 3478, 0.01 * i) is None
    assert service.handle(b"a" * 60, peer, 3478, 0.1, sendable=False) is None
    assert _declined(service, 5001) == NO_DECLINES | {"over_limits": 4, "send_buffer_full": 1}
    # The same client on another flow: its own counts (the budget is the client's, shared).
    assert service.handle(b"b" * 60, ("203.0.113.5", 5002), 3478, 0.2) is None
    assert _declined(service, 5002) == NO_DECLINES | {"over_limits": 1}
    # A refused source port is the reason even while the send buffer is full: it would never
    # have been answered.
    assert service.handle(b"c" * 60, ("203.0.113.5", 3478), 3478, 0.3, sendable=False) is None
    assert _declined(service, 3478) == NO_DECLINES | {"source_port": 1}
    assert service.counters.refused_source_port == 1 and service.counters.send_buffer_full == 1
    assert service.counters.over_limits == 5


def test_stun_and_echo_over_loopback() -> None:
    async def scenario() -> None:
        async with running() as helper:
            target = helper.bound["udp"][0]
            client = await UDPClient.open(target, source="127.0.0.2")
            request = build_request("stun")
            client.send(bytes(request))
            [answer] = await client.wait_for(1)
            message = _parse(answer)
            assert message.transaction_id == request.transaction_id
            assert message.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.2", client.port)
            payloads = [os.urandom(n) for n in (1, 60, 200, 1200, 8000)]
            for payload in payloads:
                client.send(payload)
            received = await client.wait_for(1 + len(payloads))
            assert received[1:] == payloads  # unchanged, same sizes
            client.close()

    asyncio.run(scenario())


def test_flow_counters_and_privacy_between_clients() -> None:
    async def scenario() -> None:
        async with running() as helper:
            target, control = helper.bound["udp"][0], helper.bound["control"][0]
            a = await UDPClient.open(target, source="127.0.0.2")
            b = await UDPClient.open(target, source="127.0.0.3")
            for i in range(3):
                a.send(bytes([i]) + b"a" * 99)  # distinct: a third copy would be an echo's
            b.send(b"b" * 10)
            await a.wait_for(3)
            await asyncio.sleep(0.25)
            a.send(b"a" * 50)
            await a.wait_for(4)
            query = f"/v1/udp/flows?client_port={a.port}&local_port={target[1]}"
            mine = await http(control, "GET", query, source="127.0.0.2")
            assert mine.status == 200, mine.body
            view = mine.json()
            assert view["totals"] == {"rx_packets": 4, "rx_bytes": 350, "tx_packets": 4,
                                      "tx_bytes": 350}  # fmt: skip
            assert view["declined"] == NO_DECLINES
            assert len(view["intervals"]) >= 2
            first = view["intervals"][0]
            assert first["t"] == 0.0 and first["rx_packets"] == 3 and first["tx_bytes"] == 300
            assert view["intervals"][-1]["t"] >= 0.2
            assert view["first_seen"] <= view["last_seen"]
            # Client b, asking for a's flow from its own address, sees nothing.
            other = await http(control, "GET", query, source="127.0.0.3")
            assert other.status == 404 and other.json()["error"] == "no_such_flow"
            own = f"/v1/udp/flows?client_port={b.port}&local_port={target[1]}"
            theirs = await http(control, "GET", own, source="127.0.0.3")
            assert theirs.status == 200 and theirs.json()["totals"]["rx_bytes"] == 10
            a.close()
            b.close()

    asyncio.run(scenario())


def test_flooding_past_the_budget_stops_the_echoes() -> None:
    async def scenario() -> None:
        async with running(config(budget_bytes=10_000)) as helper:
            client = await UDPClient.open(helper.bound["udp"][0], source="127.0.0.4")
            for i in range(100):
                client.send(i.to_bytes(2, "big") + b"z" * 498)
                await asyncio.sleep(0)
            received = await client.wait_for(100, timeout=0.5)
            assert 19 <= len(received) <= 21  # 10 kB of 50 kB; the bucket refills ~167 B/s
            before = len(received)
            client.send(b"z" * 500)
            await asyncio.sleep(0.1)
            assert len(client.received) == before
            assert helper.limits.counters.over_bytes >= 79
            assert helper.udp.counters.rx_packets == 101  # all of it was received and counted
            # The flow's view says what was not echoed, and why: the helper's limits.
            target, control = helper.bound["udp"][0], helper.bound["control"][0]
            query = f"/v1/udp/flows?client_port={client.port}&local_port={target[1]}"
            view = (await http(control, "GET", query, source="127.0.0.4")).json()
            assert view["totals"]["rx_packets"] == 101
            assert view["totals"]["tx_packets"] == before
            assert view["declined"] == NO_DECLINES | {"over_limits": 101 - before}
            # Another client is not affected.
            other = await UDPClient.open(helper.bound["udp"][0], source="127.0.0.5")
            other.send(b"y" * 500)
            assert len(await other.wait_for(1)) == 1
            client.close()
            other.close()

    asyncio.run(scenario())


def test_a_source_port_of_the_helpers_own_is_declined_and_says_so() -> None:
    async def scenario() -> None:
        async with running() as helper:
            target, control = helper.bound["udp"][0], helper.bound["control"][0]
            # From another loopback address, but from the helper's own UDP port number.
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.7", target[1]), remote_addr=target
            )
            for _ in range(5):
                transport.sendto(b"s" * 40)
            await asyncio.sleep(0.2)
            transport.close()
            query = f"/v1/udp/flows?client_port={target[1]}&local_port={target[1]}"
            reply = await http(control, "GET", query, source="127.0.0.7")
            assert reply.status == 200, reply.body
            view = reply.json()
            assert view["totals"]["rx_packets"] == 5 and view["totals"]["tx_packets"] == 0
            assert view["declined"] == NO_DECLINES | {"source_port": 5}

    asyncio.run(scenario())


def test_packet_rate_limit() -> None:
    async def scenario() -> None:
        async with running(config(rate_pps=50)) as helper:
            client = await UDPClient.open(helper.bound["udp"][0], source="127.0.0.6")
            for i in range(200):
                client.send(i.to_bytes(2, "big") + b"p" * 18)
            received = await client.wait_for(200, timeout=0.3)
            assert 50 <= len(received) <= 70  # 50 at once, then 50 a second
            client.close()

    asyncio.run(scenario())


def test_ipv6_loopback() -> None:
    async def scenario() -> None:
        cfg = replace(config(), listen=("::1",))
        async with running(cfg) as helper:
            client = await UDPClient.open(helper.bound["udp"][0], source="::1")
            client.send(b"v6" * 20)
            assert await client.wait_for(1) == [b"v6" * 20]
            client.close()

    asyncio.run(scenario())

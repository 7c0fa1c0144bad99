"""No ping-pong: the helper never keeps echoing to a peer that is itself an echo (issue 9, item 2).

Two real helpers (the server code with its real sockets on loopback) with disjoint port lists, so
that neither one's source-port guard knows the other's ports, and one forged datagram: a datagram
from helper B's socket to helper A's port is what a forged source address produces on the wire.
Before the guard, the two bounced it until their budgets stopped them (thousands of datagrams a
second); now the loop ends after a bounded handful. The counts are the helpers' own (every
datagram they sent), and the bound holds however slow the machine is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from typing import Any

import pytest

from msgwatch.catalogue import load_catalogue
from msgwatch.helper.flows import FlowTable
from msgwatch.helper.limits import Limits
from msgwatch.helper.loops import MAX_REPEATS, WINDOW, RecentReplies
from msgwatch.helper.server import Helper
from msgwatch.helper.udp import UDPEndpoint, UDPService
from msgwatch.probe.calls import downstream_plans, plans
from msgwatch.steps.downstream import PINHOLE, PINHOLES
from msgwatch.steps.stun import build_request
from msgwatch.wire import calltraffic as C
from msgwatch.wire.helper_api import schedule
from tests.helper.util import config, running

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
HANDFUL = 4
"""Datagrams the helpers may send in all for one forged datagram (two laps of the loop)."""
SETTLE = 1.0
"""Seconds given to the loop: unguarded, it runs thousands of laps in this time on loopback."""


def _endpoint(helper: Helper) -> UDPEndpoint:
    [endpoint] = helper.udp.endpoints.values()
    return endpoint


class _Echo(asyncio.DatagramProtocol):
    """A plain UDP echo service (RFC 862 on a high port), counting what it sends."""

    def __init__(self) -> None:
        self.sent = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)
        self.sent += 1


def _forge_between_helpers(payload: bytes) -> tuple[int, int, int, int]:
    """(A's tx, B's tx, A's rx, A's own_reply declines) after one datagram 'from' B to A."""

    async def scenario() -> tuple[int, int, int, int]:
        async with running() as a, running(replace(config(), listen=("127.0.0.2",))) as b:
            (_, port_a), (_, port_b) = a.bound["udp"][0], b.bound["udp"][0]
            assert port_a != port_b  # disjoint port lists: the source-port guard sees nothing
            assert port_b not in a.udp.own_ports and port_a not in b.udp.own_ports
            transport = _endpoint(b).transport
            assert transport is not None
            transport.sendto(payload, ("127.0.0.1", port_a))  # "from" 127.0.0.2:port_b
            await asyncio.sleep(SETTLE)
            ca, cb = a.udp.counters, b.udp.counters
            return ca.tx_packets, cb.tx_packets, ca.rx_packets, ca.as_dict().get("own_reply", 0)

    return asyncio.run(scenario())


def test_two_helpers_and_one_forged_datagram_make_a_handful() -> None:
    tx_a, tx_b, rx_a, own = _forge_between_helpers(os.urandom(200))
    assert rx_a >= 1 and tx_a >= 1  # the forged datagram arrived and was echoed once
    assert tx_a + tx_b <= HANDFUL, (tx_a, tx_b)
    assert own >= 1  # and A says why it stopped


def test_a_forged_binding_request_between_two_helpers_ends_too() -> None:
    # A answers the request with a Binding success; B, not a STUN server for answers, echoes the
    # success; A must recognise its own answer coming back.
    tx_a, tx_b, rx_a, _ = _forge_between_helpers(bytes(build_request("stun")))
    assert rx_a >= 1 and tx_a >= 1
    assert tx_a + tx_b <= HANDFUL, (tx_a, tx_b)


def test_a_helper_and_an_echo_service_and_one_forged_datagram_make_a_handful() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transport, echo = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.3", 0))
        try:
            async with running() as helper:
                target = helper.bound["udp"][0]
                transport.sendto(os.urandom(100), target)  # "from" the echo service
                await asyncio.sleep(SETTLE)
                sent = helper.udp.counters.tx_packets
                assert helper.udp.counters.rx_packets >= 1 and sent >= 1
                assert sent + echo.sent <= HANDFUL, (sent, echo.sent)
        finally:
            transport.close()

    asyncio.run(scenario())


# -- the guard itself (UDPService.handle, time passed in) ------------------------------------------

PEER = ("203.0.113.5", 50000)


def _service() -> UDPService:
    return UDPService(FlowTable(), Limits(budget_bytes=10**12, rate_pps=10**9), frozenset({3478}))


def test_the_helpers_own_reply_coming_back_is_declined_and_counted() -> None:
    service = _service()
    datagram = os.urandom(120)
    # A loop: the datagram arrives, is echoed, comes back, ... MAX_REPEATS echoes, then nothing.
    answers = [service.handle(datagram, PEER, 3478, 0.01 * i) for i in range(10)]
    assert answers[:MAX_REPEATS] == [datagram] * MAX_REPEATS
    assert answers[MAX_REPEATS:] == [None] * (10 - MAX_REPEATS)
    assert service.counters.own_reply == 10 - MAX_REPEATS
    view = service.flows.view(("203.0.113.5", 50000, 3478), 1.0, 0.0)
    assert view is not None and view["declined"]["own_reply"] == 10 - MAX_REPEATS
    totals = view["totals"]
    assert totals["rx_packets"] == totals["tx_packets"] + sum(view["declined"].values())
    # Other bytes on the same flow, and the same bytes on another flow, are answered.
    assert service.handle(b"other" * 10, PEER, 3478, 0.2) == b"other" * 10
    assert service.handle(datagram, ("203.0.113.5", 50001), 3478, 0.2) == datagram
    assert service.handle(datagram, PEER, 40000, 0.2) == datagram
    # The memory is seconds long: later the same bytes are answered again.
    assert service.handle(datagram, PEER, 3478, 0.2 + 3 * WINDOW) == datagram


def test_a_stun_answer_coming_back_is_declined() -> None:
    service = _service()
    request = bytes(build_request("stun"))
    answer = service.handle(request, PEER, 3478, 0.0)
    assert answer is not None and answer != request
    # The peer echoes the answer; the helper echoes it (not a request) once more, then stops.
    assert service.handle(answer, PEER, 3478, 0.01) == answer
    assert service.handle(answer, PEER, 3478, 0.02) is None
    # Retransmissions of the request are requests: always answered (RFC 5389: up to 7 sends).
    assert all(service.handle(request, PEER, 3478, 0.1 * i) == answer for i in range(7))


def test_a_downstream_datagram_echoed_back_is_remembered_as_sent() -> None:
    service = _service()
    key = ("203.0.113.5", 50000, 3478)
    payload = os.urandom(160)
    service.originated(key, payload, 0.0)
    assert service.handle(payload, PEER, 3478, 0.05) == payload  # the first copy: a repeat
    assert service.handle(payload, PEER, 3478, 0.06) is None


def test_memory_is_bounded() -> None:
    replies = RecentReplies(window=10.0, max_entries=100)
    for i in range(1000):
        replies.sent(replies.digest(("192.0.2.1", i, 3478), b"x"), 0.0)
    assert len(replies) <= 200
    replies.sent(replies.digest(("192.0.2.1", 1, 3478), b"x"), 100.0)
    assert len(replies) == 1


def _catalogue_replays() -> list[tuple[str, list[bytes]]]:
    """Every replay the probe sends, as its payloads: the catalogue's call functions (rounds,
    plain, neutral, domestic and downstream) and every marker's profiles and variants."""
    out: list[tuple[str, list[bytes]]] = []
    for service in load_catalogue().services:
        for function in service.functions:
            for plan in plans(service, function, 10.0, 2017, domestic=True):
                out.append((f"{service.id}/{function.function}/{plan.role}",
                            [p.payload for p in plan.packets]))  # fmt: skip
            for plan in downstream_plans(service, function, 10.0, 2017):
                out.append((f"{service.id}/{function.function}/{plan.role}",
                            [p.payload for p in plan.packets]))  # fmt: skip
    for marker in (None, *C.MARKERS):
        for profile in ("voice", "video"):
            for variant in ("original", "control", "plain"):
                packets = schedule(profile, variant, 10.0, 7, marker)
                out.append((f"{marker}/{profile}/{variant}", [p.payload for p in packets]))
    return out


def test_every_replay_the_probe_sends_is_echoed_whole() -> None:
    """The guard declines only what the helper already sent to the same flow: a probe's replay
    (one flow each) never repeats a datagram, so every one of them is echoed."""
    replays = _catalogue_replays()
    assert len(replays) > 30
    service = _service()
    for number, (name, payloads) in enumerate(replays):
        # Distinct on its flow: the guard's threshold of two is only a margin (a reused port).
        assert len(set(payloads)) == len(payloads), name
        peer = ("203.0.113.9", 1024 + number)
        declined = [i for i, p in enumerate(payloads)
                    if service.handle(p, peer, 3478, i * 0.001) is None]  # fmt: skip
        assert not declined, (name, declined[:5])
    pinholes = [PINHOLE + bytes([n]) for n in range(PINHOLES)]  # a downstream replay's opening
    assert all(service.handle(p, ("203.0.113.9", 60000), 3478, 0.0) == p for p in pinholes)
    assert service.counters.own_reply == 0


# -- the same with two `msgwatch helper serve` processes and a forged datagram on the wire -------


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _forged_udp(source: tuple[str, int], target: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet from ``source`` (a forged address and port) to ``target``."""
    udp = struct.pack("!HHHH", source[1], target[1], 8 + len(payload), 0) + payload  # no checksum
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP,
                         0, socket.inet_aton(source[0]), socket.inet_aton(target[0]))  # fmt: skip
    return header + udp


class _Served:
    """``msgwatch helper serve`` on 127.0.0.1 with one UDP port, no TCP, a control port."""

    def __init__(self) -> None:
        self.udp, self.control = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "msgwatch", "helper", "serve", "--listen", "127.0.0.1",
                "--udp-ports", str(self.udp), "--tcp-ports", "", "--control-port",
                str(self.control), "--allow", "127.0.0.0/8"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def health(self, wait: float = 0.0) -> Any:
        end = time.monotonic() + wait
        while True:
            try:
                url = f"http://127.0.0.1:{self.control}/v1/health"
                with _DIRECT.open(url, timeout=2) as reply:
                    return json.load(reply)
            except OSError:
                if time.monotonic() >= end:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="forging a source address needs a raw socket (root)")
def test_two_helper_processes_and_a_forged_datagram_on_the_wire() -> None:
    a, b = _Served(), _Served()
    try:
        before_a, before_b = (
            a.health(wait=15)["counters"]["udp"],
            b.health(wait=15)["counters"]["udp"],
        )
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
            packet = _forged_udp(("127.0.0.1", b.udp), ("127.0.0.1", a.udp), os.urandom(300))
            raw.sendto(packet, ("127.0.0.1", 0))
        time.sleep(SETTLE)
        udp_a, udp_b = a.health()["counters"]["udp"], b.health()["counters"]["udp"]
    finally:
        a.stop()
        b.stop()
    sent = (udp_a["tx_packets"] - before_a["tx_packets"]) + (
        udp_b["tx_packets"] - before_b["tx_packets"]
    )
    assert udp_a["rx_packets"] - before_a["rx_packets"] >= 1  # the forged datagram arrived
    assert 1 <= sent <= HANDFUL, (udp_a, udp_b)
    assert udp_a["own_reply"] >= 1

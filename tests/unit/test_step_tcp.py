"""net.tcp_connect and TCPConn against servers that accept, refuse, reset or stay silent."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from msgwatch import fence
from msgwatch.failures import ProbeFailure
from msgwatch.steps import net
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    close_on_accept,
    closed_tcp_port,
    deadline,
    hold_open,
    operations,
    reset_on_accept,
    tcp_server,
)


def test_connect_success_then_close() -> None:
    trace = Trace()

    async def scenario() -> int:
        async with tcp_server(hold_open) as (ip, port):
            conn = await net.tcp_connect(trace, 7, ip, port, deadline(2.0))
            assert conn.address == f"127.0.0.1:{port}"
            conn.close()
            conn.close()  # idempotent: one close event
            return port

    port = asyncio.run(scenario())
    assert trace.tcp_connect == [
        {
            "ip": "127.0.0.1",
            "port": port,
            "status": {"success": True, "failure": None, "blocked": None},
            "t0": trace.tcp_connect[0]["t0"],
            "t": trace.tcp_connect[0]["t"],
            "transaction_id": 7,
        }
    ]
    assert operations(trace.network_events) == ["connect", "close"]
    connect = trace.network_events[0]
    assert (connect["address"], connect["proto"], connect["failure"]) == (
        f"127.0.0.1:{port}",
        "tcp",
        None,
    )
    assert trace.probe_addresses == set()  # loopback is not the probe's secret


def test_connect_refused() -> None:
    trace = Trace()
    port = closed_tcp_port()

    async def scenario() -> None:
        await net.tcp_connect(trace, 1, "127.0.0.1", port, deadline(2.0))

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(scenario())
    assert [c["status"] for c in trace.tcp_connect] == [
        {"success": False, "failure": "connection_refused", "blocked": None}
    ]
    assert operations(trace.network_events) == ["connect"]
    assert trace.network_events[0]["failure"] == "connection_refused"


def test_accept_then_reset_is_seen_on_read() -> None:
    trace = Trace()

    async def scenario() -> None:
        async with tcp_server(reset_on_accept) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                with pytest.raises(ConnectionResetError):
                    await conn.read(deadline(2.0))
            finally:
                conn.close()

    asyncio.run(scenario())
    assert [c["status"]["success"] for c in trace.tcp_connect] == [True]
    assert operations(trace.network_events) == ["connect", "read", "close"]
    assert [e["failure"] for e in trace.network_events] == [None, "connection_reset", None]


def test_accept_then_fin_is_eof() -> None:
    trace = Trace()

    async def scenario() -> bytes:
        async with tcp_server(close_on_accept) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                return await conn.read(deadline(2.0))
            finally:
                conn.close()

    assert asyncio.run(scenario()) == b""
    assert operations(trace.network_events) == ["connect", "read", "close"]
    read = trace.network_events[1]
    assert (read["num_bytes"], read["failure"]) == (0, "eof_error")


def test_accept_then_silence_read_times_out() -> None:
    trace = Trace()

    async def scenario() -> None:
        async with tcp_server(hold_open) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                await conn.write(b"hello?", deadline(1.0))
                with pytest.raises(TimeoutError):
                    await conn.read(deadline(0.2))
            finally:
                conn.close()

    asyncio.run(scenario())
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]
    assert [e["failure"] for e in trace.network_events] == [
        None,
        None,
        "generic_timeout_error",
        None,
    ]
    assert trace.network_events[1]["num_bytes"] == 6
    read = trace.network_events[2]
    assert "num_bytes" not in read
    assert 0.2 <= read["t"] - read["t0"] < 1.0


def test_read_is_bounded_by_max_bytes() -> None:
    trace = Trace()

    async def send_a_lot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"y" * 1000)
        await hold_open(reader, writer)

    async def scenario() -> bytes:
        async with tcp_server(send_a_lot) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                return await conn.read(deadline(2.0), max_bytes=10)
            finally:
                conn.close()

    assert asyncio.run(scenario()) == b"y" * 10
    assert trace.network_events[1]["num_bytes"] == 10


class _SocketSpy:
    """Counts every socket the process creates (calls through to the real constructor)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created: list[tuple[Any, ...]] = []
        real_init = socket.socket.__init__

        def spying_init(sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            if "fileno" not in kwargs:  # accept() wraps a descriptor the kernel already made
                self.created.append((args, kwargs))
            real_init(sock, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "__init__", spying_init)


def test_fence_refuses_before_any_socket_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fence.check_fence() is not None, "the suite must run with MSGWATCH_ALLOWED_NETWORKS set"
    trace = Trace()

    async def scenario() -> list[tuple[Any, ...]]:
        spy = _SocketSpy(monkeypatch)  # after the loop made its own self-pipe
        with pytest.raises(ProbeFailure) as raised:
            await net.tcp_connect(trace, 1, "192.0.2.1", 443, deadline(1.0))
        assert raised.value.failure == "destination_not_allowed"
        monkeypatch.undo()
        return spy.created

    assert asyncio.run(scenario()) == []
    assert operations(trace.network_events) == ["connect"]
    assert trace.network_events[0]["failure"] == "destination_not_allowed"
    assert trace.network_events[0]["address"] == "192.0.2.1:443"
    assert [c["status"]["failure"] for c in trace.tcp_connect] == ["destination_not_allowed"]


def test_fence_spy_does_see_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: the spy notices a socket the probe does create."""
    trace = Trace()

    async def scenario() -> list[tuple[Any, ...]]:
        async with tcp_server(hold_open) as (ip, port):
            spy = _SocketSpy(monkeypatch)
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            conn.close()
            monkeypatch.undo()
            return spy.created

    assert len(asyncio.run(scenario())) == 1


def test_fence_refuses_udp_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> list[tuple[Any, ...]]:
        spy = _SocketSpy(monkeypatch)
        for ip in ("192.0.2.1", "2001:4860::1", "chat.example.test"):
            with pytest.raises(ProbeFailure) as raised:
                await net.udp_open(Trace(), 1, ip, 3478)
            assert raised.value.failure == "destination_not_allowed"
        monkeypatch.undo()
        return spy.created

    assert asyncio.run(scenario()) == []


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.45.6.7", True),
        ("::1", True),
        ("198.19.255.1", True),
        ("2001:db8::5", True),
        ("192.0.2.1", False),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_fence_ranges(ip: str, allowed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Exactly the suite's fence (another test may have narrowed the process's, e.g. the demo's).
    monkeypatch.setenv(fence.FENCE_VARIABLE, fence.LAB_NETWORKS)
    if allowed:
        fence.check_destination(ip)
    else:
        with pytest.raises(ProbeFailure):
            fence.check_destination(ip)

"""Issue 9, item 12: DNS over the catalogue's transport and TCP after a truncated answer; STUN
answers whose attribute lengths lie; an endless chunk-size line in HTTP.

In-process servers on loopback only (``tests/unit/servers.py``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dns.flags
import dns.message
import pytest
from aioice import stun

from msgwatch import failures as F
from msgwatch.catalogue import Endpoint
from msgwatch.probe.chains import ChainConfig, run_chain
from msgwatch.steps.dns import query_udp, resolve, system_nameserver
from msgwatch.steps.http import Get, http_get
from msgwatch.steps.net import tcp_connect
from msgwatch.steps.stun import stun_exchange, well_formed
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    Reply,
    StreamHandler,
    deadline,
    dns_reply,
    dns_tcp_answer,
    stun_reply,
    tcp_server,
    udp_server,
)

HOST = "chat.example.test"


# -- DNS ------------------------------------------------------------------------------------------


@asynccontextmanager
async def dns_server(udp_answer: Any, tcp_handler: StreamHandler) -> AsyncIterator[tuple[str, int]]:
    """A name server on one loopback port over UDP and TCP (as a real one listens)."""
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await tcp_handler(reader, writer)
        finally:
            writer.close()  # asyncio leaves a finished handler's connection open

    for _ in range(20):
        async with udp_server(udp_answer) as udp:
            try:
                server = await asyncio.start_server(serve, udp.ip, udp.port)
            except OSError:  # the TCP port of that number is taken: another one
                continue
            try:
                yield udp.address
            finally:
                server.close()
                await server.wait_closed()
            return
    del loop
    raise AssertionError("no port free for UDP and TCP at once")


def truncated(*addresses: str) -> Any:
    """A UDP answer with the TC bit and the first address only (a partial answer)."""

    def handle(data: bytes, reply: Reply) -> None:
        message = dns.message.from_wire(dns_reply(data, *addresses[:1]))
        message.flags |= dns.flags.TC
        reply(message.to_wire())

    return handle


def test_a_truncated_udp_answer_is_retried_over_tcp_and_both_are_recorded() -> None:
    trace = Trace()
    full = ("127.0.0.7", "127.0.0.8", "127.0.0.9")

    async def scenario() -> Any:
        async with dns_server(truncated(*full), dns_tcp_answer(*full)) as server:
            return await query_udp(trace, 1, HOST, "A", server, deadline(2.0), 0.05)

    result = asyncio.run(scenario())
    assert result.failure is None
    assert sorted(result.addresses) == list(full)
    udp, tcp = trace.queries
    assert udp["engine"] == "udp" and "truncated" in udp["tags"]
    assert udp["raw_response"]  # the truncated answer is kept as evidence...
    assert udp["answers"] is None  # ...but its partial records are no answer of their own
    assert udp["failure"] is None
    assert tcp["engine"] == "tcp" and tcp["failure"] is None
    assert {a["ipv4"] for a in tcp["answers"]} == set(full)
    assert udp["transaction_id"] == tcp["transaction_id"] == 1


def test_a_truncated_answer_and_tcp_refused_fails_as_tcp_failed() -> None:
    trace = Trace()

    async def scenario() -> Any:
        for _ in range(20):  # the UDP server's port number may be taken on TCP: another one
            async with udp_server(truncated("127.0.0.7")) as udp:
                with socket.socket() as blocker:  # nothing listens on TCP at that port
                    try:
                        blocker.bind(udp.address)
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            raise
                        continue
                    return await query_udp(trace, 1, HOST, "A", udp.address, deadline(2.0), 0.05)
        raise AssertionError("no UDP port whose number was free on TCP")

    result = asyncio.run(scenario())
    assert result.failure == F.CONNECTION_REFUSED and result.addresses == []
    assert [q["engine"] for q in trace.queries] == ["udp", "tcp"]


def _dns_endpoint(transport: str) -> Endpoint:
    return Endpoint.model_validate({
        "id": "name", "host": HOST, "address": None, "port": 53, "transport": transport,
        "protocol": "dns", "path": "/", "source": "test", "checked": dt.date(2026, 11, 24),
    })  # fmt: skip


def test_a_dns_endpoint_declared_over_tcp_is_measured_over_tcp() -> None:
    trace = Trace()

    def udp_silent(data: bytes, reply: Reply) -> None:
        pass  # a UDP answer would be the wrong transport: never given

    async def scenario() -> Any:
        async with dns_server(udp_silent, dns_tcp_answer("127.0.0.7")) as server:
            config = ChainConfig(resolver=server)
            return await run_chain(trace, "text", _dns_endpoint("tcp"), config, deadline(1.0))

    outcome = asyncio.run(scenario())
    assert outcome.failure is None and outcome.dns is not None
    assert outcome.dns.addresses == ["127.0.0.7"]
    assert {q["engine"] for q in trace.queries} == {"tcp"}


def test_resolve_over_tcp_without_a_configured_resolver_uses_the_systems(tmp_path: Any) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.test\nnameserver 127.0.0.53\nnameserver ::1\n")
    assert system_nameserver(str(conf)) == ("127.0.0.53", 53)
    (tmp_path / "empty").write_text("search x\n")
    assert system_nameserver(str(tmp_path / "empty")) is None
    assert system_nameserver(str(tmp_path / "missing")) is None


def test_resolve_over_tcp_asks_a_and_aaaa_over_tcp() -> None:
    trace = Trace()

    async def scenario() -> Any:
        async with tcp_server(_dns_tcp_many("127.0.0.7", "::7")) as server:
            return await resolve(trace, 1, HOST, server, deadline(2.0), transport="tcp")

    result = asyncio.run(scenario())
    assert result.failure is None and result.addresses == ["127.0.0.7", "::7"]
    assert sorted(q["query_type"] for q in trace.queries) == ["A", "AAAA"]
    assert {q["engine"] for q in trace.queries} == {"tcp"}


def _dns_tcp_many(*addresses: str) -> StreamHandler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        wire = dns_reply(await reader.readexactly(size), *addresses)
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()

    return handle


# -- STUN -----------------------------------------------------------------------------------------


def _lying(request: bytes, attribute_length: int) -> bytes:
    """A Binding success for ``request`` whose only attribute claims ``attribute_length`` bytes
    while the message holds 8 (the header's length stays consistent with the datagram)."""
    tid = stun.parse_message(request).transaction_id
    body = (0x8022).to_bytes(2, "big") + attribute_length.to_bytes(2, "big") + b"liar"
    body += (0x0000).to_bytes(2, "big") + (0).to_bytes(2, "big")  # 4 more bytes: 12 in all
    return b"\x01\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + tid + body


@pytest.mark.parametrize("claimed", [4000, 9, 13, 65535])
def test_a_stun_answer_whose_attribute_lengths_lie_is_invalid(claimed: int) -> None:
    trace = Trace()

    def liar(data: bytes, reply: Reply) -> None:
        reply(_lying(data, claimed))

    async def scenario() -> Any:
        async with udp_server(liar) as server:
            return await stun_exchange(trace, 1, "stun", server.ip, server.port, deadline(0.6),
                                       rto=0.1)  # fmt: skip

    result = asyncio.run(scenario())
    assert result.failure == F.STUN_INVALID
    [exchange] = trace.udp_exchanges
    assert exchange["failure"] == F.STUN_INVALID
    assert exchange["responses"] and all(r["class"] == "invalid" for r in exchange["responses"])


def test_well_formed_stun_walks_the_attributes_to_the_end() -> None:
    request = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST))
    good = stun_reply(request, mapped=("127.0.0.1", 4000))
    assert well_formed(good)
    assert not well_formed(_lying(request, 4000))
    assert not well_formed(_lying(request, 9))  # one byte past the end
    assert well_formed(_lying(request, 4))  # what it says: "liar", then an empty attribute
    assert not well_formed(good[:-4])  # the header's length no longer matches
    bad_cookie = bytearray(good)
    bad_cookie[4] ^= 0xFF
    assert not well_formed(bytes(bad_cookie))
    assert not well_formed(b"\x80" + good[1:])  # first two bits not zero


# -- HTTP -----------------------------------------------------------------------------------------


def _chunked_then(line: bytes, close: bool) -> StreamHandler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):  # 64 × 4 KiB of one chunk-size line that never ends
            writer.write(line)
            await writer.drain()
        if close:
            writer.close()
            return
        await asyncio.sleep(30)

    return handle


@pytest.mark.parametrize("close", [False, True])
def test_an_endless_chunk_size_line_is_an_invalid_response(close: bool) -> None:
    trace = Trace()

    async def scenario() -> Any:
        async with tcp_server(_chunked_then(b"1" * 4096, close)) as (ip, port):
            end = deadline(3.0)
            conn = await tcp_connect(trace, 1, ip, port, end)
            try:
                return await http_get(conn, trace, 1, Get(ip), end)
            finally:
                conn.close()

    result = asyncio.run(scenario())
    assert result.status == 200
    assert result.failure == F.HTTP_INVALID
    [request] = trace.requests
    assert request["failure"] == F.HTTP_INVALID
    received = sum(e["num_bytes"] or 0 for e in trace.network_events if e["operation"] == "read")
    assert received <= 64 * 1024  # bounded: read stops soon after the line passes 16 KiB


def test_a_close_in_the_middle_of_a_chunk_is_still_an_eof() -> None:
    trace = Trace()
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly part"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()

    async def scenario() -> Any:
        async with tcp_server(handle) as (ip, port):
            end = deadline(2.0)
            conn = await tcp_connect(trace, 1, ip, port, end)
            try:
                return await http_get(conn, trace, 1, Get(ip), end)
            finally:
                conn.close()

    result = asyncio.run(scenario())
    assert result.failure == F.EOF_ERROR and result.body == b"only part"

"""Application handshakes (MTProto req_pq_multi, WhatsApp's hello) against loopback servers.

Each server reads what the probe sends first and then answers as a data centre does, echoes it,
resets, closes, stays silent or sends garbage. The assertions are on the exact failure string, the
``msgwatch_app_handshakes`` record and the order of the network events; and, through
:func:`run_chain`, on the endpoint's ``failed_step``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from msgwatch.catalogue import Endpoint
from msgwatch.helper.responders import answer_mtproto, answer_whatsapp
from msgwatch.probe.chains import ChainConfig, run_chain
from msgwatch.steps import net
from msgwatch.steps.app import (
    KEPT_BYTES,
    MAX_RESPONSE,
    AppResult,
    mtproto_handshake,
    whatsapp_hello,
)
from msgwatch.steps.trace import Trace
from msgwatch.wire import mtproto as M
from msgwatch.wire import whatsapp as W
from tests.unit.servers import (
    StreamHandler,
    close_after_first_read,
    deadline,
    hold_open,
    operations,
    reset,
    reset_after_first_read,
    send_after_first_read,
    tcp_server,
)
from tests.unit.test_wire_mtproto import ANSWER, ANSWER_NONCE

NOW = 1_764_000_000.0
HTTP_403 = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def responder(answer: Callable[[bytes, float], bytes | str | None]) -> StreamHandler:
    """A server that answers like the lab's: read until the codec can answer, answer, hold."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while True:
            data += await reader.read(4096)
            result = answer(data, NOW)
            if result is not None:
                break
        assert isinstance(result, bytes), result
        writer.write(result)
        await writer.drain()
        await reader.read(1)

    return handle


async def echo_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(65536))
    await writer.drain()
    await reader.read(1)


def split_after_first_read(payload: bytes, at: int, then: str = "send") -> StreamHandler:
    """Answer ``payload[:at]``; then the rest 50 ms later, or close (``"close"``), or hold
    (``"hold"``), or reset (``"reset"``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(payload[:at])
        await writer.drain()
        await asyncio.sleep(0.05)
        if then == "send":
            writer.write(payload[at:])
            await writer.drain()
        elif then == "close":
            writer.close()
            return
        elif then == "reset":
            reset(writer)
            return
        await reader.read(1)

    return handle


Step = Callable[[net.TCPConn, float], Awaitable[AppResult]]


def mtproto_step(nonce: bytes | None = None) -> Step:
    return lambda conn, until: mtproto_handshake(conn, until, NOW, nonce=nonce)


def whatsapp_step(conn: net.TCPConn, until: float) -> Awaitable[AppResult]:
    return whatsapp_hello(conn, until)


def exchange(handler: StreamHandler, step: Step, seconds: float = 2.0) -> tuple[AppResult, Trace]:
    trace = Trace()

    async def scenario() -> AppResult:
        async with tcp_server(handler) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(seconds))
            try:
                return await step(conn, deadline(seconds))
            finally:
                conn.close()

    return asyncio.run(scenario()), trace


def response_of(record: dict[str, Any]) -> bytes:
    response = record["response"]
    assert response is None or response["format"] == "base64"
    return b"" if response is None else base64.b64decode(response["data"])


# --- MTProto ------------------------------------------------------------------------------------


def test_mtproto_the_worked_example_answer_is_ok_and_recorded() -> None:
    result, trace = exchange(send_after_first_read(ANSWER), mtproto_step(ANSWER_NONCE))
    assert result.failure is None and result.ok
    assert isinstance(result.answer, M.ResPQ)
    assert result.answer.pq == bytes.fromhex("17ed48941a08f981")
    assert result.answer.fingerprints == (0xC3B42B026CE86B21,)
    [record] = trace.app_handshakes
    assert record == {
        "protocol": "mtproto",
        "address": record["address"],
        "failure": None,
        "t0": record["t0"],
        "t": record["t"],
        "transaction_id": 1,
        "request_bytes": 48,
        "response_bytes": len(ANSWER),
        "response": {"format": "base64", "data": base64.b64encode(ANSWER).decode()},
    }
    assert record["address"].startswith("127.0.0.1:") and 0 <= record["t0"] <= record["t"]
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]
    assert trace.network_events[1]["num_bytes"] == 48


def test_mtproto_the_labs_responder_answers_a_fresh_nonce() -> None:
    result, trace = exchange(responder(answer_mtproto), mtproto_step())
    assert result.failure is None
    assert isinstance(result.answer, M.ResPQ) and result.answer.message_id % 4 == 1
    assert trace.app_handshakes[0]["response_bytes"] == 88  # 4 + 84


def test_mtproto_an_answer_in_two_segments_is_read_whole() -> None:
    result, trace = exchange(split_after_first_read(ANSWER, 10), mtproto_step(ANSWER_NONCE))
    assert result.failure is None
    assert operations(trace.network_events) == ["connect", "write", "read", "read", "close"]


@pytest.mark.parametrize(
    ("handler", "failure"),
    [
        (echo_first, "mtproto_invalid_response"),
        (send_after_first_read(HTTP_403), "mtproto_invalid_response"),
        (send_after_first_read(bytes(range(256)) * 4), "mtproto_invalid_response"),
        (reset_after_first_read, "connection_reset"),
        (close_after_first_read, "eof_error"),
        (send_after_first_read(ANSWER), "mtproto_nonce_mismatch"),
        (send_after_first_read(struct.pack("<Ii", 4, -404)), "mtproto_transport_error"),
        (split_after_first_read(ANSWER, 30, "close"), "mtproto_truncated_response"),
        (split_after_first_read(ANSWER, 30, "reset"), "connection_reset"),
    ],
    ids=["echo", "http-403", "garbage", "reset", "close", "nonce", "transport-error",
         "cut-by-fin", "cut-by-rst"],
)  # fmt: skip
def test_mtproto_failures(handler: StreamHandler, failure: str) -> None:
    result, trace = exchange(handler, mtproto_step())
    assert result.failure == failure
    [record] = trace.app_handshakes
    assert record["failure"] == failure
    assert response_of(record) == result.response[:KEPT_BYTES]
    assert record["response_bytes"] == len(result.response) <= MAX_RESPONSE


def test_mtproto_an_echo_is_recognised_from_its_first_bytes() -> None:
    result, trace = exchange(echo_first, mtproto_step())
    # The echo starts with ee ee ee ee: a length no resPQ has, so nothing more is waited for.
    assert result.response[:4] == M.INTERMEDIATE_TAG
    assert trace.app_handshakes[0]["response_bytes"] == len(result.response)


def test_mtproto_silence_is_a_timeout_at_the_deadline() -> None:
    result, trace = exchange(hold_open, mtproto_step(), seconds=0.4)
    assert result.failure == "generic_timeout_error"
    [record] = trace.app_handshakes
    assert (record["response"], record["response_bytes"]) == (None, 0)
    assert record["t"] - record["t0"] >= 0.3
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]
    assert trace.network_events[2]["failure"] == "generic_timeout_error"


def test_mtproto_part_of_an_answer_then_silence_is_a_timeout_with_the_bytes_kept() -> None:
    result, trace = exchange(split_after_first_read(ANSWER, 30, "hold"), mtproto_step(), 0.5)
    assert result.failure == "generic_timeout_error"
    assert response_of(trace.app_handshakes[0]) == ANSWER[:30]


def test_mtproto_the_request_is_the_documented_one() -> None:
    received: list[bytes] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    exchange(keep, mtproto_step(ANSWER_NONCE))
    assert received[0][:8] == bytes.fromhex("eeeeeeee28000000")
    assert M.parse_req_pq_multi(received[0]) == ANSWER_NONCE
    message_id = struct.unpack_from("<Q", received[0], 16)[0]
    assert message_id == M.message_id(NOW) and message_id % 4 == 0


# --- WhatsApp -----------------------------------------------------------------------------------


def test_whatsapp_the_labs_responder_answers_a_server_hello() -> None:
    result, trace = exchange(responder(answer_whatsapp), whatsapp_step)
    assert result.failure is None
    assert isinstance(result.answer, W.ServerFrame) and result.answer.server_hello
    [record] = trace.app_handshakes
    assert record["protocol"] == "whatsapp" and record["server_hello"] is True
    assert record["request_bytes"] == 43
    assert record["response_bytes"] == 3 + result.answer.length
    assert response_of(record) == result.response[:KEPT_BYTES]


def test_whatsapp_a_frame_that_is_not_a_server_hello_is_still_ok_but_said_so() -> None:
    result, trace = exchange(send_after_first_read(W.frame(b"\x00" * 12)), whatsapp_step)
    assert result.failure is None
    assert trace.app_handshakes[0]["server_hello"] is False


def test_whatsapp_the_opening_is_the_prologue_and_a_client_hello() -> None:
    received: list[bytes] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    exchange(keep, whatsapp_step)
    hello = W.parse_client_hello(received[0])
    assert received[0][:4] == b"WA\x06\x03"
    assert isinstance(hello, W.ClientHello) and hello.routing_info is None
    assert hello.ephemeral is not None and len(hello.ephemeral) == 32


@pytest.mark.parametrize(
    ("handler", "failure"),
    [
        (echo_first, "whatsapp_invalid_response"),
        (send_after_first_read(HTTP_403), "whatsapp_invalid_response"),
        (send_after_first_read(b"\x00\x00\x00garbage"), "whatsapp_invalid_response"),
        (reset_after_first_read, "connection_reset"),
        (close_after_first_read, "eof_error"),
        (split_after_first_read(W.frame(b"\x01" * 300), 100, "close"),
         "whatsapp_truncated_response"),
        (split_after_first_read(W.frame(b"\x01" * 300), 100, "reset"), "connection_reset"),
        # A frame of 60,000 bytes: far beyond any first answer; reading stops at 4 KiB.
        (send_after_first_read(W.frame(b"\x02" * 60_000)), "whatsapp_invalid_response"),
    ],
    ids=["echo", "http-403", "garbage", "reset", "close", "cut-by-fin", "cut-by-rst", "huge"],
)  # fmt: skip
def test_whatsapp_failures(handler: StreamHandler, failure: str) -> None:
    result, trace = exchange(handler, whatsapp_step)
    assert result.failure == failure
    [record] = trace.app_handshakes
    assert (record["failure"], record["server_hello"]) == (failure, False)
    assert record["response_bytes"] == len(result.response) <= MAX_RESPONSE


def test_whatsapp_silence_is_a_timeout() -> None:
    result, trace = exchange(hold_open, whatsapp_step, seconds=0.4)
    assert result.failure == "generic_timeout_error"
    assert trace.app_handshakes[0]["response"] is None


# --- in the chain -------------------------------------------------------------------------------


def endpoint(protocol: str, port: int) -> Endpoint:
    return Endpoint.model_validate({
        "id": "dc", "host": None, "address": "127.0.0.1", "port": port, "transport": "tcp",
        "protocol": protocol, "path": "/", "source": "test", "checked": dt.date(2026, 11, 24),
    })  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "handler", "failure", "step"),
    [
        ("mtproto", responder(answer_mtproto), None, None),
        ("mtproto", reset_after_first_read, "connection_reset", "app_handshake"),
        ("mtproto", echo_first, "mtproto_invalid_response", "app_handshake"),
        ("whatsapp_chat", responder(answer_whatsapp), None, None),
        ("whatsapp_chat", hold_open, "generic_timeout_error", "app_handshake"),
        ("tcp", hold_open, None, None),  # plain TCP: the connect is all
    ],
)
def test_the_chain_runs_the_handshake_after_the_connect(
    protocol: str, handler: StreamHandler, failure: str | None, step: str | None
) -> None:
    trace = Trace()

    async def scenario() -> Any:
        async with tcp_server(handler) as (_, port):
            return await run_chain(trace, "text", endpoint(protocol, port), ChainConfig(),
                                   deadline(0.5))  # fmt: skip

    outcome = asyncio.run(scenario())
    assert (outcome.failure, outcome.failed_step) == (failure, step)
    assert len(trace.app_handshakes) == (0 if protocol == "tcp" else 1)
    assert [e["operation"] for e in trace.network_events][-1] == "close"

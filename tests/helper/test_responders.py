"""The protocol responders: the lab's Telegram data centres and WhatsApp chat endpoints.

The probe's own steps (``msgwatch.steps.app``) are the client: what the lab serves must be
what the probe accepts as the service's answer. Raw sockets check the rest: anything that is not
the protocol's first message is closed unanswered, and the limits hold.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from msgwatch.helper.limits import Limits
from msgwatch.helper.responders import FINGERPRINTS, PQ, Responder, answer_mtproto
from msgwatch.helper.server import HelperConfig
from msgwatch.steps import net
from msgwatch.steps.app import AppResult, mtproto_handshake, whatsapp_hello
from msgwatch.steps.trace import Trace
from msgwatch.wire import mtproto as M
from msgwatch.wire import whatsapp as W
from tests.helper.util import config, running

NOW = 1_764_000_000.0


def responders(**changes: Any) -> HelperConfig:
    return config(tcp_ports=(), udp_ports=(), control_port=None,
                  mtproto_listen=[("127.0.0.1", 0)], whatsapp_listen=[("127.0.0.1", 0)],
                  **changes)  # fmt: skip


async def _probe(target: tuple[str, int], protocol: str) -> AppResult:
    trace = Trace()
    until = asyncio.get_running_loop().time() + 2.0
    conn = await net.tcp_connect(trace, 1, target[0], target[1], until)
    try:
        if protocol == "mtproto":
            return await mtproto_handshake(conn, until, NOW)
        return await whatsapp_hello(conn, until)
    finally:
        conn.close()


async def _raw(target: tuple[str, int], payload: bytes, wait: float = 1.0) -> tuple[bytes, bool]:
    """Send ``payload``; (what came back, whether the helper closed the connection)."""
    reader, writer = await asyncio.open_connection(*target)
    got = bytearray()
    closed = False
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:  # closed at once while our bytes were on the way
        closed = True
    finally:
        writer.close()
    return bytes(got), closed


def test_the_probe_gets_a_res_pq_and_a_server_hello() -> None:
    async def scenario() -> None:
        async with running(responders()) as helper:
            assert set(helper.bound) >= {"mtproto", "whatsapp"}
            mtproto = await _probe(helper.bound["mtproto"][0], "mtproto")
            assert mtproto.failure is None and isinstance(mtproto.answer, M.ResPQ)
            assert (mtproto.answer.pq, mtproto.answer.fingerprints) == (PQ, FINGERPRINTS)
            chat = await _probe(helper.bound["whatsapp"][0], "whatsapp")
            assert chat.failure is None and isinstance(chat.answer, W.ServerFrame)
            assert chat.answer.server_hello
            health = helper.health()
            assert health["counters"]["mtproto"]["answered"] == 1
            assert health["counters"]["whatsapp"]["answered"] == 1
            assert set(health["listen"]) == {"udp", "tcp", "control", "mtproto", "whatsapp"}

    asyncio.run(scenario())


def test_the_abridged_transport_is_answered_in_kind() -> None:
    nonce = os.urandom(16)
    request = M.req_pq_multi(nonce, M.message_id(NOW), transport="abridged")

    async def scenario() -> None:
        async with running(responders()) as helper:
            answer, closed = await _raw(helper.bound["mtproto"][0], request, wait=0.3)
            assert not closed  # held open, as a data centre waiting for req_DH_params
            parsed = M.parse_res_pq(answer, nonce, transport="abridged")
            assert isinstance(parsed, M.ResPQ) and parsed.message_id % 4 == 1

    asyncio.run(scenario())


def test_a_request_in_pieces_is_answered_once_whole() -> None:
    nonce = os.urandom(16)
    request = M.req_pq_multi(nonce, M.message_id(NOW))

    async def scenario() -> None:
        async with running(responders()) as helper:
            reader, writer = await asyncio.open_connection(*helper.bound["mtproto"][0])
            for i in range(0, len(request), 7):
                writer.write(request[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.01)
            answer = await asyncio.wait_for(reader.read(4096), 1.0)
            writer.close()
            assert isinstance(M.parse_res_pq(answer, nonce), M.ResPQ)

    asyncio.run(scenario())


def test_anything_else_is_closed_unanswered() -> None:
    nonce = os.urandom(16)
    request = M.req_pq_multi(nonce, M.message_id(NOW))

    async def scenario() -> None:
        async with running(responders()) as helper:
            mtproto, chat = helper.bound["mtproto"][0], helper.bound["whatsapp"][0]
            for target, payload in [
                (mtproto, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                (mtproto, b"\x16\x03\x01\x02\x00" + os.urandom(100)),  # a TLS ClientHello
                (mtproto, W.client_hello(os.urandom(32))),  # the other protocol
                (chat, request),
                (chat, b"WA\x06\x03" + W.frame(b"\x08\x01")),  # a frame, not a ClientHello
                (chat, os.urandom(64)),
            ]:
                assert await _raw(target, payload) == (b"", True), payload[:8]
            # Bytes after the answer end the connection too: the responder speaks no further.
            reader, writer = await asyncio.open_connection(*mtproto)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(4096), 1.0)
            assert isinstance(M.parse_res_pq(answer, nonce), M.ResPQ)
            writer.write(b"\x00" * 8)
            assert await asyncio.wait_for(reader.read(4096), 1.0) == b""
            writer.close()
            counters = helper.health()["counters"]
            assert counters["mtproto"]["rejected"] == 3 and counters["whatsapp"]["rejected"] == 3

    asyncio.run(scenario())


def test_a_first_message_that_never_ends_is_cut_at_the_bound() -> None:
    async def scenario() -> None:
        async with running(responders()) as helper:
            # An edge-routing pre-intro announcing 1 KiB of routing info, then 8 KiB of it.
            opening = b"ED\x00\x01" + (1024).to_bytes(3, "big") + b"\x00" * 8192
            got, closed = await _raw(helper.bound["whatsapp"][0], opening)
            assert (got, closed) == (b"", True)

    asyncio.run(scenario())


def test_connections_per_client_and_the_byte_budget_are_limited() -> None:
    request = M.req_pq_multi(os.urandom(16), M.message_id(NOW))

    async def scenario() -> None:
        limits = Limits(budget_bytes=1000, rate_pps=100)
        handler = Responder("mtproto", limits, max_per_client=2, idle=1.0)
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[:2]
        try:
            held = [await asyncio.open_connection(*target) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert await _raw(target, request) == (b"", True)  # a third at once: refused
            assert handler.counters.refused == 1
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.05)
            answered = 0
            for _ in range(15):  # 88 bytes each: the 1000-byte budget lasts 11 answers
                answer, _ = await _raw(target, request, wait=0.05)
                answered += bool(answer)
            assert answered == 11 and handler.counters.over_budget == 4
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_answers_are_pure_functions_of_the_bytes_and_the_time() -> None:
    nonce = os.urandom(16)
    request = M.req_pq_multi(nonce, M.message_id(NOW))
    assert answer_mtproto(request[:20], NOW) is None  # more bytes needed
    answer = answer_mtproto(request, NOW)
    assert isinstance(answer, bytes)
    parsed = M.parse_res_pq(answer, nonce)
    assert isinstance(parsed, M.ResPQ) and parsed.message_id == M.message_id(NOW, response=True)
    assert answer_mtproto(b"\x16\x03\x01", NOW) == M.INVALID

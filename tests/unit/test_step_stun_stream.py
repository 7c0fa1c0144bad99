"""TURN Allocate over TCP and TLS (the relays' fallback on 443), against in-process servers."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Callable

import pytest

from msgwatch.analysis.verdicts.judge import judge_target
from msgwatch.catalogue import Endpoint
from msgwatch.catalogue.schema import Transport
from msgwatch.probe.chains import ChainConfig, ChainOutcome, run_chain
from msgwatch.steps import net
from msgwatch.steps.stun import Kind, STUNResult, message_length, stun_stream_exchange
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    PKI,
    StreamHandler,
    close_after_first_read,
    deadline,
    hold_open,
    reset_after_first_read,
    send_after_first_read,
    server_tls,
    stun_reply,
    tcp_server,
)

NAME = "chat.example.test"


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(20)
    return header + await reader.readexactly(int.from_bytes(header[2:4], "big"))


def turn_server(answer: Callable[[bytes], list[bytes]], pause: float = 0.0) -> StreamHandler:
    """Reads one STUN message; writes the pieces ``answer`` makes of the response, ``pause`` apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_message(reader)
        for piece in answer(request):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)
        await reader.read()  # until the client closes

    return handle


def challenge(request: bytes) -> list[bytes]:
    return [stun_reply(request, error=(401, "Unauthorized"), realm="lab", nonce=b"0123456789ab")]


def _exchange(handler: StreamHandler, kind: Kind = "turn") -> tuple[Trace, STUNResult]:
    trace = Trace()

    async def scenario() -> STUNResult:
        async with tcp_server(handler) as (ip, port):
            conn = await net.tcp_connect(trace, 3, ip, port, deadline(2.0))
            try:
                return await stun_stream_exchange(trace, 3, kind, conn, "tcp", deadline(1.0))
            finally:
                conn.close()

    return trace, asyncio.run(scenario())


def test_a_401_challenge_over_tcp_proves_the_fallback() -> None:
    trace, result = _exchange(turn_server(challenge))
    assert (result.failure, result.error_code) == (None, 401)
    (record,) = trace.udp_exchanges
    assert (record["transport"], record["protocol"], record["request"]["method"]) == (
        "tcp", "turn", "allocate",
    )  # fmt: skip
    (response,) = record["responses"]
    assert (response["class"], response["error_code"], response["realm"]) == ("error", 401, "lab")
    assert len(record["attempts"]) == 1  # a stream: sent once


def test_an_answer_in_pieces_is_reassembled() -> None:
    def pieces(request: bytes) -> list[bytes]:
        (whole,) = challenge(request)
        return [whole[:7], whole[7:23], whole[23:]]

    _, result = _exchange(turn_server(pieces, pause=0.02))
    assert (result.failure, result.error_code) == (None, 401)


def test_another_transactions_answer_is_kept_and_waited_past() -> None:
    def twice(request: bytes) -> list[bytes]:
        (answer,) = challenge(request)
        other = bytearray(answer)
        other[8:20] = bytes(12)  # an answer to another transaction (its FINGERPRINT no longer fits)
        return [bytes(other), answer]

    trace, result = _exchange(turn_server(twice))
    assert result.failure is None
    assert [r["class"] for r in trace.udp_exchanges[0]["responses"]] == ["invalid", "error"]


def test_a_binding_over_tcp() -> None:
    def success(request: bytes) -> list[bytes]:
        return [stun_reply(request, mapped=("127.0.0.1", 4242))]

    _, result = _exchange(turn_server(success), kind="stun")
    assert (result.failure, result.mapped_address) == (None, "127.0.0.1")


def test_no_challenge_and_errors() -> None:
    _, result = _exchange(turn_server(lambda r: [stun_reply(r, error=(401, "Unauthorized"))]))
    assert result.failure == "turn_no_challenge"
    _, result = _exchange(turn_server(lambda r: [stun_reply(r, error=(403, "Forbidden"))]))
    assert result.failure == "stun_error_response"


@pytest.mark.parametrize(
    ("handler", "failure"),
    [
        (reset_after_first_read, "connection_reset"),
        (close_after_first_read, "eof_error"),
        (hold_open, "generic_timeout_error"),
        (send_after_first_read(b"HTTP/1.1 400 Bad Request\r\n\r\n"), "stun_invalid_response"),
    ],
)
def test_what_kills_the_exchange(handler: StreamHandler, failure: str) -> None:
    trace, result = _exchange(handler)
    assert result.failure == failure
    record = trace.udp_exchanges[0]
    assert record["failure"] == failure
    if failure == "stun_invalid_response":  # what came instead is the evidence
        raw = base64.b64decode(record["responses"][0]["raw"]["data"])
        assert raw.startswith(b"HTTP/1.1 400")


def test_message_length() -> None:
    assert message_length(bytes.fromhex("0113000c2112a442") + bytes(12)) == 32
    assert message_length(b"HTTP/1.1 400 Bad Req") is None
    assert message_length(bytes.fromhex("01130006") + bytes.fromhex("2112a442") + bytes(12)) is None


def _endpoint(port: int, transport: Transport) -> Endpoint:
    return Endpoint(id="relay-turn-tcp443", host=NAME, address="127.0.0.1", port=port,
                    transport=transport, protocol="turn", path="/", source="s",
                    checked=dt.date(2026, 11, 24))  # fmt: skip


def _chain(
    handler: StreamHandler, transport: Transport, pki: PKI | None = None
) -> tuple[Trace, ChainOutcome]:
    trace = Trace()
    tls = server_tls(pki.chat, alpn=("stun.turn",)) if pki is not None else None

    async def scenario() -> ChainOutcome:
        async with tcp_server(handler, tls) as (_, port):
            config = ChainConfig(ca_bundle=str(pki.ca) if pki else None)
            return await run_chain(
                trace, "voice", _endpoint(port, transport), config, deadline(1.5)
            )

    return trace, asyncio.run(scenario())


def _target(outcome: ChainOutcome) -> dict[str, object]:
    return {"function": "voice", "role": "endpoint", "transport": outcome.endpoint.transport,
            "protocol": "turn", "transaction_ids": outcome.transaction_ids,
            "failure": outcome.failure, "failed_step": outcome.failed_step}  # fmt: skip


def test_the_chain_runs_turn_over_tcp_after_the_connect() -> None:
    trace, outcome = _chain(turn_server(challenge), "tcp")
    assert (outcome.failure, outcome.failed_step) == (None, None)
    assert trace.udp_exchanges[0]["transport"] == "tcp"
    # A connect that passes and a protocol that is cut: the first exchange's rules decide.
    trace, outcome = _chain(reset_after_first_read, "tcp")
    assert (outcome.failure, outcome.failed_step) == ("connection_reset", "app_handshake")
    rule, _ = judge_target(_target(outcome), trace.test_keys())
    assert (rule.verdict, rule.mechanism) == ("blocked", "app.reset")


def test_the_chain_runs_turn_over_tls(pki: PKI) -> None:
    trace, outcome = _chain(turn_server(challenge), "tls", pki)
    assert (outcome.failure, outcome.failed_step, outcome.verified) == (None, None, True)
    (record,) = trace.udp_exchanges
    assert (record["transport"], record["failure"]) == ("tls", None)
    assert record["responses"][0]["error_code"] == 401

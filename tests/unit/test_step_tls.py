"""TLS handshakes over a traced TCP connection: valid, intercepted, refused, reset, garbled, silent."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import pytest

from msgwatch.steps import net
from msgwatch.steps.tls import TLSConn, tls_context, tls_handshake
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    HANDSHAKE_EVENTS,
    PKI,
    TLS_ALERT_HANDSHAKE_FAILURE,
    StreamHandler,
    close_after_first_read,
    deadline,
    hold_open,
    operations,
    reset_after_first_read,
    send_after_first_read,
    server_tls,
    tcp_server,
)

NAME = "chat.example.test"
# The client's side of a handshake that ends at the server's first answer: ClientHello out, one read
# (the server's flight, an alert, garbage, or the reset/EOF/timeout in its place), then the verdict.
UP_TO_SERVER_FLIGHT = ["connect", "tls_handshake_start", "write", "read", "tls_handshake_done"]


def _der(record: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(c["data"]) for c in record["peer_certificates"]]


def _handshake(
    handler: StreamHandler,
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str = NAME,
    seconds: float = 2.0,
    **options: Any,
) -> tuple[Trace, TLSConn | BaseException]:
    """Connect to a server running ``handler`` and hand shake; the session or the exception."""
    trace = Trace()

    async def scenario() -> TLSConn | BaseException:
        async with tcp_server(handler, tls) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                return await tls_handshake(conn, server_name, deadline(seconds), **options)
            except Exception as exc:
                return exc
            finally:
                conn.close()

    return trace, asyncio.run(scenario())


def test_valid_handshake(pki: PKI) -> None:
    trace, session = _handshake(hold_open, tls=server_tls(pki.chat), ca_bundle=str(pki.ca))
    assert isinstance(session, TLSConn)
    assert session.alpn == "http/1.1"
    [record] = trace.tls_handshakes
    assert record["failure"] is None
    assert record["network"] == "tcp"
    assert record["address"] == trace.tcp_connect[0]["ip"] + f":{trace.tcp_connect[0]['port']}"
    assert record["server_name"] == NAME
    assert record["tls_version"] == "TLSv1.3"
    assert record["cipher_suite"] == "TLS_AES_256_GCM_SHA384"
    assert record["offered_alpn"] == ["h2", "http/1.1"]
    assert record["negotiated_protocol"] == "http/1.1"
    assert record["no_tls_verify"] is False
    assert _der(record) == [pki.chat.der, pki.chat.issuer_der]  # as sent, leaf first
    assert record["peer_certificates"][0]["format"] == "base64"
    assert record["transaction_id"] == 1
    assert "tags" not in record
    assert operations(trace.network_events) == [*HANDSHAKE_EVENTS, "close"]
    assert all(e["failure"] is None for e in trace.network_events)


def test_wrong_name_keeps_the_certificate(pki: PKI) -> None:
    trace, error = _handshake(hold_open, tls=server_tls(pki.other), ca_bundle=str(pki.ca))
    assert isinstance(error, ssl.SSLCertVerificationError)
    [record] = trace.tls_handshakes
    assert record["failure"] == "ssl_invalid_hostname"
    assert _der(record) == [pki.other.der, pki.other.issuer_der]  # the evidence of interception
    assert (record["tls_version"], record["cipher_suite"], record["negotiated_protocol"]) == (
        "",
        "",
        "",
    )
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]
    assert trace.network_events[-2]["failure"] == "ssl_invalid_hostname"


def test_unknown_authority(pki: PKI) -> None:
    trace, error = _handshake(hold_open, tls=server_tls(pki.rogue), ca_bundle=str(pki.ca))
    assert isinstance(error, ssl.SSLCertVerificationError)
    [record] = trace.tls_handshakes
    assert record["failure"] == "ssl_unknown_authority"
    assert _der(record) == [pki.rogue.der, pki.rogue.issuer_der]
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]


def test_server_alert_is_a_failed_handshake(pki: PKI) -> None:
    trace, error = _handshake(
        send_after_first_read(TLS_ALERT_HANDSHAKE_FAILURE), ca_bundle=str(pki.ca)
    )
    assert isinstance(error, ssl.SSLError)
    [record] = trace.tls_handshakes
    assert record["failure"] == "ssl_failed_handshake"
    assert record["peer_certificates"] == []
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]
    assert trace.network_events[3]["num_bytes"] == len(TLS_ALERT_HANDSHAKE_FAILURE)


def test_reset_after_client_hello(pki: PKI) -> None:
    trace, error = _handshake(reset_after_first_read, ca_bundle=str(pki.ca))
    assert isinstance(error, ConnectionResetError)
    [record] = trace.tls_handshakes
    assert record["failure"] == "connection_reset"
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]
    assert [e["failure"] for e in trace.network_events] == [
        None,
        None,
        None,
        "connection_reset",
        "connection_reset",
        None,
    ]


def test_fin_after_client_hello_is_eof(pki: PKI) -> None:
    trace, error = _handshake(close_after_first_read, ca_bundle=str(pki.ca))
    assert isinstance(error, ssl.SSLEOFError)
    assert [r["failure"] for r in trace.tls_handshakes] == ["eof_error"]
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]
    assert trace.network_events[3]["failure"] == "eof_error"


def test_garbage_is_a_failed_handshake(pki: PKI) -> None:
    garbage = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    trace, error = _handshake(send_after_first_read(garbage), ca_bundle=str(pki.ca))
    assert isinstance(error, ssl.SSLError)
    assert [r["failure"] for r in trace.tls_handshakes] == ["ssl_failed_handshake"]
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]


def test_silence_after_client_hello_times_out(pki: PKI) -> None:
    trace, error = _handshake(hold_open, ca_bundle=str(pki.ca), seconds=0.3)
    assert isinstance(error, TimeoutError)
    [record] = trace.tls_handshakes
    assert record["failure"] == "generic_timeout_error"
    assert operations(trace.network_events) == [*UP_TO_SERVER_FLIGHT, "close"]
    assert trace.network_events[3]["failure"] == "generic_timeout_error"
    assert 0.3 <= record["t"] - record["t0"] < 1.0


def test_benign_sni_control_without_verification(pki: PKI) -> None:
    # The server only has a certificate for chat.example.test: without verification the handshake
    # with another name still completes, which is what the control needs.
    trace, session = _handshake(
        hold_open,
        tls=server_tls(pki.chat),
        server_name="example.com",
        verify=False,
        tags=["control"],
    )
    assert isinstance(session, TLSConn)
    [record] = trace.tls_handshakes
    assert record["failure"] is None
    assert record["tags"] == ["control"]
    assert record["server_name"] == "example.com"
    assert record["no_tls_verify"] is True
    assert _der(record) == [pki.chat.der, pki.chat.issuer_der]


def test_session_carries_application_data(pki: PKI) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read(100)).upper())
        await writer.drain()
        await hold_open(reader, writer)

    trace = Trace()

    async def scenario() -> bytes:
        async with tcp_server(echo, server_tls(pki.chat)) as (ip, port):
            conn = await net.tcp_connect(trace, 1, ip, port, deadline(2.0))
            try:
                session = await tls_handshake(conn, NAME, deadline(2.0), ca_bundle=str(pki.ca))
                await session.write(b"ping", deadline(2.0))
                return await session.read(deadline(2.0))
            finally:
                conn.close()

    assert asyncio.run(scenario()) == b"PING"
    assert operations(trace.network_events)[-3:] == ["write", "read", "close"]


@pytest.mark.parametrize("verify", [True, False])
def test_contexts_are_cached(pki: PKI, verify: bool) -> None:
    first = tls_context(str(pki.ca), verify, ("http/1.1",))
    assert tls_context(str(pki.ca), verify, ("http/1.1",)) is first
    assert first.check_hostname is verify

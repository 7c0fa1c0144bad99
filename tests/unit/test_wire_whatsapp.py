"""WhatsApp's chat opening: the documented prologue and framing, and hostile answers.

Expected bytes are written out by hand from the sources named in ``msgwatch.wire.whatsapp``:
``57 41 06 03`` (whatsmeow ``WAConnHeader``), a 3-byte big-endian frame length (0x24 = 36), and
``12 22 0a 20`` = protobuf field 2 (clientHello, 34 bytes) holding field 1 (ephemeral, 32 bytes).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgwatch.wire import whatsapp as W

EPHEMERAL = bytes(range(32))


def test_client_hello_bytes() -> None:
    wire = W.client_hello(EPHEMERAL)
    assert wire == bytes.fromhex("5741060300002412220a20") + EPHEMERAL
    assert len(wire) == 43


def test_client_hello_with_edge_routing_matches_ndpi() -> None:
    wire = W.client_hello(EPHEMERAL, routing_info=bytes.fromhex("08051001"))
    assert wire.startswith(bytes.fromhex("4544000100000408"))  # nDPI whatsapp.c's WA_SEQ_NEW
    assert wire[11:15] == b"WA\x06\x03"
    short = W.client_hello(EPHEMERAL, routing_info=bytes.fromhex("0805"))
    assert short.startswith(bytes.fromhex("4544000100000208"))  # WA_SEQ_OLD


def test_lab_side_reads_the_opening() -> None:
    for routing in (None, b"\x08\x05\x10\x01"):
        wire = W.client_hello(EPHEMERAL, routing_info=routing, version=(5, 2))
        hello = W.parse_client_hello(wire + b"trailing")
        assert hello == W.ClientHello(routing, (5, 2), EPHEMERAL, len(wire))
    for cut in range(len(wire)):
        assert W.parse_client_hello(wire[:cut]) == W.TRUNCATED, cut
    assert W.parse_client_hello(b"GET / HTTP/1.1\r\n") == W.INVALID
    assert W.parse_client_hello(b"EX\x00\x01\x00\x00\x00WA\x06\x03") == W.INVALID
    assert W.parse_client_hello(b"ED\x00\x01\xff\xff\xff") == W.INVALID  # routing info too long
    not_a_hello = b"WA\x06\x03" + W.frame(b"\x1a\x02\x0a\x00")
    parsed = W.parse_client_hello(not_a_hello)
    assert isinstance(parsed, W.ClientHello) and parsed.ephemeral is None


def test_server_hello_round_trip() -> None:
    wire = W.server_hello(bytes(32), bytes(48), bytes(300))
    assert wire[:3] == (len(wire) - 3).to_bytes(3, "big")
    assert wire[3] == 0x1A  # field 3 (serverHello), length-delimited
    answer = W.parse_server_hello(wire + b"more frames")
    assert answer == W.ServerFrame(len(wire) - 3, wire[3:], server_hello=True)
    assert W.response_size(wire) == len(wire)


def test_any_frame_is_enough() -> None:
    """Framing is what is checked; the shape of the content is evidence only."""
    answer = W.parse_server_hello(W.frame(b"opaque bytes"))
    assert isinstance(answer, W.ServerFrame) and not answer.server_hello
    short_key = W.parse_server_hello(W.server_hello(bytes(16), b"", b""))
    assert isinstance(short_key, W.ServerFrame) and not short_key.server_hello


def test_every_prefix_is_truncated() -> None:
    wire = W.server_hello(bytes(32), bytes(48), bytes(100))
    for cut in range(len(wire)):
        assert W.parse_server_hello(wire[:cut]) == W.TRUNCATED, cut


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 403 Forbidden\r\n\r\n",
        bytes.fromhex("15030300020228"),  # TLS alert
        bytes.fromhex("160303007a"),  # TLS handshake record
        b"<html><body>blocked</body></html>",
        b"\x00\x00\x00",  # zero-length frame
        b"\xff\xff\xff" + bytes(10),
    ],
)
def test_hostile_answers_are_invalid(data: bytes) -> None:
    assert W.parse_server_hello(data) == W.INVALID


def test_response_size() -> None:
    assert W.response_size(b"\x00\x01") is None
    assert W.response_size(b"\x00\x01\x00") == 3 + 256
    assert W.response_size(b"HTTP") == 3  # absurd length: nothing to wait for


def test_builders_refuse_impossible_arguments() -> None:
    with pytest.raises(ValueError):
        W.client_hello(bytes(31))
    with pytest.raises(ValueError):
        W.client_hello(EPHEMERAL, version=(6, 256))
    with pytest.raises(ValueError):
        W.frame(b"")
    with pytest.raises(ValueError):
        W.edge_routing(bytes(W.MAX_ROUTING_INFO + 1))


@given(st.binary(max_size=400))
def test_parsers_never_raise(data: bytes) -> None:
    server = W.parse_server_hello(data)
    assert isinstance(server, W.ServerFrame) or server in {W.INVALID, W.TRUNCATED}
    client = W.parse_client_hello(data)
    assert isinstance(client, W.ClientHello) or client in {W.INVALID, W.TRUNCATED}
    W.response_size(data)


@given(st.binary(max_size=200))
def test_framed_garbage_is_accepted_as_a_frame(body: bytes) -> None:
    if body:
        answer = W.parse_server_hello(W.frame(body))
        assert isinstance(answer, W.ServerFrame) and answer.frame == body

"""MTProto's first exchange against the worked example on core.telegram.org, and hostile answers.

The vectors are from https://core.telegram.org/mtproto/samples-auth_key:

- the request of the current page (``req_pq_multi``): message_id ``60 97 05 00 EB E5 77 67``,
  nonce ``79F0AFB50252E5FC96924BFCECDA4F05``, 40 bytes of payload;
- the answer of the page's older revision (the one with ``req_pq``; the same ``resPQ``):
  message_id ``01 C8 83 1E C9 7A E5 51``, nonce ``3E0549828CCA27E966B301A48FECE2FC``, server_nonce
  ``A5CF4D33F4A11EA877BA4AA573907330``, pq ``17ED48941A08F981`` (= 0x494C553B × 0x53911073),
  fingerprint ``0xc3b42b026ce86b21``; the same 84 bytes appear in the test suites of several
  independent MTProto libraries.

The framing around them is computed by hand from /mtproto/mtproto-transports: intermediate is
``ee ee ee ee`` + uint32 LE length (0x28 = 40) + payload; abridged is ``ef`` + length/4 (0x0a).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgwatch.wire import mtproto as M

REQUEST_PAYLOAD = bytes.fromhex(
    "0000000000000000"  # auth_key_id
    "60970500ebe57767"  # message_id
    "14000000"  # message_length = 20
    "f18e7ebe"  # req_pq_multi#be7e8ef1
    "79f0afb50252e5fc96924bfcecda4f05"  # nonce
)
REQUEST_NONCE = bytes.fromhex("79F0AFB50252E5FC96924BFCECDA4F05")
REQUEST_MESSAGE_ID = int.from_bytes(bytes.fromhex("60970500EBE57767"), "little")

ANSWER_PAYLOAD = bytes.fromhex(
    "0000000000000000"
    "01c8831ec97ae551"
    "40000000"  # 64 bytes of body
    "63241605"  # resPQ#05162463
    "3e0549828cca27e966b301a48fece2fc"  # nonce
    "a5cf4d33f4a11ea877ba4aa573907330"  # server_nonce
    "0817ed48941a08f981000000"  # pq: length 8, 8 bytes, 3 bytes of padding
    "15c4b51c"  # vector
    "01000000"  # one element
    "216be86c022bb4c3"  # fingerprint, little-endian
)
ANSWER_NONCE = bytes.fromhex("3E0549828CCA27E966B301A48FECE2FC")
ANSWER = struct.pack("<I", len(ANSWER_PAYLOAD)) + ANSWER_PAYLOAD


def test_request_matches_the_documented_bytes() -> None:
    wire = M.req_pq_multi(REQUEST_NONCE, REQUEST_MESSAGE_ID)
    assert wire == bytes.fromhex("eeeeeeee28000000") + REQUEST_PAYLOAD
    assert len(wire) == 48
    abridged = M.req_pq_multi(REQUEST_NONCE, REQUEST_MESSAGE_ID, transport="abridged")
    assert abridged == bytes.fromhex("ef0a") + REQUEST_PAYLOAD
    later = M.req_pq_multi(REQUEST_NONCE, REQUEST_MESSAGE_ID, first=False)
    assert later == bytes.fromhex("28000000") + REQUEST_PAYLOAD


def test_documented_answer_parses() -> None:
    answer = M.parse_res_pq(ANSWER, ANSWER_NONCE)
    assert answer == M.ResPQ(
        message_id=0x51E57AC91E83C801,
        nonce=ANSWER_NONCE,
        server_nonce=bytes.fromhex("A5CF4D33F4A11EA877BA4AA573907330"),
        pq=bytes.fromhex("17ED48941A08F981"),
        fingerprints=(0xC3B42B026CE86B21,),
    )
    assert answer.message_id % 4 == 1  # a response
    assert int.from_bytes(answer.pq, "big") == 0x494C553B * 0x53911073


def test_server_side_reproduces_the_documented_answer() -> None:
    wire = M.res_pq(
        ANSWER_NONCE,
        bytes.fromhex("A5CF4D33F4A11EA877BA4AA573907330"),
        bytes.fromhex("17ED48941A08F981"),
        [0xC3B42B026CE86B21],
        message_id=0x51E57AC91E83C801,
    )
    assert wire == ANSWER
    assert M.response_size(wire) == len(wire)


def test_abridged_round_trip_and_long_pq() -> None:
    nonce, server_nonce = bytes(range(16)), bytes(range(16, 32))
    pq = bytes(range(1, 60))
    wire = M.res_pq(nonce, server_nonce, pq, [1, 2**64 - 1, -1], message_id=5, transport="abridged")
    assert wire[0] == (len(wire) - 1) // 4
    answer = M.parse_res_pq(wire, nonce, transport="abridged")
    assert isinstance(answer, M.ResPQ)
    assert answer.pq == pq and answer.fingerprints == (1, 2**64 - 1, 2**64 - 1)
    assert M.response_size(wire, transport="abridged") == len(wire)


def test_abridged_long_length() -> None:
    payload = bytes(4 * 200)
    framed = M.frame(payload, transport="abridged", first=True)
    assert framed[:5] == b"\xef\x7f\xc8\x00\x00"
    assert M.response_size(framed[1:], transport="abridged") == 4 + 800


def test_message_id() -> None:
    now = 1_700_000_000.25
    client = M.message_id(now)
    assert client % 4 == 0 and M.message_id(now, response=True) % 4 == 1
    assert abs(client / 2**32 - now) < 1e-6
    assert M.message_id(now + 0.001) > client


def test_wrong_nonce() -> None:
    assert M.parse_res_pq(ANSWER, bytes(16)) == M.NONCE_MISMATCH


def test_every_prefix_is_truncated() -> None:
    for cut in range(len(ANSWER)):
        assert M.parse_res_pq(ANSWER[:cut], ANSWER_NONCE) == M.TRUNCATED, cut


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        bytes.fromhex("15030300020228"),  # a TLS alert
        b"\xff\xff\xff\xff" + bytes(64),  # huge length
        struct.pack("<I", 6) + bytes(6),  # not a multiple of 4
        struct.pack("<I", 0),
        struct.pack("<I", 4) + struct.pack("<i", 5),  # 4 bytes, not an error code
        struct.pack("<I", 40) + bytes(40),  # too short to be resPQ
        ANSWER[:4] + b"\x01" + ANSWER[5:],  # auth_key_id not 0
        ANSWER[:24] + b"\x00\x00\x00\x00" + ANSWER[28:],  # wrong constructor
        ANSWER[:20] + b"\x41" + ANSWER[21:],  # message_length disagrees
        ANSWER[:-12] + struct.pack("<i", 2) + ANSWER[-8:],  # vector count beyond the data
        ANSWER[:-12] + struct.pack("<i", -1) + ANSWER[-8:],  # negative count
        ANSWER[:60] + b"\xff" + ANSWER[61:],  # pq length byte 0xff
    ],
)
def test_hostile_answers_are_invalid(data: bytes) -> None:
    assert M.parse_res_pq(data, ANSWER_NONCE) == M.INVALID


def test_huge_length_is_not_waited_for() -> None:
    assert M.response_size(b"\xff\xff\xff\xff") == 4
    assert M.response_size(b"\xee\xee") is None
    assert M.response_size(b"\xff", transport="abridged") == 1


def test_transport_error() -> None:
    data = struct.pack("<I", 4) + struct.pack("<i", -404)
    assert M.parse_res_pq(data, ANSWER_NONCE) == M.TRANSPORT_ERROR
    assert M.transport_error_code(data) == -404
    assert M.transport_error_code(ANSWER) is None
    assert M.transport_error_code(b"\x01" + struct.pack("<i", -429), transport="abridged") == -429


def test_lab_side_reads_the_request() -> None:
    wire = M.req_pq_multi(REQUEST_NONCE, REQUEST_MESSAGE_ID)
    assert M.parse_req_pq_multi(wire) == REQUEST_NONCE
    abridged = M.req_pq_multi(REQUEST_NONCE, REQUEST_MESSAGE_ID, transport="abridged")
    assert M.parse_req_pq_multi(abridged, transport="abridged") == REQUEST_NONCE
    assert M.parse_req_pq_multi(wire[:20]) == M.TRUNCATED
    assert M.parse_req_pq_multi(b"GET / HTTP/1.1\r\n\r\n") == M.INVALID
    assert M.parse_req_pq_multi(wire[:-20] + bytes(20)) == M.INVALID  # nonce fine, constructor not
    tampered = wire[:28] + b"\x00" + wire[29:]
    assert M.parse_req_pq_multi(tampered) == M.INVALID


def test_builders_refuse_impossible_arguments() -> None:
    with pytest.raises(ValueError):
        M.req_pq_multi(b"short", 4)
    with pytest.raises(ValueError):
        M.req_pq_multi(bytes(16), -4)
    with pytest.raises(ValueError):
        M.res_pq(bytes(16), bytes(16), b"", [0] * 33, message_id=1)
    with pytest.raises(ValueError):
        M.frame(b"abc")


@given(st.binary(max_size=300), st.sampled_from(["intermediate", "abridged"]))
def test_parse_never_raises(data: bytes, transport: M.Transport) -> None:
    result = M.parse_res_pq(data, ANSWER_NONCE, transport=transport)
    assert isinstance(result, M.ResPQ) or result in {
        M.INVALID, M.TRUNCATED, M.NONCE_MISMATCH, M.TRANSPORT_ERROR
    }  # fmt: skip
    M.parse_req_pq_multi(data, transport=transport)
    M.response_size(data, transport=transport)
    M.transport_error_code(data, transport=transport)


@given(st.integers(min_value=0, max_value=len(ANSWER) - 1), st.binary(min_size=1, max_size=8))
def test_corrupted_answers_never_raise(position: int, noise: bytes) -> None:
    data = ANSWER[:position] + noise + ANSWER[position + len(noise) :]
    result = M.parse_res_pq(data, ANSWER_NONCE)
    assert isinstance(result, (M.ResPQ, str))

"""STUN, RTP and RTCP primitives, checked against aioice's STUN codec and RFC 3550's layouts."""

from __future__ import annotations

import struct

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from msgwatch.wire import packets as P

TXID = bytes(range(12))


def test_binding_request_parses_with_aioice() -> None:
    data = P.stun_message(P.BINDING_REQUEST, TXID, [(0x8022, b"msgwatch")])
    message = stun.parse_message(data)  # verifies length and FINGERPRINT
    assert message.message_method == stun.Method.BINDING
    assert message.message_class == stun.Class.REQUEST
    assert message.transaction_id == TXID
    assert message.attributes["SOFTWARE"] == "msgwatch"
    assert data[4:8] == bytes.fromhex("2112a442")
    assert P.fingerprint_ok(data)


def test_message_integrity_checks_with_aioice() -> None:
    key = b"VOkJxbRl1RmTxUk/WvJxBt"
    data = P.stun_message(P.BINDING_REQUEST, TXID, [(0x0006, b"evtj:h6vY")], integrity_key=key)
    message = stun.parse_message(data)
    assert message.check_message_integrity(key)
    assert not message.check_message_integrity(b"another key")


def test_same_bytes_as_aioice_for_known_attributes() -> None:
    ours = P.stun_message(P.BINDING_REQUEST, TXID, [(0x8022, b"msgwatch")])
    theirs = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TXID)
    theirs.attributes["SOFTWARE"] = "msgwatch"
    theirs.add_fingerprint()
    assert ours == bytes(theirs)


def test_vendor_attributes_and_padding() -> None:
    data = P.stun_message(0x0800, TXID, [(0x4000, b"abc"), (0x8070, struct.pack("!I", 2))])
    header = P.read_stun(data)
    assert header is not None
    assert header.msg_type == 0x0800
    assert header.cookie == P.STUN_COOKIE
    assert header.length == len(data) - 20
    assert [kind for kind, _ in header.attributes] == [0x4000, 0x8070, P.FINGERPRINT]
    assert header.attributes[0][1] == b"abc"  # padding removed
    assert P.fingerprint_ok(data)
    with pytest.raises(ValueError):
        stun.parse_message(
            data
        )  # aioice knows no method 0x0800: why the module has its own builder


def test_read_stun_reads_aioice_messages() -> None:
    message = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, TXID)
    message.attributes["REQUESTED-TRANSPORT"] = 17 << 24
    message.add_fingerprint()
    header = P.read_stun(bytes(message))
    assert header is not None
    assert header.msg_type == 0x0003
    assert header.transaction_id == TXID


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(11),  # 19 bytes
        b"\xc0\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # top bits set
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12),  # length says 4, nothing follows
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\x00\x01\x00\x08",  # attribute overruns
    ],
)
def test_read_stun_refuses_malformed(data: bytes) -> None:
    assert P.read_stun(data) is None


def test_rtp_round_trip() -> None:
    data = P.rtp_packet(
        payload_type=111, sequence=65535, timestamp=2**32 - 1, ssrc=0xDEADBEEF, payload=b"x" * 20
    )
    header = P.read_rtp(data)
    assert header is not None
    assert data[0] == 0x80 and data[1] == 111
    assert (header.version, header.payload_type, header.sequence) == (2, 111, 65535)
    assert (header.timestamp, header.ssrc, header.header_length) == (2**32 - 1, 0xDEADBEEF, 12)
    assert not header.marker and not header.extension


def test_rtp_extension_and_marker() -> None:
    extension = (0xBEDE, b"\x10\x01\x00\x00")
    data = P.rtp_packet(
        payload_type=96, sequence=1, timestamp=2, ssrc=3, payload=b"p", marker=True,
        extension=extension,
    )  # fmt: skip
    header = P.read_rtp(data)
    assert header is not None
    assert data[0] == 0x90 and data[1] == 0x80 | 96
    assert header.extension_profile == 0xBEDE
    assert header.header_length == P.rtp_header_length(extension) == 20
    assert data[header.header_length :] == b"p"


def test_rtcp_sender_report_layout() -> None:
    data = P.rtcp_sender_report(
        ssrc=7, ntp=P.ntp_timestamp(0.5), rtp_timestamp=9, packet_count=10, octet_count=11
    )
    assert len(data) == 28
    assert data[:4] == bytes.fromhex("80c80006")
    assert P.rtcp_type(data) == 200
    assert struct.unpack("!I", data[4:8])[0] == 7
    assert P.ntp_timestamp(0.5) == (P.NTP_UNIX_OFFSET << 32) | (1 << 31)
    assert P.rtcp_type(bytes.fromhex("80c8ffff") + bytes(24)) is None  # length beyond the data


def test_builders_refuse_impossible_arguments() -> None:
    with pytest.raises(ValueError):
        P.stun_message(0x4001, TXID)
    with pytest.raises(ValueError):
        P.stun_message(1, b"short")
    with pytest.raises(ValueError):
        P.rtp_packet(payload_type=128, sequence=0, timestamp=0, ssrc=0, payload=b"")
    with pytest.raises(ValueError):
        P.rtp_packet(
            payload_type=1, sequence=0, timestamp=0, ssrc=0, payload=b"", extension=(1, b"x")
        )


@given(st.binary(max_size=600))
def test_readers_never_raise(data: bytes) -> None:
    P.read_stun(data)
    P.read_rtp(data)
    P.rtcp_type(data)
    P.fingerprint_ok(data)

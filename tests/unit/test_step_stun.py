"""STUN Binding and TURN Allocate against in-process servers (small RTO: retransmissions are fast)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json

import pytest
from aioice import stun

from msgwatch.steps.stun import RC, RM, Kind, STUNResult, redact_mapped, stun_exchange
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    Reply,
    UDPHandler,
    UDPServer,
    closed_udp_port,
    deadline,
    garbage_once,
    operations,
    silent,
    stun_answer,
    udp_server,
)

RTO = 0.05


def _exchange(
    handler: UDPHandler, kind: Kind = "stun", *, seconds: float = 2.0, rto: float = RTO
) -> tuple[Trace, STUNResult, UDPServer]:
    trace = Trace()

    async def scenario() -> tuple[STUNResult, UDPServer]:
        async with udp_server(handler) as server:
            result = await stun_exchange(
                trace, 4, kind, server.ip, server.port, deadline(seconds), rto=rto
            )
        return result, server

    result, server = asyncio.run(scenario())
    return trace, result, server


def test_binding_success_with_loopback_mapping() -> None:
    trace, result, server = _exchange(stun_answer(mapped=("127.0.0.1", 40000)))
    assert result == STUNResult(failure=None, mapped_address="127.0.0.1")
    [record] = trace.udp_exchanges
    request = stun.parse_message(server.received[0])
    assert request.message_method == stun.Method.BINDING
    assert record["protocol"] == "stun"
    assert record["address"] == f"127.0.0.1:{server.port}"
    assert record["transport"] == "udp"
    assert record["request"] == {
        "method": "binding",
        "transaction_id": request.transaction_id.hex(),
        "num_bytes": len(server.received[0]),
    }
    assert [a["num_bytes"] for a in record["attempts"]] == [len(server.received[0])]
    [response] = record["responses"]
    assert {k: v for k, v in response.items() if k not in ("t", "raw", "num_bytes")} == {
        "class": "success",
        "error_code": None,
        "reason": None,
        "realm": None,
        "nonce_present": False,
        "mapped_address": "[scrubbed]",
        "software": "servers.py",
    }
    assert response["raw"]["format"] == "base64"
    assert len(base64.b64decode(response["raw"]["data"])) == response["num_bytes"]
    assert record["failure"] is None
    assert record["transaction_id"] == 4
    assert trace.probe_addresses == set()  # loopback is not the probe's secret
    assert operations(trace.network_events) == ["write_to", "read_from"]
    assert [e["proto"] for e in trace.network_events] == ["udp", "udp"]


def test_binding_public_mapping_is_scrubbed_and_remembered() -> None:
    reflected = "198.51.100.23"  # TEST-NET-2, only a value inside the answer; never contacted
    trace, result, _ = _exchange(stun_answer(mapped=(reflected, 40000)))
    assert result == STUNResult(failure=None, mapped_address=reflected)
    assert trace.probe_addresses == {reflected}
    assert reflected not in json.dumps(trace.test_keys())
    [response] = trace.udp_exchanges[0]["responses"]
    assert response["mapped_address"] == "[scrubbed]"
    # Nor is it in the raw datagram kept as evidence, in clear or XOR-ed with the magic cookie.
    raw = base64.b64decode(response["raw"]["data"])
    plain = ipaddress.IPv4Address(reflected).packed
    xored = (int(ipaddress.IPv4Address(reflected)) ^ stun.COOKIE).to_bytes(4, "big")
    assert plain not in raw and xored not in raw
    assert len(raw) == response["num_bytes"]


def test_redact_mapped_zeroes_reflexive_addresses_only() -> None:
    message = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, b"t" * 12)
    message.attributes["MAPPED-ADDRESS"] = ("198.51.100.23", 40000)
    message.attributes["XOR-MAPPED-ADDRESS"] = ("2001:db8::23", 40000)
    message.attributes["SOFTWARE"] = "relay"
    wire = bytes(message)
    redacted = redact_mapped(wire)
    assert len(redacted) == len(wire)
    assert redacted[:20] == wire[:20]
    # MAPPED-ADDRESS: type, length 8, reserved, family 1, then port and address zeroed.
    assert redacted[20:32] == bytes.fromhex("0001 0008 0001") + bytes(6)
    # XOR-MAPPED-ADDRESS (IPv6): length 20, family 2, 18 zero bytes.
    assert redacted[32:56] == bytes.fromhex("0020 0014 0002") + bytes(18)
    assert redacted[56:] == wire[56:]  # SOFTWARE untouched
    for junk in (b"", b"short", b"\xff" * 40, wire[:26]):
        redact_mapped(junk)  # never raises, whatever arrives


def test_allocate_challenged_with_realm_and_nonce_proves_the_path() -> None:
    handler = stun_answer(error=(401, "Unauthorized"), realm="example.test", nonce=b"abcdef")
    trace, result, server = _exchange(handler, "turn")
    assert result == STUNResult(failure=None, error_code=401)
    request = stun.parse_message(server.received[0])
    assert request.message_method == stun.Method.ALLOCATE
    assert request.attributes["REQUESTED-TRANSPORT"] == 17 << 24
    [record] = trace.udp_exchanges
    assert (record["protocol"], record["request"]["method"]) == ("turn", "allocate")
    [response] = record["responses"]
    assert (response["class"], response["error_code"], response["reason"]) == (
        "error",
        401,
        "Unauthorized",
    )
    assert (response["realm"], response["nonce_present"]) == ("example.test", True)
    assert record["failure"] is None


def test_allocate_401_without_nonce_is_no_challenge() -> None:
    handler = stun_answer(error=(401, "Unauthorized"), realm="example.test")
    trace, result, _ = _exchange(handler, "turn")
    assert result == STUNResult(failure="turn_no_challenge", error_code=401)
    assert trace.udp_exchanges[0]["failure"] == "turn_no_challenge"
    assert trace.udp_exchanges[0]["responses"][0]["nonce_present"] is False


def test_other_error_is_an_error_response() -> None:
    trace, result, _ = _exchange(stun_answer(error=(403, "Forbidden")), "turn")
    assert result == STUNResult(failure="stun_error_response", error_code=403)
    [record] = trace.udp_exchanges
    assert record["failure"] == "stun_error_response"
    assert [r["error_code"] for r in record["responses"]] == [403]


def test_binding_error_is_an_error_response() -> None:
    _, result, _ = _exchange(stun_answer(error=(401, "Unauthorized"), realm="r", nonce=b"n"))
    assert result.failure == "stun_error_response"  # a challenge proves the path for TURN only


def test_garbage_then_silence_is_invalid() -> None:
    trace, result, server = _exchange(garbage_once(b"not a STUN message"), seconds=0.5)
    assert result == STUNResult(failure="stun_invalid_response")
    [record] = trace.udp_exchanges
    assert record["failure"] == "stun_invalid_response"
    [response] = record["responses"]
    assert response["class"] == "invalid"
    assert base64.b64decode(response["raw"]["data"]) == b"not a STUN message"
    assert len(record["attempts"]) == len(server.received) >= 2  # waiting went on, with resends
    assert operations(trace.network_events)[:3] == ["write_to", "read_from", "read_from"]


def test_answer_to_another_transaction_is_invalid_and_waiting_goes_on() -> None:
    def handle(data: bytes, reply: Reply) -> None:
        request = stun.parse_message(data)
        other = stun.Message(request.message_method, stun.Class.RESPONSE, b"\x00" * 12)
        other.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 1)
        reply(bytes(other))
        ok = stun.Message(request.message_method, stun.Class.RESPONSE, request.transaction_id)
        ok.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 2)
        asyncio.get_running_loop().call_later(0.01, reply, bytes(ok))

    trace, result, _ = _exchange(handle)
    assert result.failure is None
    assert [r["class"] for r in trace.udp_exchanges[0]["responses"]] == ["invalid", "success"]


def test_silence_times_out_after_the_full_retransmission_schedule() -> None:
    rto = 0.01
    trace, result, server = _exchange(silent, rto=rto, seconds=5.0)
    assert result == STUNResult(failure="generic_timeout_error")
    [record] = trace.udp_exchanges
    assert record["failure"] == "generic_timeout_error"
    assert record["responses"] == []
    assert len(record["attempts"]) == len(server.received) == RC
    starts = [a["t0"] for a in record["attempts"]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    expected = [rto * 2**i for i in range(RC - 1)]  # 10, 20, 40, ... 320 ms: doubling
    for gap, nominal in zip(gaps, expected, strict=True):
        assert nominal <= gap < nominal + 0.05
    # After the last send the client waits Rm × RTO, then gives up.
    last_wait = record["t"] - starts[-1]
    assert rto * RM <= last_wait < rto * RM + 0.1
    assert operations(trace.network_events) == ["write_to", "read_from"] * RC
    assert {e["failure"] for e in trace.network_events[1::2]} == {"generic_timeout_error"}


def test_silence_is_cut_by_the_deadline() -> None:
    trace, result, server = _exchange(silent, seconds=0.4)
    assert result.failure == "generic_timeout_error"
    # Sends at 0, 50, 150 and 350 ms; the next (750 ms) is past the deadline.
    assert len(trace.udp_exchanges[0]["attempts"]) == len(server.received) == 4
    record = trace.udp_exchanges[0]
    assert 0.4 <= record["t"] - record["t0"] < 0.6


def test_port_unreachable_is_refused() -> None:
    trace = Trace()

    async def scenario() -> STUNResult:
        port = closed_udp_port()
        return await stun_exchange(trace, 1, "stun", "127.0.0.1", port, deadline(2.0), rto=RTO)

    result = asyncio.run(scenario())
    assert result == STUNResult(failure="connection_refused")
    [record] = trace.udp_exchanges
    assert record["failure"] == "connection_refused"
    assert len(record["attempts"]) == 1
    assert operations(trace.network_events) == ["write_to", "read_from"]
    assert trace.network_events[1]["failure"] == "connection_refused"


@pytest.mark.parametrize("kind", ["stun", "turn"])
def test_destination_outside_the_fence_sends_nothing(kind: Kind) -> None:
    trace = Trace()

    async def scenario() -> STUNResult:
        return await stun_exchange(trace, 1, kind, "192.0.2.1", 3478, deadline(1.0), rto=RTO)

    assert asyncio.run(scenario()) == STUNResult(failure="destination_not_allowed")
    [record] = trace.udp_exchanges
    assert (record["attempts"], record["responses"]) == ([], [])
    assert record["address"] == "192.0.2.1:3478"
    assert trace.network_events == []

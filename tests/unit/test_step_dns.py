"""DNS steps against in-process name servers that answer, lie, stay silent or send garbage."""

from __future__ import annotations

import asyncio
import base64

import dns.message
import dns.rcode

from msgwatch.steps.dns import DNSResult, query_tcp, query_udp, resolve
from msgwatch.steps.trace import Trace
from tests.unit.servers import (
    UDPHandler,
    UDPServer,
    closed_udp_port,
    deadline,
    dns_answer,
    dns_forged_then_real,
    dns_raw,
    dns_tcp_answer,
    dns_wrong_id_then_right,
    operations,
    reset_after_first_read,
    silent,
    tcp_server,
    udp_server,
)

HOST = "chat.example.test"


def _udp(
    handler: UDPHandler, *, qtype: str = "A", seconds: float = 2.0, linger: float = 0.05
) -> tuple[Trace, DNSResult, UDPServer]:
    trace = Trace()

    async def scenario() -> tuple[DNSResult, UDPServer]:
        async with udp_server(handler) as server:
            result = await query_udp(
                trace, 1, HOST, qtype, server.address, deadline(seconds), linger
            )
        return result, server

    result, server = asyncio.run(scenario())
    return trace, result, server


def test_udp_answer_is_recorded_in_full() -> None:
    trace, result, server = _udp(dns_answer("127.0.0.7"))
    assert result == DNSResult(addresses=["127.0.0.7"], failure=None, answers_seen=[["127.0.0.7"]])
    [query] = trace.queries
    assert query["hostname"] == HOST
    assert query["query_type"] == "A"
    assert query["engine"] == "udp"
    assert query["resolver_address"] == f"127.0.0.1:{server.port}"
    assert query["answers"] == [
        {"answer_type": "A", "ipv4": "127.0.0.7", "ttl": 300, "asn": 0, "as_org_name": ""}
    ]
    assert query["rcode"] == 0
    assert query["failure"] is None
    assert query["transaction_id"] == 1
    assert "tags" not in query
    response = dns.message.from_wire(base64.b64decode(query["raw_response"]))
    assert response.id == dns.message.from_wire(server.received[0]).id
    assert 0 <= query["t0"] <= query["t"]
    # One query out, the answer in, then the linger (listening for a late answer) runs out.
    assert operations(trace.network_events) == ["write_to", "read_from", "read_from"]
    assert [e["failure"] for e in trace.network_events] == [None, None, "generic_timeout_error"]
    assert trace.network_events[0]["address"] == f"127.0.0.1:{server.port}"
    assert trace.network_events[0]["proto"] == "udp"


def test_udp_nxdomain() -> None:
    trace, result, _ = _udp(dns_answer(rcode=dns.rcode.NXDOMAIN))
    assert result.failure == "dns_nxdomain_error"
    assert result.addresses == []
    [query] = trace.queries
    assert (query["failure"], query["rcode"], query["answers"]) == ("dns_nxdomain_error", 3, None)
    assert "raw_response" in query


def test_udp_servfail() -> None:
    trace, result, _ = _udp(dns_answer(rcode=dns.rcode.SERVFAIL))
    assert result.failure == "dns_servfail_error"
    assert [(q["failure"], q["rcode"]) for q in trace.queries] == [("dns_servfail_error", 2)]


def test_udp_refused_and_other_rcodes() -> None:
    _, refused, _ = _udp(dns_answer(rcode=dns.rcode.REFUSED))
    _, notimp, _ = _udp(dns_answer(rcode=dns.rcode.NOTIMP))
    assert (refused.failure, notimp.failure) == ("dns_refused_error", "dns_server_failure_notimp")


def test_udp_noerror_without_addresses_is_no_answer() -> None:
    trace, result, _ = _udp(dns_answer("127.0.0.7"), qtype="AAAA")
    assert result.failure == "dns_no_answer"
    assert result.answers_seen == [[]]
    assert [(q["query_type"], q["failure"], q["rcode"]) for q in trace.queries] == [
        ("AAAA", "dns_no_answer", 0)
    ]


def test_udp_silence_times_out() -> None:
    trace, result, server = _udp(silent, seconds=0.3)
    assert result == DNSResult(failure="generic_timeout_error")
    assert len(server.received) == 1  # no retransmission
    [query] = trace.queries
    assert query["failure"] == "generic_timeout_error"
    assert query["answers"] is None
    assert "raw_response" not in query and "rcode" not in query
    assert operations(trace.network_events) == ["write_to", "read_from"]
    assert trace.network_events[1]["failure"] == "generic_timeout_error"
    assert 0.3 <= query["t"] - query["t0"] < 1.0


def test_udp_garbage_is_invalid_and_kept() -> None:
    trace, result, _ = _udp(dns_raw(b"\xde\xad\xbe\xef garbage"), seconds=0.3)
    assert result.failure == "dns_invalid_response"
    assert result.answers_seen == []
    [query] = trace.queries
    assert query["failure"] == "dns_invalid_response"
    assert base64.b64decode(query["raw_response"]) == b"\xde\xad\xbe\xef garbage"
    assert operations(trace.network_events) == ["write_to", "read_from", "read_from"]
    assert [e["failure"] for e in trace.network_events] == [None, None, "generic_timeout_error"]


def test_udp_forged_answer_then_real_one_are_both_recorded() -> None:
    trace, result, _ = _udp(dns_forged_then_real("198.18.0.66", "127.0.0.7"), linger=0.3)
    assert result.addresses == ["198.18.0.66"]  # the first answer is the one used
    assert result.failure is None
    assert result.answers_seen == [["198.18.0.66"], ["127.0.0.7"]]
    first, second = trace.queries
    assert first["transaction_id"] == second["transaction_id"] == 1
    assert [a["ipv4"] for a in first["answers"]] == ["198.18.0.66"]
    assert [a["ipv4"] for a in second["answers"]] == ["127.0.0.7"]
    assert "tags" not in first
    assert second["tags"] == ["late"]
    assert first["failure"] is None and second["failure"] is None
    assert operations(trace.network_events) == ["write_to", "read_from", "read_from", "read_from"]
    assert [e["failure"] for e in trace.network_events][-1] == "generic_timeout_error"


def test_udp_wrong_query_id_is_recorded_then_right_answer_accepted() -> None:
    trace, result, _ = _udp(dns_wrong_id_then_right("127.0.0.7"))
    assert result == DNSResult(addresses=["127.0.0.7"], failure=None, answers_seen=[["127.0.0.7"]])
    wrong, right = trace.queries
    assert wrong["failure"] == "dns_reply_with_wrong_query_id"
    assert wrong["answers"] is None and "raw_response" in wrong
    assert right["failure"] is None
    assert "tags" not in right  # the first *valid* answer is not late
    assert wrong["transaction_id"] == right["transaction_id"] == 1


def test_udp_port_unreachable_is_refused() -> None:
    async def scenario(trace: Trace) -> DNSResult:
        server = ("127.0.0.1", closed_udp_port())
        return await query_udp(trace, 1, HOST, "A", server, deadline(1.0))

    trace = Trace()
    result = asyncio.run(scenario(trace))
    assert result.failure == "connection_refused"
    assert [q["failure"] for q in trace.queries] == ["connection_refused"]
    assert operations(trace.network_events) == ["write_to", "read_from"]
    assert trace.network_events[1]["failure"] == "connection_refused"


def test_tcp_answer() -> None:
    trace = Trace()

    async def scenario() -> tuple[DNSResult, int]:
        async with tcp_server(dns_tcp_answer("127.0.0.8")) as (ip, port):
            return await query_tcp(trace, 3, HOST, "A", (ip, port), deadline(2.0)), port

    result, port = asyncio.run(scenario())
    assert result == DNSResult(addresses=["127.0.0.8"], failure=None, answers_seen=[["127.0.0.8"]])
    [query] = trace.queries
    assert query["engine"] == "tcp"
    assert query["resolver_address"] == f"127.0.0.1:{port}"
    assert [a["ipv4"] for a in query["answers"]] == ["127.0.0.8"]
    assert (query["rcode"], query["failure"], query["transaction_id"]) == (0, None, 3)
    assert dns.message.from_wire(base64.b64decode(query["raw_response"])).answer
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]
    assert [e["failure"] for e in trace.network_events] == [None, None, None, None]
    assert [c["status"]["success"] for c in trace.tcp_connect] == [True]


def test_tcp_reset_after_query() -> None:
    trace = Trace()

    async def scenario() -> DNSResult:
        async with tcp_server(reset_after_first_read) as server:
            return await query_tcp(trace, 1, HOST, "A", server, deadline(2.0))

    result = asyncio.run(scenario())
    assert result == DNSResult(failure="connection_reset")
    [query] = trace.queries
    assert (query["engine"], query["failure"], query["answers"]) == (
        "tcp",
        "connection_reset",
        None,
    )
    assert "raw_response" not in query
    assert operations(trace.network_events) == ["connect", "write", "read", "close"]
    assert [e["failure"] for e in trace.network_events] == [None, None, "connection_reset", None]


def test_resolve_combines_a_and_aaaa_ipv4_first() -> None:
    trace = Trace()

    async def scenario() -> DNSResult:
        async with udp_server(dns_answer("127.0.0.9", "::1")) as server:
            return await resolve(trace, 5, HOST, server.address, deadline(2.0), linger=0.05)

    result = asyncio.run(scenario())
    assert result.addresses == ["127.0.0.9", "::1"]
    assert result.failure is None
    assert sorted(result.answers_seen) == [["127.0.0.9"], ["::1"]]
    assert sorted(q["query_type"] for q in trace.queries) == ["A", "AAAA"]
    assert {q["transaction_id"] for q in trace.queries} == {5}


def test_resolve_nxdomain() -> None:
    trace = Trace()

    async def scenario() -> DNSResult:
        async with udp_server(dns_answer(rcode=dns.rcode.NXDOMAIN)) as server:
            return await resolve(trace, 1, HOST, server.address, deadline(2.0), linger=0.05)

    result = asyncio.run(scenario())
    # Both answers were valid messages, each with no address.
    assert result == DNSResult(failure="dns_nxdomain_error", answers_seen=[[], []])
    assert [q["failure"] for q in trace.queries] == ["dns_nxdomain_error"] * 2


def test_resolve_only_ipv4_answer_is_enough() -> None:
    trace = Trace()

    async def scenario() -> DNSResult:
        async with udp_server(dns_answer("127.0.0.9")) as server:
            return await resolve(trace, 1, HOST, server.address, deadline(2.0), linger=0.05)

    result = asyncio.run(scenario())
    assert (result.addresses, result.failure) == (["127.0.0.9"], None)


def test_resolve_with_system_resolver_is_refused_by_the_fence() -> None:
    trace = Trace()
    result = asyncio.run(_system(trace))
    assert result == DNSResult(failure="destination_not_allowed")
    [query] = trace.queries
    assert (query["engine"], query["query_type"], query["resolver_address"]) == (
        "getaddrinfo",
        "ANY",
        "",
    )
    assert query["failure"] == "destination_not_allowed"
    assert trace.network_events == []


async def _system(trace: Trace) -> DNSResult:
    return await resolve(trace, 1, HOST, None, deadline(1.0))


def test_udp_query_to_a_resolver_outside_the_fence_sends_nothing() -> None:
    trace = Trace()

    async def scenario() -> DNSResult:
        return await query_udp(trace, 1, HOST, "A", ("192.0.2.53", 53), deadline(1.0))

    result = asyncio.run(scenario())
    assert result.failure == "destination_not_allowed"
    assert [q["failure"] for q in trace.queries] == ["destination_not_allowed"]
    assert trace.network_events == []

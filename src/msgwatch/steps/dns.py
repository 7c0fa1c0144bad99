"""DNS steps: the system resolver, and direct queries over UDP and TCP.

The UDP step keeps its socket open for ``linger`` seconds after the first valid answer and records
every further answer to the same query (tagged ``late``): an on-path injector's forged answer
arrives first and the real resolver's answer after it, and both are evidence. Datagrams that do not
parse, or that answer another query, are recorded with ``dns_invalid_response`` /
``dns_reply_with_wrong_query_id`` and listening goes on (dnspython's ``ignore_unexpected``).

A UDP answer with the TC bit set (truncated: the server had more than fits) is recorded with the
tag ``truncated`` and ``answers`` null (its records, partial by definition, stay in
``raw_response``: beside the full answer they would read as a second, different answer), and the
query is asked again over TCP under the same transaction id once the linger is over, as dnspython's
``udp_with_fallback`` does: the TCP answer (or its failure) is the result, and both are recorded.
Only the first valid UDP answer decides; a truncated late one is recorded and nothing more.

:func:`resolve` uses UDP, or TCP when asked (``transport="tcp"``: a catalogue endpoint of
protocol ``dns`` declared over TCP); over TCP without a configured resolver it asks the first
``nameserver`` of ``/etc/resolv.conf`` (:func:`system_nameserver`), since getaddrinfo cannot be
told to use TCP.

dnspython is used as a codec only (``dns.message``); the sockets come from :mod:`msgwatch.steps.net`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from msgwatch import failures as F
from msgwatch.steps.net import endpoint, system_resolve, tcp_connect, udp_open
from msgwatch.steps.trace import Trace, b64

MAX_DNS_MESSAGE = 65535


@dataclass
class DNSResult:
    """What a lookup gave: addresses from the first valid answer, or a failure."""

    addresses: list[str] = field(default_factory=list)
    failure: str | None = None
    answers_seen: list[list[str]] = field(default_factory=list)
    """Address sets of every valid answer received (more than one: an injected answer raced)."""


def _answers(message: dns.message.Message) -> tuple[list[dict[str, Any]], list[str]]:
    records: list[dict[str, Any]] = []
    addresses: list[str] = []
    for rrset in message.answer:
        for rdata in rrset:
            kind = dns.rdatatype.to_text(rdata.rdtype)
            entry: dict[str, Any] = {"answer_type": kind, "ttl": rrset.ttl, "asn": 0}
            if rdata.rdtype == dns.rdatatype.A:
                entry["ipv4"] = rdata.to_text()
                addresses.append(rdata.to_text())
            elif rdata.rdtype == dns.rdatatype.AAAA:
                entry["ipv6"] = rdata.to_text()
                addresses.append(rdata.to_text())
            elif rdata.rdtype == dns.rdatatype.CNAME:
                entry["hostname"] = rdata.to_text().rstrip(".")
            else:
                continue
            entry["as_org_name"] = ""
            records.append(entry)
            if len(records) >= 64:
                return records, addresses
    return records, addresses


def _rcode_failure(message: dns.message.Message, addresses: list[str]) -> str | None:
    rcode = message.rcode()
    if rcode == dns.rcode.NOERROR:
        return None if addresses else F.DNS_NO_ANSWER
    if rcode == dns.rcode.NXDOMAIN:
        return F.DNS_NXDOMAIN
    if rcode == dns.rcode.SERVFAIL:
        return F.DNS_SERVFAIL
    if rcode == dns.rcode.REFUSED:
        return F.DNS_REFUSED
    return F.dns_server_failure(dns.rcode.to_text(rcode))


@dataclass(frozen=True)
class _Query:
    """One query as the trace names it: what each of its records (answers, failures) repeats."""

    txid: int
    t0: float
    host: str
    qtype: str
    engine: str
    """``udp``, ``tcp`` or ``getaddrinfo``."""
    resolver: str
    """The server's endpoint (empty for the system resolver)."""


def _record(
    trace: Trace,
    query: _Query,
    failure: str | None,
    *,
    answers: list[dict[str, Any]] | None = None,
    rcode: int | None = None,
    raw: bytes | None = None,
    tags: list[str] | None = None,
) -> None:
    """Keep one record of ``query`` in the trace's ``queries``."""
    record: dict[str, Any] = {
        "hostname": query.host,
        "query_type": query.qtype,
        "engine": query.engine,
        "resolver_address": query.resolver,
        "answers": answers or None,
        "failure": failure,
        "t0": query.t0,
        "t": trace.now(),
        "transaction_id": query.txid,
    }
    if rcode is not None:
        record["rcode"] = rcode
    if raw is not None:
        record["raw_response"] = b64(raw[: trace.limits.max_raw])["data"]
    if tags:
        record["tags"] = tags
    trace.query(record)


def _parse(query: dns.message.Message, wire: bytes) -> dns.message.Message | str:
    """The response, or the failure string saying why ``wire`` is not an answer to ``query``."""
    try:
        response = dns.message.from_wire(wire, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, UnicodeError, IndexError, KeyError):
        return F.DNS_INVALID
    if response.id != query.id:
        return F.DNS_WRONG_QUERY_ID
    if not (response.flags & dns.flags.QR) or not query.is_response(response):
        return F.DNS_INVALID
    return response


async def query_udp(
    trace: Trace,
    txid: int,
    host: str,
    qtype: str,
    server: tuple[str, int],
    deadline: float,
    linger: float = 0.3,
) -> DNSResult:
    """One query over UDP, listening on after the first answer (see the module's notes)."""
    message = dns.message.make_query(dns.name.from_text(host), qtype)
    query = _Query(txid, trace.now(), host, qtype, "udp", endpoint(*server))
    result = DNSResult()
    try:
        sock = await udp_open(trace, txid, server[0], server[1])
    except Exception as exc:
        result.failure = F.classify(exc)
        _record(trace, query, result.failure)
        return result
    loop = asyncio.get_running_loop()
    stop_at = deadline
    first_failure: str | None = None
    answered = False  # a valid answer arrived: the first one decides, the others are late
    truncated_first = False
    valid = 0
    try:
        try:
            sock.send(message.to_wire())
        except F.ProbeFailure as exc:  # the run's byte budget
            result.failure = exc.failure
            _record(trace, query, result.failure)
            return result
        while True:
            try:
                wire = await sock.recv(stop_at)
            except Exception as exc:
                if not answered:
                    result.failure = first_failure or F.classify(exc)
                    if first_failure is None:
                        _record(trace, query, result.failure)
                break
            parsed = _parse(message, wire)
            late = ["late"] if answered else []
            if isinstance(parsed, str):
                first_failure = first_failure or parsed
                _record(trace, query, parsed, raw=wire, tags=late)
                continue
            answers, addresses = _answers(parsed)
            if parsed.flags & dns.flags.TC:
                # Partial by definition: kept as raw bytes only (module notes), asked over TCP.
                failure = (
                    None if parsed.rcode() == dns.rcode.NOERROR else _rcode_failure(parsed, [])
                )
                _record(
                    trace, query, failure, rcode=parsed.rcode(), raw=wire, tags=[*late, "truncated"]
                )
                truncated_first = truncated_first or not answered
            else:
                failure = _rcode_failure(parsed, addresses)
                _record(
                    trace,
                    query,
                    failure,
                    answers=answers,
                    rcode=parsed.rcode(),
                    raw=wire,
                    tags=late,
                )
                if not answered:
                    result.addresses, result.failure = addresses, failure
                result.answers_seen.append(addresses)
            if not answered:
                answered = True
                stop_at = min(deadline, loop.time() + linger)
            valid += 1
            if valid >= 8:
                break
    finally:
        sock.close()
    if truncated_first:
        retried = await query_tcp(trace, txid, host, qtype, server, deadline)
        retried.answers_seen += result.answers_seen  # late UDP answers, if any
        return retried
    return result


async def query_tcp(
    trace: Trace, txid: int, host: str, qtype: str, server: tuple[str, int], deadline: float
) -> DNSResult:
    """One query over TCP (RFC 7766 framing)."""
    message = dns.message.make_query(dns.name.from_text(host), qtype)
    query = _Query(txid, trace.now(), host, qtype, "tcp", endpoint(*server))
    result = DNSResult()
    raw: bytes | None = None
    try:
        conn = await tcp_connect(trace, txid, server[0], server[1], deadline)
        try:
            wire = message.to_wire()
            await conn.write(len(wire).to_bytes(2, "big") + wire, deadline)
            buffer = b""
            while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
                chunk = await conn.read(deadline, MAX_DNS_MESSAGE + 2 - len(buffer))
                if not chunk:
                    raise F.ProbeFailure(F.EOF_ERROR)
                buffer += chunk
            raw = buffer[2 : 2 + int.from_bytes(buffer[:2], "big")]
        finally:
            conn.close()
    except Exception as exc:
        result.failure = F.classify(exc)
        _record(trace, query, result.failure)
        return result
    parsed = _parse(message, raw)
    if isinstance(parsed, str):
        result.failure = parsed
        _record(trace, query, parsed, raw=raw)
        return result
    answers, result.addresses = _answers(parsed)
    result.failure = _rcode_failure(parsed, result.addresses)
    result.answers_seen.append(result.addresses)
    _record(trace, query, result.failure, answers=answers, rcode=parsed.rcode(), raw=raw)
    return result


async def getaddrinfo(trace: Trace, txid: int, host: str, deadline: float) -> DNSResult:
    """The system resolver, recorded as one ``ANY`` query (as OONI does)."""
    t0 = trace.now()
    result = DNSResult()
    try:
        result.addresses = await system_resolve(host, deadline)
    except OSError as exc:
        # EAI_NONAME is how getaddrinfo says NXDOMAIN (and "no address"); OONI maps it the same way.
        nxdomain = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        result.failure = F.DNS_NXDOMAIN if exc.errno in nxdomain else F.classify(exc)
    except Exception as exc:
        result.failure = F.classify(exc)
    answers = []
    for address in result.addresses[:64]:
        version = ipaddress.ip_address(address).version
        kind, key = ("A", "ipv4") if version == 4 else ("AAAA", "ipv6")
        answers.append({"answer_type": kind, key: address, "ttl": None, "asn": 0,
                        "as_org_name": ""})  # fmt: skip
    if result.addresses:
        result.answers_seen.append(result.addresses)
    query = _Query(txid, t0, host, "ANY", "getaddrinfo", "")
    _record(trace, query, result.failure, answers=answers)
    return result


async def resolve(
    trace: Trace,
    txid: int,
    host: str,
    server: tuple[str, int] | None,
    deadline: float,
    linger: float = 0.3,
    transport: str = "udp",
) -> DNSResult:
    """A and AAAA from ``server`` over UDP (or getaddrinfo when None), IPv4 addresses first.
    ``transport="tcp"``: over TCP, from ``server`` or else the system's first name server."""
    if transport == "tcp":
        server = server or system_nameserver()
        if server is None:
            why = F.unknown("no nameserver in /etc/resolv.conf for DNS over TCP")
            _record(trace, _Query(txid, trace.now(), host, "A", "tcp", ""), why)
            return DNSResult(failure=why)
    elif server is None:
        return await getaddrinfo(trace, txid, host, deadline)
    if transport == "tcp":
        a, aaaa = await asyncio.gather(
            query_tcp(trace, txid, host, "A", server, deadline),
            query_tcp(trace, txid, host, "AAAA", server, deadline),
        )
    else:
        a, aaaa = await asyncio.gather(
            query_udp(trace, txid, host, "A", server, deadline, linger),
            query_udp(trace, txid, host, "AAAA", server, deadline, linger),
        )
    combined = DNSResult(
        addresses=a.addresses + [x for x in aaaa.addresses if x not in a.addresses],
        answers_seen=a.answers_seen + aaaa.answers_seen,
    )
    if not combined.addresses:
        # The A query's failure speaks for the name, unless only AAAA says NXDOMAIN.
        failure = a.failure if a.failure != F.DNS_NO_ANSWER else aaaa.failure
        combined.failure = failure or F.DNS_NO_ANSWER
    return combined


def system_nameserver(path: str = "/etc/resolv.conf") -> tuple[str, int] | None:
    """The first ``nameserver`` of ``path`` as (address, 53), or None (no such line, no file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as conf:
            lines = conf.read(65536).splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                return str(ipaddress.ip_address(fields[1].split("%", 1)[0])), 53
            except ValueError:
                continue
    return None

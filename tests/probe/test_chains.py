"""Chains through the table of protocols, against in-process servers on loopback: what each
protocol's part records (the connection, the verified TLS and its control, the GET, the throughput
pair of a ``media`` endpoint)."""

from __future__ import annotations

import asyncio
import datetime as dt

from msgwatch.catalogue.schema import Endpoint, Protocol
from msgwatch.probe.chain import ChainOutcome
from msgwatch.probe.chains import ChainConfig, run_chain
from msgwatch.steps.trace import Trace
from tests.unit.servers import PKI, hold_open, http_response, server_tls, tcp_server

BODY = b"x" * 4096
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


def _endpoint(protocol: Protocol, port: int, download_path: str | None = None) -> Endpoint:
    return Endpoint(
        id="e",
        host="chat.example.test",
        address="127.0.0.1",
        port=port,
        transport="tcp",
        protocol=protocol,
        path="/",
        source="doc",
        checked=dt.date(2026, 12, 2),
        download_path=download_path,
    )


def _chain(
    protocol: Protocol, function: str, pki: PKI, *, tls: bool, download_path: str | None = None
) -> tuple[Trace, ChainOutcome]:
    handler = http_response(RESPONSE) if protocol in ("http", "https") else hold_open

    async def scenario() -> tuple[Trace, ChainOutcome]:
        async with tcp_server(handler, server_tls(pki.chat) if tls else None) as (_, port):
            trace = Trace()
            deadline = asyncio.get_running_loop().time() + 3
            endpoint = _endpoint(protocol, port, download_path)
            config = ChainConfig(ca_bundle=str(pki.ca))
            return trace, await run_chain(trace, function, endpoint, config, deadline)

    return asyncio.run(scenario())


def test_tcp_is_a_connection(pki: PKI) -> None:
    trace, outcome = _chain("tcp", "text", pki, tls=False)
    assert outcome.ok and outcome.address == "127.0.0.1" and not outcome.verified
    assert [r["status"]["success"] for r in trace.tcp_connect] == [True]


def test_tls_is_verified_with_a_control_beside_it(pki: PKI) -> None:
    trace, outcome = _chain("tls", "text", pki, tls=True)
    assert outcome.ok and outcome.verified and outcome.control_ran
    assert outcome.control_failure is None and len(outcome.transaction_ids) == 2
    names = sorted(r["server_name"] for r in trace.tls_handshakes)
    assert names == ["chat.example.test", "example.com"]


def test_http_gets_the_path(pki: PKI) -> None:
    trace, outcome = _chain("http", "web", pki, tls=False)
    assert outcome.ok and outcome.http is not None and outcome.http.status == 200
    assert trace.requests[0]["request"]["url"].startswith("http://chat.example.test:")


def test_a_media_download_is_measured_with_its_real_and_a_benign_name(pki: PKI) -> None:
    trace, outcome = _chain("https", "media", pki, tls=True, download_path="/big")
    assert outcome.ok and outcome.verified
    records = trace.throughput
    assert [(r["server_name"], r["control"]) for r in records] == [
        ("chat.example.test", False),
        ("example.com", True),
    ]
    assert all(r["bytes"] == len(BODY) and r["failure"] is None for r in records)
    assert len(outcome.transaction_ids) == 4  # the chain, its control, the two downloads


def test_no_download_for_other_functions(pki: PKI) -> None:
    trace, outcome = _chain("https", "web", pki, tls=True, download_path="/big")
    assert outcome.ok and trace.throughput == []

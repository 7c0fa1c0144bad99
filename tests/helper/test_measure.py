"""``POST /v1/measure``: the probe's steps from the helper, and targets refused before any packet."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

import pytest

from msgwatch.failures import ProbeFailure
from msgwatch.helper import measure as M
from msgwatch.helper.policy import Policy
from tests.helper.util import config, http, running
from tests.unit.servers import (
    PKI,
    dns_answer,
    http_response,
    server_tls,
    tcp_server,
    udp_server,
)

OK_PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
REFUSED_TARGETS = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1",
                   "198.18.0.1", "2001:db8::1", "::1", "::ffff:127.0.0.1", "0.0.0.0"]  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tcp_stun_and_http_steps_from_the_helper() -> None:
    async def scenario() -> None:
        async with running() as helper:
            control = helper.bound["control"][0]
            (_, udp), (_, tcp) = helper.bound["udp"][0], helper.bound["tcp"][0]
            steps = [
                {"kind": "tcp", "address": "127.0.0.1", "port": tcp},
                {"kind": "stun", "address": "127.0.0.1", "port": udp},
                {"kind": "tcp", "address": "127.0.0.1", "port": _closed_port()},
                {"kind": "http", "address": "127.0.0.1", "port": control[1], "path": "/v1/health"},
            ]
            reply = await http(control, "POST", "/v1/measure", {"steps": steps, "timeout": 3})
            assert reply.status == 200, reply.body
            out = reply.json()
            tcp_ok, stun_ok, refused, page = out["results"]
            assert tcp_ok == {"kind": "tcp", "transaction_id": 1, "failure": None,
                              "address": f"127.0.0.1:{tcp}"}  # fmt: skip
            assert stun_ok["failure"] is None and stun_ok["mapped"] is True
            assert refused["failure"] == "connection_refused"
            assert refused["failed_step"] == "tcp_connect"
            assert page["failure"] is None and page["status"] == 200
            trace = out["trace"]
            connects = {(c["port"], c["status"]["success"]) for c in trace["tcp_connect"]}
            assert {(tcp, True), (control[1], True)} <= connects
            [exchange] = trace["msgwatch_udp_exchanges"]
            assert exchange["protocol"] == "stun" and exchange["failure"] is None
            assert exchange["responses"][0]["class"] == "success"
            assert trace["requests"][0]["response"]["code"] == 200
            ops = [e["operation"] for e in trace["network_events"] if e["transaction_id"] == 1]
            assert ops == ["connect", "close"]

    asyncio.run(scenario())


def test_tls_and_https_with_the_helpers_ca(pki: PKI) -> None:
    async def scenario() -> None:
        tls = server_tls(pki.chat)
        async with tcp_server(http_response(OK_PAGE), tls=tls) as (ip, port):
            cfg = config(ca_bundle=str(pki.ca))
            async with running(cfg) as helper:
                steps = [
                    {"kind": "tls", "address": ip, "port": port, "server_name": "chat.example.test"},
                    {"kind": "tls", "address": ip, "port": port, "server_name": "x.example.test"},
                    {"kind": "tls", "address": ip, "port": port, "server_name": "x.example.test",
                     "verify": False},
                    {"kind": "http", "scheme": "https", "address": ip, "port": port,
                     "host": "chat.example.test", "path": "/"},
                ]  # fmt: skip
                reply = await http(helper.bound["control"][0], "POST", "/v1/measure", steps)
                good, wrong_name, unverified, page = reply.json()["results"]
                assert good["failure"] is None and good["tls_version"].startswith("TLS")
                assert wrong_name["failure"] == "ssl_invalid_hostname"
                assert unverified["failure"] is None
                assert page["failure"] is None and page["status"] == 200
                assert page["body_bytes"] == 5
                handshakes = reply.json()["trace"]["tls_handshakes"]
                assert {h["server_name"] for h in handshakes} == {
                    "chat.example.test", "x.example.test"
                }  # fmt: skip

    asyncio.run(scenario())


class _Tripwire:
    """Stands in for the probe's network steps: records what the helper tried to reach."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async def tcp_connect(trace: Any, txid: int, ip: str, port: int, deadline: float) -> Any:
            self.calls.append(("tcp", ip))
            raise ProbeFailure("connection_refused")

        async def stun_exchange(trace: Any, txid: int, kind: str, ip: str, port: int,
                                deadline: float) -> Any:  # fmt: skip
            self.calls.append((kind, ip))
            raise ProbeFailure("generic_timeout_error")

        async def resolve(trace: Any, txid: int, host: str, server: Any, *args: Any) -> Any:
            self.calls.append(("dns", str(server)))
            raise ProbeFailure("dns_nxdomain_error")

        monkeypatch.setattr(M, "tcp_connect", tcp_connect)
        monkeypatch.setattr(M, "stun_exchange", stun_exchange)
        monkeypatch.setattr(M, "resolve", resolve)


def _every_kind(ip: str) -> list[dict[str, Any]]:
    return [
        {"kind": "tcp", "address": ip, "port": 443},
        {"kind": "tls", "address": ip, "host": "chat.example.test"},
        {"kind": "http", "address": ip},
        {"kind": "stun", "address": ip},
        {"kind": "turn", "address": ip, "port": 3478},
        {"kind": "dns", "address": ip, "host": "chat.example.test"},
    ]


def test_production_refuses_private_targets_without_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tripwire = _Tripwire()
    tripwire.install(monkeypatch)

    async def scenario() -> None:
        # Real listeners on the loopback targets, too: nothing may arrive at them.
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        async with running(config(policy=Policy.production())) as helper:
            steps = [s for ip in REFUSED_TARGETS for s in _every_kind(ip)]
            steps.append({"kind": "stun", "address": "127.0.0.1",
                          "port": listener.getsockname()[1]})  # fmt: skip
            results: list[dict[str, Any]] = []
            for start in range(0, len(steps), 32):
                reply = await http(helper.bound["control"][0], "POST", "/v1/measure",
                                   steps[start : start + 32])  # fmt: skip
                assert reply.status == 200
                out = reply.json()
                results += out["results"]
                trace = out["trace"]
                assert not any(trace[k] for k in ("queries", "tcp_connect", "network_events",
                                                  "msgwatch_udp_exchanges"))  # fmt: skip
            assert len(results) == len(steps)
            assert all(r["failure"] == "destination_not_allowed" for r in results)
            reasons = {(s.get("address"), r["reason"]) for s, r in zip(steps, results, strict=True)}
            expected = {"127.0.0.1": "loopback", "10.0.0.1": "private", "192.168.1.1": "private",
                        "169.254.1.1": "link_local", "100.64.0.1": "cgnat",
                        "198.18.0.1": "reserved", "2001:db8::1": "documentation",
                        "::1": "loopback", "::ffff:127.0.0.1": "loopback",
                        "0.0.0.0": "unspecified"}  # fmt: skip
            assert reasons == set(expected.items())
        with pytest.raises(BlockingIOError):
            listener.recv(100)
        listener.close()

    asyncio.run(scenario())
    assert tripwire.calls == []


def test_names_resolving_to_refused_addresses_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with udp_server(dns_answer("127.0.0.1")) as resolver:
            cfg = config(policy=Policy.production(), resolver=(resolver.ip, resolver.port))
            async with running(cfg) as helper:
                steps = [{"kind": "tcp", "host": "rebind.example.test", "port": 80},
                         {"kind": "dns", "host": "rebind.example.test"}]  # fmt: skip
                reply = await http(helper.bound["control"][0], "POST", "/v1/measure", steps)
                connect, lookup = reply.json()["results"]
                assert connect["failure"] == "destination_not_allowed"
                assert connect["reason"] == "loopback"
                # The answers are the helper's resolver's: a refused one is not handed out.
                assert connect["addresses"] == ["[redacted]"] and connect["redacted"] == 1
                assert lookup["failure"] is None and lookup["addresses"] == ["[redacted]"]
                assert reply.json()["trace"]["tcp_connect"] == []  # resolved, never connected

    asyncio.run(scenario())


def test_lab_mode_allows_only_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    tripwire = _Tripwire()
    tripwire.install(monkeypatch)

    async def scenario() -> None:
        async with running(config(policy=Policy.lab())) as helper:
            targets = ["198.18.0.1", "198.19.0.10", "2001:db8:3::10", "10.0.0.1", "127.0.0.1",
                       "8.8.8.8", "2001:db9::1", "::1"]  # fmt: skip
            steps = [{"kind": "tcp", "address": ip, "port": 443} for ip in targets]
            reply = await http(helper.bound["control"][0], "POST", "/v1/measure", steps)
            failures = [r["failure"] for r in reply.json()["results"]]
            assert failures == ["connection_refused"] * 3 + ["destination_not_allowed"] * 5

    asyncio.run(scenario())
    assert tripwire.calls == [("tcp", "198.18.0.1"), ("tcp", "198.19.0.10"),
                              ("tcp", "2001:db8:3::10")]  # fmt: skip


def test_the_deadline_bounds_the_call() -> None:
    async def scenario() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        async with running(replace(config())) as helper:
            steps = [{"kind": "stun", "address": "127.0.0.1", "port": silent.getsockname()[1]}] * 4
            loop = asyncio.get_running_loop()
            started = loop.time()
            reply = await http(helper.bound["control"][0], "POST", "/v1/measure",
                               {"steps": steps, "timeout": 0.4})  # fmt: skip
            assert 0.35 < loop.time() - started < 1.5
            assert {r["failure"] for r in reply.json()["results"]} == {"generic_timeout_error"}
        silent.close()

    asyncio.run(scenario())

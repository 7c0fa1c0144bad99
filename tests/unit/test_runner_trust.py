"""The runner under pressure (issue 9): scrubbing across services, the fence, slots, retries.

Every server is on loopback in the test's own loop (``tests/unit/servers.py``); addresses such as
203.0.113.77 appear only as strings that the servers echo, never as a destination.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from click.testing import CliRunner

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.catalogue.loader import Catalogue, FunctionTargets, Service
from msgwatch.catalogue.schema import Endpoint, Protocol, Source, Transport
from msgwatch.cli.main import cli
from msgwatch.fence import FENCE_VARIABLE, FenceError, fence_from
from msgwatch.probe.chains import ChainConfig
from msgwatch.probe.runner import RunConfig, ServiceRun, run, slots_for
from tests.unit.servers import (
    TEST_SERVICE,
    closed_tcp_port,
    hold_open,
    http_response,
    reset,
    stun_answer,
    tcp_server,
    udp_server,
)

CHECKED = dt.date(2026, 11, 24)
SOURCE = Source(id="doc", title="t", url="https://example.org/", checked=CHECKED)
PUBLIC = "203.0.113.77"
"""The probe's public address as a NAT's STUN answer gives it (a string only: never contacted)."""


def _endpoint(name: str, port: int, protocol: Protocol = "http", transport: Transport = "tcp",
              address: str = "127.0.0.1", host: str | None = None) -> Endpoint:  # fmt: skip
    return Endpoint(id=name, host=host, address=None if host else address, port=port,
                    transport=transport, protocol=protocol, path="/", source="doc",
                    checked=CHECKED)  # fmt: skip


def _service(sid: str, function: str, *endpoints: Endpoint, mode: str = "any_of") -> Service:
    functions = (FunctionTargets(function, mode, tuple(endpoints)),)
    return Service(sid, sid, f"{sid}.toml", "", "", None, None, (SOURCE,), (), functions)


def _run(services: list[Service], config: RunConfig) -> list[ServiceRun]:
    return asyncio.run(run(Catalogue("1", "x", tuple(services)), services, config))


def _echo(address: str) -> bytes:
    body = f"<html>Access from {address} is not allowed</html>".encode()
    head = (f"HTTP/1.1 200 OK\r\nX-Client-IP: {address}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip
    return head + body


# -- 1: the probe's own address, learned anywhere in the run, is scrubbed everywhere -------------


def test_address_learned_by_stun_in_one_service_is_scrubbed_in_another() -> None:
    async def scenario() -> list[ServiceRun]:
        async with (
            udp_server(stun_answer(mapped=(PUBLIC, 40123))) as stun,
            tcp_server(http_response(_echo(PUBLIC))) as (_, port),
        ):
            # The echoing service comes first: its measurement must wait for the STUN answer.
            web = _service("aaa-web", "web", _endpoint("page", port))
            calls = _service("zzz-calls", "voice", _endpoint("relay", stun.port, "stun", "udp"))
            services = [web, calls]
            return await run(Catalogue("1", "x", tuple(services)), services, RunConfig(timeout=3))

    web, calls = asyncio.run(scenario())
    assert (
        judge(calls.measurement)[0]["verdict"] == "ok"
    )  # the STUN answer arrived: the address was learned
    response = web.measurement["test_keys"]["requests"][0]["response"]
    assert "[scrubbed]" in response["body"]
    assert ["X-Client-IP", "[scrubbed]"] in [list(h) for h in response["headers_list"]]
    for done in (web, calls):
        assert PUBLIC not in json.dumps(done.measurement)


def test_a_configured_public_address_is_scrubbed_without_stun() -> None:
    async def scenario() -> list[ServiceRun]:
        async with tcp_server(http_response(_echo("198.51.100.23"))) as (_, port):
            web = _service("web", "web", _endpoint("page", port))
            config = RunConfig(timeout=3, probe_addresses=("198.51.100.23",))
            return await run(Catalogue("1", "x", (web,)), [web], config)

    (web,) = asyncio.run(scenario())
    text = json.dumps(web.measurement)
    assert "198.51.100.23" not in text and "[scrubbed]" in text


# -- 8: the fence is the run's configuration, not the network's behaviour -------------------------


@pytest.mark.parametrize("value", ["127.0.0.0/8,not-a-prefix", "10.0.0.0/33", "", " , "])
def test_a_malformed_or_empty_fence_stops_the_run_before_any_packet(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)

    async def scenario() -> None:
        async with tcp_server(count) as (_, port):
            svc = _service("svc", "text", _endpoint("chat", port, "tcp"))
            monkeypatch.setenv(FENCE_VARIABLE, value)
            await run(Catalogue("1", "x", (svc,)), [svc], RunConfig(timeout=1))

    with pytest.raises(FenceError, match=FENCE_VARIABLE):
        asyncio.run(scenario())
    assert accepted == []


def test_fence_values() -> None:
    assert fence_from(None) is None  # unset: no fence
    assert [str(n) for n in fence_from(" 127.0.0.1/8 , ::1/128 ") or []] == [
        "127.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(FenceError, match="'bogus'"):
        fence_from("127.0.0.0/8,bogus")
    with pytest.raises(FenceError, match="empty"):
        fence_from("  ")
    with pytest.raises(FenceError, match="too long"):
        fence_from("127.0.0.0/8," * 100_000)


def test_the_cli_refuses_a_malformed_fence_with_a_clear_error(tmp_path: Any) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    (root / "index.toml").write_text('schema = 1\nversion = "2026.11.24"\n')
    (root / "svc.toml").write_text(TEST_SERVICE.format(id="svc", tcp_port=9, udp_port=9))
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "0.5", "--output", str(out), "--json"]
    result = CliRunner().invoke(cli, args, env={FENCE_VARIABLE: "127.0.0.0/8;10.0.0.0/8"})
    assert result.exit_code == 2, result.output
    assert FENCE_VARIABLE in result.output and "unknown_failure" not in result.output
    assert not out.exists()


def test_a_destination_outside_the_fence_is_not_measured_and_not_submitted(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FENCE_VARIABLE, "127.0.0.0/8")
    outside = _service("outside", "text", _endpoint("chat", 443, "tcp", address="192.0.2.10"))
    resolver = _service("named", "web", _endpoint("page", 443, "https", host="chat.example.test"))
    config = RunConfig(timeout=1, chain=ChainConfig(resolver=("192.0.2.53", 53)))
    results = _run([outside, resolver], config)
    for done in results:
        (v,) = judge(done.measurement)
        assert (v["verdict"], v["mechanism"]) == ("not_measured", "fence"), v
        assert done.measured is False
        (target,) = done.measurement["test_keys"]["msgwatch_targets"]
        assert target["not_measured"] == "fence" and target["failure"] is None
    # Through the command line: shown, written to the output file, never spooled.
    root = tmp_path / "cat"
    root.mkdir()
    (root / "index.toml").write_text('schema = 1\nversion = "2026.11.24"\n')
    body = TEST_SERVICE.format(id="svc", tcp_port=443, udp_port=3478).replace(
        'address = "127.0.0.1"', 'address = "192.0.2.10"'
    )
    (root / "svc.toml").write_text(body)
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "0.5", "--output", str(out), "--json",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {v["verdict"] for v in data["verdicts"]} == {"not_measured"}
    assert data["spool"]["spooled"] == 0 and data["spool"]["pending"] == 0
    assert len(out.read_text().splitlines()) == 1


# -- 9: slots never turn into false timeouts ------------------------------------------------------


def test_slots_come_from_the_file_descriptor_limit() -> None:
    assert slots_for(1024) < slots_for(65536) <= slots_for(1 << 20)
    assert slots_for(0) == 1 and slots_for(100) >= 1
    assert RunConfig().concurrency is None  # sized at run time


def test_chains_beyond_the_slots_get_their_own_time() -> None:
    """Six silent HTTP servers, two slots: each chain still waits its whole timeout for the
    response; none is recorded as failing at a step it had no time for."""
    timeout = 0.6

    async def scenario() -> tuple[list[ServiceRun], float]:
        async with tcp_server(hold_open) as (_, port):
            svc = _service("svc", "web", *[_endpoint(f"e{i}", port) for i in range(6)])
            config = RunConfig(timeout=timeout, concurrency=2, retry=False)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            done = await run(Catalogue("1", "x", (svc,)), [svc], config)
            return done, loop.time() - t0

    (done,), elapsed = asyncio.run(scenario())
    targets = done.measurement["test_keys"]["msgwatch_targets"]
    assert [(t["failed_step"], t["failure"]) for t in targets] == [
        ("http_request", "generic_timeout_error")
    ] * 6
    events = done.measurement["test_keys"]["network_events"]
    for target in targets:
        txid = target["transaction_ids"][0]
        mine = [e for e in events if e["transaction_id"] == txid]
        assert max(e["t"] for e in mine) - min(e["t0"] for e in mine) >= timeout * 0.9
    assert elapsed >= 3 * timeout * 0.9  # three waves of two


def test_a_chain_that_cannot_get_its_time_is_not_run() -> None:
    async def scenario() -> list[ServiceRun]:
        async with tcp_server(hold_open) as (_, port):
            svc = _service("svc", "web", *[_endpoint(f"e{i}", port) for i in range(3)])
            config = RunConfig(timeout=0.6, concurrency=1, run_timeout=1.0)
            return await run(Catalogue("1", "x", (svc,)), [svc], config)

    (done,) = asyncio.run(scenario())
    keys = done.measurement["test_keys"]
    first, *rest = keys["msgwatch_targets"]
    assert first["failure"] == "generic_timeout_error"
    assert rest and all(t["not_measured"] == "no_time" and t["failure"] is None for t in rest)
    assert all(t["failed_step"] is None for t in rest)
    ran = {e["transaction_id"] for e in keys["network_events"]}
    assert not ran & {i for t in rest for i in t["transaction_ids"]}
    (v,) = judge(done.measurement)
    assert (v["verdict"], v["mechanism"]) == ("not_measured", "no_time")


# -- 11: partial failure is degraded, a single failure does not decide -----------------------------


def _flaky(failures: int) -> Any:
    """A web server that resets its first ``failures`` connections and answers the others."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        if len(seen) <= failures:
            await reader.readuntil(b"\r\n\r\n")
            reset(writer)
            return
        await http_response(_echo("127.0.0.1"))(reader, writer)

    return handle


@pytest.mark.parametrize(
    ("failures", "verdict", "mechanism"),
    [(0, "ok", None), (1, "degraded", "intermittent"), (99, "blocked", "http.reset")],
)
def test_a_failed_chain_is_retried_once_later_in_the_run(
    failures: int, verdict: str, mechanism: str | None
) -> None:
    async def scenario() -> list[ServiceRun]:
        async with tcp_server(_flaky(failures)) as (_, port):
            svc = _service("svc", "web", _endpoint("page", port), mode="all_of")
            return await run(Catalogue("1", "x", (svc,)), [svc], RunConfig(timeout=2))

    (done,) = asyncio.run(scenario())
    (v,) = judge(done.measurement)
    assert (v["verdict"], v["mechanism"]) == (verdict, mechanism), v
    targets = done.measurement["test_keys"]["msgwatch_targets"]
    assert [t["attempt"] for t in targets] == ([1] if failures == 0 else [1, 2])
    assert v["endpoints"] == {"total": 1, "ok": int(failures == 0), "failed": int(failures != 0)}
    if failures:
        assert v["evidence"] == sorted(i for t in targets for i in t["transaction_ids"])


def test_a_refused_chain_is_not_retried_into_a_verdict_change() -> None:
    """Nothing listens: inconclusive both times, never degraded or blocked."""
    svc = _service("svc", "text", _endpoint("chat", closed_tcp_port(), "tcp"))
    (done,) = _run([svc], RunConfig(timeout=1))
    (v,) = judge(done.measurement)
    assert (v["verdict"], v["mechanism"]) == ("inconclusive", "tcp.refused")

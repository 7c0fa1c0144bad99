"""The call path end to end against a real test helper in this process (loopback only).

A censor is emulated inside the helper: ``handle`` is wrapped so that a datagram is lost before the
helper sees it (upstream: the helper does not count it) or after it answered (downstream: counted
as sent, never delivered). The runner measures, the judge decides from the measurement alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.catalogue.loader import Catalogue, FunctionTargets, Service
from msgwatch.catalogue.schema import Source
from msgwatch.helper.server import Helper
from msgwatch.probe.chains import ChainConfig
from msgwatch.probe.runner import RunConfig, ServiceRun, run
from tests.helper.util import config, running

SECONDS = 0.6
TIMEOUT = 2.5
COOKIE = bytes.fromhex("2112a442")
Drop = Callable[[bytes, int], bool]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _censor(helper: Helper, up: Drop | None = None, down: Drop | None = None) -> None:
    """Lose datagrams on the way to the helper (``up``) or on the way back (``down``)."""
    real = helper.udp.handle

    def handle(data: bytes, peer: tuple[str, int], local_port: int, now: float,
               sendable: bool = True) -> bytes | None:  # fmt: skip
        if up is not None and up(data, local_port):
            return None
        reply = real(data, peer, local_port, now, sendable)
        if reply is not None and down is not None and down(data, local_port):
            return None
        return reply

    helper.udp.handle = handle  # type: ignore[method-assign]


def _is_stun(data: bytes, port: int) -> bool:
    return data[4:8] == COOKIE


def _is_call(data: bytes, port: int) -> bool:
    """STUN or RTP version 2 (the original's datagrams, not its bit-inverted control's)."""
    return data[4:8] == COOKIE or data[0] >> 6 == 2


def _measure(
    censor: Callable[[Helper, list[int]], None] | None = None,
    *,
    rate_pps: int | None = None,
    call_ports: int = 2,
    seed: int = 11,
    timeout: float = TIMEOUT,
) -> tuple[ServiceRun, float]:
    ports = [_free_udp_port() for _ in range(call_ports + 1)]
    changes: dict[str, Any] = {"udp_ports": tuple(ports), "tcp_ports": ()}
    if rate_pps is not None:
        changes["rate_pps"] = rate_pps

    async def scenario() -> tuple[ServiceRun, float]:
        async with running(config(**changes)) as helper:
            if censor is not None:
                censor(helper, ports)
            source = Source(id="doc", title="t", url="https://example.org/",
                            checked=dt.date(2026, 11, 24))  # fmt: skip
            function = FunctionTargets("voice", "any_of", (), "", "full", tuple(ports[:-1]), "doc")
            service = Service("svc", "Svc", "svc.toml", "", "", None, None, (source,), (),
                              (function,))  # fmt: skip
            cfg = RunConfig(
                chain=ChainConfig(stun_rto=0.2), timeout=timeout, helper="127.0.0.1",
                helper_control_port=helper.bound["control"][0][1], replay_seconds=SECONDS,
                replay_seed=seed, neutral_port=ports[-1],
            )  # fmt: skip
            started = time.monotonic()
            (done,) = await run(Catalogue("1", "x", (service,)), [service], cfg)
            return done, time.monotonic() - started

    return asyncio.run(scenario())


def _verdict(done: ServiceRun) -> tuple[str, str | None, str]:
    (v,) = judge(done.measurement)
    return v["verdict"], v["mechanism"], v["rule_id"]


def test_rounds_plain_echoes_and_the_helpers_counts() -> None:
    done, elapsed = _measure(timeout=6.0)
    assert _verdict(done) == ("ok", None, "call.ok")
    keys = done.measurement["test_keys"]
    replays = keys["msgwatch_replays"]
    roles = sorted((r["role"], r["round"]) for r in replays)
    assert roles == [("replay_control", 1), ("replay_control", 2), ("replay_control", 3),
                     ("replay_down_control", 1), ("replay_down_control", 2),
                     ("replay_down_original", 1), ("replay_down_original", 2),
                     ("replay_neutral", None), ("replay_original", 1), ("replay_original", 2),
                     ("replay_original", 3), ("replay_plain", None), ("replay_plain", None)]  # fmt: skip
    ports = keys["msgwatch_functions"][0]["call_ports"]
    assert sorted(r["port"] for r in replays if r["role"] == "replay_plain") == sorted(ports)
    down = [r for r in replays if r.get("direction") == "down"]
    for r in down:  # the helper sent one round's schedule; all of it arrived, nothing else
        helper = r["helper"]
        assert r["send"]["packets"] == r["sent_packets"] == r["received_packets"] > 0
        assert helper["originated"]["tx_packets"] == r["sent_packets"]
        assert helper["originated"]["over_limits"] == helper["originated"]["not_echoed"] == 0
        assert (helper["upstream_loss"], helper["downstream_loss"]) == (None, 0.0)
        assert r["port"] == ports[0] and r["loss"] == 0.0
    for r in (r for r in replays if r.get("direction") != "down"):
        helper = r["helper"]
        assert helper["failure"] is None
        # Nothing lost: the helper received every datagram and sent every answer back.
        assert helper["rx_packets"] == r["sent_packets"] == r["received_packets"]
        assert helper["tx_packets"] == r["sent_packets"]
        assert (helper["upstream_loss"], helper["downstream_loss"]) == (0.0, 0.0)
        assert sum(row["rx_packets"] for row in helper["intervals"]) == helper["rx_packets"]
    # The rounds follow each other: the pairs take 2 x the replay length, plus the last echoes,
    # well before the deadline (three rounds each waiting for its echoes would take 4.2 s).
    assert elapsed < 2 * SECONDS + 0.5 + 1.0, elapsed


@pytest.mark.parametrize(
    ("name", "censor", "expected"),
    [
        # Random bytes pass on the call ports where STUN dies: STUN is recognised, not the port.
        ("stun dropped", lambda h, p: _censor(h, up=_is_stun),
         ("blocked", "udp.dpi_call", "call.dpi_stun")),
        # Random bytes die too on every call port, while the neutral port works: the ports.
        ("call ports dropped", lambda h, p: _censor(h, up=lambda d, port: port in p[:-1]),
         ("blocked", "udp.drop_ports", "call.drop_ports")),
        ("second call port dropped", lambda h, p: _censor(h, up=lambda d, port: port == p[1]),
         ("degraded", "udp.drop_ports", "call.some_ports")),
        ("first call port dropped", lambda h, p: _censor(h, up=lambda d, port: port == p[0]),
         ("degraded", "udp.drop_ports", "call.drop_some_ports")),
        ("all udp dropped", lambda h, p: _censor(h, up=lambda d, port: True),
         ("blocked", "udp.drop_all", "call.drop_all")),
    ],
)  # fmt: skip
def test_the_plain_echo_tells_ports_from_protocols(
    name: str, censor: Callable[[Helper, list[int]], None], expected: tuple[str, str, str]
) -> None:
    done, _ = _measure(censor)
    assert _verdict(done) == expected, judge(done.measurement)


def test_the_helpers_counts_say_which_way_the_datagrams_were_lost() -> None:
    up, _ = _measure(lambda h, p: _censor(h, up=_is_call))
    assert _verdict(up) == ("blocked", "udp.dpi_call", "call.dpi_call")
    (v,) = judge(up.measurement)
    assert "lost on the way to the test helper" in v["explanation"]
    original = [r for r in up.measurement["test_keys"]["msgwatch_replays"]
                if r["role"] == "replay_original"]  # fmt: skip
    assert all(r["helper"]["upstream_loss"] == 1.0 for r in original)

    down, _ = _measure(lambda h, p: _censor(h, down=_is_call))
    assert _verdict(down) == ("blocked", "udp.dpi_call", "call.dpi_call")
    (v,) = judge(down.measurement)
    assert "reached the test helper and were lost on the way back" in v["explanation"]
    original = [r for r in down.measurement["test_keys"]["msgwatch_replays"]
                if r["role"] == "replay_original"]  # fmt: skip
    assert all(r["helper"]["upstream_loss"] == 0.0 for r in original)
    assert all(r["helper"]["downstream_loss"] == 1.0 for r in original)


def test_echoes_the_helper_did_not_send_are_not_censorship() -> None:
    # The helper answers at most 30 datagrams a second to one client: its own limit.
    done, _ = _measure(rate_pps=30)
    assert _verdict(done) == ("inconclusive", "helper.limited", "call.helper_short")

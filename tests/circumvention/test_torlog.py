"""tor's log read by the Tor transport (no root): bootstrap progress, stages, the SOCKS port, the
version, hostile lines and the bounds; and the params the Tor types accept."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.circumvention.transports import tor, tor_reach
from msgwatch.circumvention.transports.torlog import (
    MAX_KEPT,
    MAX_LINE,
    LineSplitter,
    TorLog,
    stage_of,
)
from msgwatch.failures import ProbeFailure
from msgwatch.fence import fence_from
from msgwatch.steps.trace import Trace

FPR = "A" * 40
AUTH = f"labauth1 orport=9001 no-v2 v3ident={'B' * 40} 198.18.4.1:9030 {FPR}"
CERT = "c" * 70
BRIDGE = f"obfs4 198.18.4.16:9443 {FPR} cert={CERT} iat-mode=0"


def feed(*lines: str) -> TorLog:
    log = TorLog()
    for line in lines:
        log.feed(line)
    return log


def test_progress_tag_summary_and_port() -> None:
    log = feed(
        "Dec 03 09:16:49.144 [notice] Tor 0.4.9.11 running on Linux with Libevent 2.1.12-stable",
        "Dec 03 09:16:49.187 [notice] Opened Socks listener connection (ready) on 127.0.0.1:41234",
        "Dec 03 09:16:51.677 [notice] Bootstrapped 5% (conn): Connecting to a relay",
        "Dec 03 09:16:51.677 [notice] Bootstrapped 10% (conn_done): Connected to a relay",
        "Dec 03 09:16:53.314 [notice] Bootstrapped 15% (handshake_done): Handshake with a relay done",
    )
    assert (log.progress, log.tag, log.summary) == (
        15,
        "handshake_done",
        "Handshake with a relay done",
    )
    assert log.socks_port == 41234 and log.version == "0.4.9.11" and not log.done
    assert len(log.kept) == 3  # the Bootstrapped lines (not the notices around them)
    log.feed("Dec 03 09:17:00.330 [notice] Bootstrapped 100% (done): Done")
    assert log.done and log.failure() == "generic_timeout_error"


def test_progress_never_goes_back_and_out_of_range_is_ignored() -> None:
    log = feed("[notice] Bootstrapped 50% (loading_descriptors): x", "[notice] Bootstrapped 5% (conn): y",
               "[notice] Bootstrapped 900% (done): z")  # fmt: skip
    assert (log.progress, log.tag) == (50, "loading_descriptors")


@pytest.mark.parametrize(
    ("progress", "stage"),
    [(0, "connect"), (1, "connect"), (5, "connect"), (10, "handshake"), (14, "handshake"),
     (15, "tunnel"), (95, "tunnel")],
)  # fmt: skip
def test_stage_of(progress: int, stage: str) -> None:
    assert stage_of(progress) == stage


@pytest.mark.parametrize(
    ("reason", "failure"),
    [("CONNECTREFUSED", "connection_refused"), ("CONNECTRESET", "connection_reset"),
     ("TIMEOUT", "generic_timeout_error"), ("NOROUTE", "host_unreachable"),
     ("MISC", "generic_timeout_error")],
)  # fmt: skip
def test_stuck_reason(reason: str, failure: str) -> None:
    log = feed(
        "[warn] Problem bootstrapping. Stuck at 5% (conn): Connecting to a relay. (Connection "
        f"refused; {reason}; count 3; recommendation warn; host {FPR} at 198.18.4.1:9001)"
    )
    assert log.stuck_reason == reason and log.failure() == failure
    assert len(log.kept) == 1


def test_hostile_lines() -> None:
    log = feed(
        "x" * 100_000 + " Bootstrapped 100% (done): Done",  # the marker is past the cut
        "[notice] Bootstrapped 20% (\x00bad): ctrl\x1b[31m",
        "[notice] Opened Socks listener connection (ready) on 127.0.0.1:99999",
        "[notice] Opened Socks listener connection (ready) on 0.0.0.0:9050",
        "[err] \x07" + "e" * 5000,
    )
    assert log.progress == 0 and log.socks_port is None
    assert all(
        len(line) <= MAX_LINE and "\x1b" not in line and "\x07" not in line for line in log.kept
    )
    assert log.errors and len(log.errors[0]) <= MAX_LINE


def test_kept_lines_are_bounded() -> None:
    log = feed(*(f"[warn] number {i}" for i in range(MAX_KEPT + 50)))
    assert len(log.kept) == MAX_KEPT and log.dropped == 50
    log = feed(*(f"[err] number {i}" for i in range(20)))
    assert len(log.errors) == 5 and log.errors[-1] == "[err] number 19"


def test_splitter_bounds_partial_lines() -> None:
    split = LineSplitter(max_line=16)
    assert split.feed(b"abc") == []
    assert split.feed(b"def\nxyz") == ["abcdef"]
    assert split.feed(b"0" * 10_000) == []  # a line without end: at most 16 bytes held
    assert split.feed(b"tail\nok\n") == ["xyz" + "0" * 13, "ok"]
    assert split.feed(b"last") == [] and split.flush() == ["last"] and split.flush() == []
    assert LineSplitter().feed(b"\xff\xfe bytes\n") == ["\ufffd\ufffd bytes"]


def entry(kind: str, **params: Any) -> Entry:
    return Entry("t", kind, "198.18.4.1", 9001, params=params)


def test_tor_params() -> None:
    assert (
        tor.check_params(entry("tor", dir_authorities=[AUTH], torrc=["TestingTorNetwork 1"])) == []
    )
    assert tor.check_params(entry("obfs4", bridge=BRIDGE, dir_authorities=[AUTH])) == []
    assert tor.check_params(entry("tor")) == []  # the public network (refused by the fence)
    assert tor.first_hops(entry("obfs4", bridge=BRIDGE)) == ["198.18.4.16"]
    assert tor.first_hops(entry("tor", dir_authorities=[AUTH])) == ["198.18.4.1"]


@pytest.mark.parametrize(
    ("kind", "params", "problem"),
    [
        ("tor", {"torrc": ["SocksPort 0.0.0.0:9050"]}, "torrc.0: not an allowed option"),
        ("tor", {"torrc": ["Log notice file /etc/passwd"]}, "torrc.0"),
        ("tor", {"torrc": ["TestingTorNetwork 1\nControlPort 9051"]}, "torrc.0"),
        ("tor", {"torrc": "TestingTorNetwork 1"}, "torrc: a list of strings"),
        ("tor", {"torrc": ["AssumeReachable 1"] * 40}, "torrc: at most 32 items"),
        ("tor", {"dir_authorities": [AUTH + "\nControlPort 1"]}, "dir_authorities.0"),
        (
            "tor",
            {"dir_authorities": [AUTH.replace("198.18.4.1", "999.1.1.1")]},
            "dir_authorities.0",
        ),
        ("tor", {"bridge": BRIDGE}, "unknown params: bridge"),
        ("obfs4", {}, "bridge: not"),
        ("obfs4", {"bridge": BRIDGE + " extra"}, "bridge: not"),
        ("obfs4", {"bridge": BRIDGE.replace("9443", "99999")}, "bridge: not"),
    ],
)
def test_tor_params_refused(kind: str, params: dict[str, Any], problem: str) -> None:
    assert any(p.startswith(problem) for p in tor.check_params(entry(kind, **params)))


def test_torrc_holds_only_checked_lines(tmp_path: Path) -> None:
    text = tor.torrc(entry("obfs4", bridge=BRIDGE, dir_authorities=[AUTH],
                           torrc=["TestingTorNetwork 1"]), tmp_path, "/x/obfs4proxy")  # fmt: skip
    assert "SocksPort 127.0.0.1:auto" in text and f"Bridge {BRIDGE}" in text
    assert "ClientTransportPlugin obfs4 exec /x/obfs4proxy" in text
    assert f"DirAuthority {AUTH}" in text and "ControlPort 0" in text
    assert "ReachableAddresses" not in text  # no fence, no restriction


def test_torrc_keeps_tor_inside_the_fence(tmp_path: Path) -> None:
    """M9: tor's later hops (relays from the consensus) are fenced by tor itself."""
    fence = fence_from("127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32")
    text = tor.torrc(entry("tor", dir_authorities=[AUTH]), tmp_path, None, fence)
    reachable = [line for line in text.splitlines() if line.startswith("ReachableAddresses")]
    assert reachable == [
        "ReachableAddresses accept 127.0.0.0/8:*",
        "ReachableAddresses accept [::1]/128:*",
        "ReachableAddresses accept 198.18.0.0/15:*",
        "ReachableAddresses accept [2001:db8::]/32:*",
        "ReachableAddresses reject *:*",
    ]


def target(**over: Any) -> dict[str, Any]:
    return {"name": "a", "address": "198.18.4.1", "port": 9001, "protocol": "or_port",
            "fingerprint": FPR} | over  # fmt: skip


def test_reach_params() -> None:
    assert tor_reach.check_params(entry("tor_reach", targets=[target()])) == []
    bad: list[dict[str, Any]] = [
        {"targets": []}, {"targets": "x"}, {"targets": [target(port=0)]},
        {"targets": [target(protocol="meek")]}, {"targets": [target(address="example.org")]},
        {"targets": [target(fingerprint="xyz")]}, {"targets": [target(name="")]},
        {"targets": [target()] * 65}, {"targets": [7]}, {"targets": [target()], "other": 1},
        {"targets": [target(port=True)]},
    ]  # fmt: skip
    for params in bad:
        assert tor_reach.check_params(entry("tor_reach", **params)), params


def test_reach_keys_count_and_scrub() -> None:
    targets = [target(), target(name="d", port=9030, protocol="dir_port"),
               target(name="b", protocol="obfs4", source="https://bridges.example")]  # fmt: skip
    results: list[dict[str, Any]] = [{"connect": None, "handshake": None}, {"connect": None, "handshake": "eof_error"},
               {"connect": "generic_timeout_error", "handshake": None}]  # fmt: skip
    keys = tor_reach.keys(entry("tor_reach", targets=targets), targets, results)
    assert (keys["or_port_total"], keys["or_port_accessible"]) == (1, 1)
    assert (keys["dir_port_total"], keys["dir_port_accessible"]) == (1, 0)
    assert (keys["obfs4_total"], keys["obfs4_accessible"]) == (1, 0)
    records = list(keys["targets"].values())
    assert records[0]["target_address"] == "198.18.4.1:9001" and records[0]["failure"] is None
    assert records[1]["failure"] == "eof_error"
    assert records[2]["target_address"] == "198.18.4.1:9001"  # a source is public, not private
    assert len(set(keys["targets"])) == 3
    private = Entry("t", "tor_reach", "198.18.4.1", 9001, params={"targets": targets}, private=True)
    hidden = list(tor_reach.keys(private, targets, results)["targets"].values())
    assert (
        {r["target_address"] for r in hidden}
        == {r["target_name"] for r in hidden}
        == {"[scrubbed]"}
    )


def test_reach_target_ids_are_oonis_and_unique() -> None:
    one = target()
    assert tor_reach.target_id(one) == hashlib.sha256(f"198.18.4.1:9001{FPR}".encode()).hexdigest()
    twice = [one, target(protocol="or_port_dirauth")]  # one port, two protocols: two records
    results: list[dict[str, Any]] = [{"connect": None, "handshake": None}] * 2
    keys = tor_reach.keys(entry("tor_reach", targets=twice), twice, results)
    assert len(keys["targets"]) == 2 and tor_reach.target_id(one) in keys["targets"]


# -- the client process, with hostile stand-ins for tor (no network: they never connect) -------


def _bring(tmp_path: Path, entry: Entry, exe: str | None, budget: float) -> Run:
    async def go() -> Run:
        run = Run(entry, Trace())
        ctx = Context(tmp_path, "198.18.3.10", budgets={entry.type: budget},
                      executables={"tor": exe} if exe else {})  # fmt: skip
        with contextlib.suppress(StageFailed):
            async with tor.bring_up(entry, ctx, run):
                pass
        return run

    return asyncio.run(go())


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-tor"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_public_network_is_refused_by_the_fence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,198.18.0.0/15")
    run = _bring(tmp_path, entry("tor"), _script(tmp_path, "touch started"), 5)
    assert (run.failed_stage, run.failure) == ("connect", "destination_not_allowed")
    assert not (tmp_path / "started").exists()
    outside = entry("tor", dir_authorities=[AUTH.replace("198.18.4.1", "192.0.2.1")])
    assert _bring(tmp_path, outside, None, 5).failure == "destination_not_allowed"


@pytest.mark.parametrize(
    ("body", "failure"),
    [
        # endless output without a newline: bounded memory, the budget ends it
        ("head -c 100000000 /dev/zero | tr '\\0' x; sleep 30", "generic_timeout_error"),
        # a flood of lines claiming progress out of range, then silence
        ("yes 'Bootstrapped 999% (done): Done' | head -n 200000; sleep 30", "generic_timeout_error"),
        # stuck at 5 % with tor's reason
        ("echo '[notice] Bootstrapped 5% (conn): Connecting to a relay'; echo '[warn] Problem "
         "bootstrapping. Stuck at 5% (conn): Connecting to a relay. (Connection refused; "
         "CONNECTREFUSED; count 1; recommendation warn)'; sleep 30", "connection_refused"),
        # exits at once: the client's own failure, not the network's
        ("echo '[err] Reading config failed'; exit 1", "client_failed"),
    ],
)  # fmt: skip
def test_a_hostile_client_is_bounded_and_stopped(
    tmp_path: Path, body: str, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,198.18.0.0/15")
    started = time.monotonic()
    run = _bring(tmp_path, entry("tor", dir_authorities=[AUTH]), _script(tmp_path, body), 3)
    assert time.monotonic() - started < 12
    assert (run.failed_stage, run.failure) == ("connect", failure)
    assert run.keys["tor_progress"] < 10 and run.keys["timeout"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["fake-tor"]  # its directory is gone
    assert not _running(str(tmp_path))


def test_cancellation_stops_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,198.18.0.0/15")
    exe = _script(tmp_path, "echo '[notice] Bootstrapped 5% (conn): x'; sleep 60")

    async def go() -> None:
        run = Run(entry("tor", dir_authorities=[AUTH]), Trace())
        ctx = Context(tmp_path, "198.18.3.10", executables={"tor": exe})

        async def up() -> None:
            async with tor.bring_up(run.entry, ctx, run):
                pass

        task = asyncio.create_task(up())
        await asyncio.sleep(1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert run.stages[0].failure == "interrupted"

    asyncio.run(go())
    assert not _running(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["fake-tor"]


def _running(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
    return found


def test_tunnel_carries_no_udp() -> None:
    tunnel = tor.TorTunnel(9050)
    assert tunnel.carries_udp is False
    with pytest.raises(ProbeFailure) as caught:
        asyncio.run(tunnel.open_udp(Trace(), 1, "198.18.3.10", 40000, 0.0))
    assert caught.value.failure == "udp_not_carried"

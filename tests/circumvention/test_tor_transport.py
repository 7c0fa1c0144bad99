"""The Tor transports' stages and failures with stand-ins for tor and obfs4proxy (no root, no
lab: loopback only): tor's own deadline before the runner's cut, the progress and its age, obfs4's
plain TCP connect, local failures that are never the network's, the fence in the torrc, and
``tor_reach``'s partial reachability and single obfs4proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.analysis.verdicts.circumvention import judge
from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.circumvention.transports import tor, tor_reach
from msgwatch.failures import ProbeFailure
from msgwatch.steps.trace import Trace

FENCE = "127.0.0.0/8,198.18.0.0/15"
FPR = "A" * 40
AUTH = f"labauth1 orport=9001 no-v2 v3ident={'B' * 40} 198.18.4.1:9030 {FPR}"
CERT = "c" * 70


@pytest.fixture(autouse=True)
def fence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", FENCE)


def script(tmp_path: Path, body: str, name: str = "fake-tor") -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def running(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
    return found


async def runner_like(entry: Entry, ctx: Context, run: Run) -> None:
    """Bring ``entry`` up as the runner does: within ``asyncio.timeout(budget)``."""
    with contextlib.suppress(StageFailed):
        async with asyncio.timeout(ctx.budget(entry.type)):
            async with tor.bring_up(entry, ctx, run) if entry.type != "tor_reach" else (
                tor_reach.bring_up(entry, ctx, run)
            ):  # fmt: skip
                pass


def bring(tmp_path: Path, entry: Entry, budget: float, **executables: str) -> Run:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)

    async def go() -> Run:
        run = Run(entry, Trace())
        ctx = Context(work, "198.18.3.10", budgets={entry.type: budget},
                      executables=executables)  # fmt: skip
        await runner_like(entry, ctx, run)
        return run

    run = asyncio.run(go())
    assert not any(work.iterdir()), "bring_up left files behind"
    return run


def vanilla() -> Entry:
    return Entry("t", "tor", "198.18.4.1", 9001, params={"dir_authorities": [AUTH]})


# -- tor ------------------------------------------------------------------------------------------


def test_tors_reason_is_recorded_before_the_runners_cut(tmp_path: Path) -> None:
    """M1: tor's deadline falls before the runner's: the stage has tor's stuck reason."""
    exe = script(tmp_path, "echo '[notice] Bootstrapped 5% (conn): Connecting to a relay'; "
                 "echo '[warn] Problem bootstrapping. Stuck at 5% (conn): Connecting to a relay. "
                 "(Connection refused; CONNECTREFUSED; count 1; recommendation warn)'; sleep 30")  # fmt: skip
    run = bring(tmp_path, vanilla(), 3, tor=exe)
    assert (run.failed_stage, run.failure) == ("connect", "connection_refused")
    assert not running(str(tmp_path))


def test_a_stuck_bootstrap_has_its_progress_and_age(tmp_path: Path) -> None:
    """H6.6: the tunnel stage says where tor stopped and since when."""
    exe = script(tmp_path, "for p in 10 15 50; do echo \"[notice] Bootstrapped $p% (x): y\"; "
                 "done; sleep 30")  # fmt: skip
    run = bring(tmp_path, vanilla(), 4, tor=exe)
    tunnel = run.stages[-1]
    assert (tunnel.stage, tunnel.failure) == ("tunnel", "generic_timeout_error")
    assert tunnel.detail["progress"] == 50 and tunnel.detail["progress_age"] >= 2.0
    assert all("progress_age" in s.detail and s.detail["progress"] >= 10 for s in run.stages)


def test_a_moving_bootstrap_is_slow_not_blocked(tmp_path: Path) -> None:
    """A bootstrap still moving when its time ran out: a small age, and the judge says slow."""
    exe = script(tmp_path, "echo '[notice] Bootstrapped 15% (handshake_done): x'; p=20; "
                 "while [ $p -lt 99 ]; do echo \"[notice] Bootstrapped $p% (x): y\"; p=$((p+1)); "
                 "sleep 0.2; done; sleep 30")  # fmt: skip
    run = bring(tmp_path, vanilla(), 4, tor=exe)
    tunnel = run.stages[-1]
    assert tunnel.failure == "generic_timeout_error" and tunnel.detail["progress_age"] < 1.0
    keys = {"entry": {"name": "t"}, "transport": "tor", "stages": [s.as_dict() for s in run.stages],
            "control": {"helper": "198.18.3.10", "port": 40000, "failure": None, "t0": 0, "t": 1},
            **run.keys}  # fmt: skip
    rows = judge({"test_name": "msgwatch_circumvention", "test_keys": keys})
    assert rows[0]["verdict"] == "inconclusive" and rows[0]["rule_id"] == "circumvention.slow"


def test_local_failures_are_not_the_networks(tmp_path: Path) -> None:
    bad = Entry("t", "tor", "198.18.4.1", 9001, params={"torrc": ["SocksPort 9050"]})
    run = bring(tmp_path, bad, 3)
    assert (run.failed_stage, run.failure) == ("connect", "bad_params")
    assert run.stages[0].detail["problems"][0].startswith("torrc.0")
    missing = bring(tmp_path, vanilla(), 3, tor=str(tmp_path / "no-such-tor"))
    assert missing.failure == "client_not_found"
    reach = Entry("t", "tor_reach", "198.18.4.1", 9001, params={"targets": []})
    assert bring(tmp_path, reach, 3).failure == "bad_params"


def test_tor_is_fenced_by_its_torrc(tmp_path: Path) -> None:
    seen = tmp_path / "seen-torrc"
    exe = script(tmp_path, f'cp "$4" {seen}; sleep 30')
    bring(tmp_path, vanilla(), 2, tor=exe)
    lines = seen.read_text().splitlines()
    assert lines[-3:] == ["ReachableAddresses accept 127.0.0.0/8:*",
                          "ReachableAddresses accept 198.18.0.0/15:*",
                          "ReachableAddresses reject *:*"]  # fmt: skip


def test_the_vanilla_public_network_entry_is_accepted_and_fenced(tmp_path: Path) -> None:
    public = Entry("tor", "tor", "tor-builtin", 0, params={})
    assert tor.check_params(public) == []
    run = bring(tmp_path, public, 3, tor=script(tmp_path, f"touch {tmp_path}/started"))
    assert run.failure == "destination_not_allowed"
    assert not (tmp_path / "started").exists()


@contextlib.asynccontextmanager
async def listener(reply: bytes = b"") -> AsyncIterator[int]:
    """A loopback TCP server answering ``reply`` to the first request it reads."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            if reply:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(reply)
                await writer.drain()
            else:
                await reader.read(1)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def obfs4(port: int) -> Entry:
    bridge = f"obfs4 127.0.0.1:{port} {FPR} cert={CERT} iat-mode=0"
    return Entry("t", "obfs4", "127.0.0.1", port, params={"bridge": bridge})


def test_obfs4_connect_is_a_plain_tcp_connect(tmp_path: Path) -> None:
    """M1: obfs4's connect stage is the probe's TCP connect to the bridge; tor's progress (the
    PT and link handshakes) is the handshake stage."""
    started = tmp_path / "started"
    exe = script(tmp_path, f"touch {started}; echo '[notice] Bootstrapped 5% (conn): x'; sleep 30")
    refused = bring(tmp_path, obfs4(closed_port()), 3, tor=exe, obfs4proxy=exe)
    assert (refused.failed_stage, refused.failure) == ("connect", "connection_refused")
    assert not started.exists()  # tor never started: the bridge's address did not answer

    async def go() -> Run:
        async with listener() as port:
            entry = obfs4(port)
            run = Run(entry, Trace())
            ctx = Context(tmp_path / "work", "198.18.3.10", budgets={"obfs4": 3},
                          executables={"tor": exe, "obfs4proxy": exe})  # fmt: skip
            await runner_like(entry, ctx, run)
            return run

    run = asyncio.run(go())
    assert [(s.stage, s.failure) for s in run.stages] == [
        ("connect", None), ("handshake", "generic_timeout_error")
    ]  # fmt: skip
    assert started.exists() and run.trace.tcp_connect[0]["status"]["success"] is True


def test_a_dead_tor_socks_port_is_the_clients_failure() -> None:
    with pytest.raises(ProbeFailure) as caught:
        asyncio.run(tor.TorTunnel(closed_port()).open_stream(Trace(), 1, "198.18.3.10", 40000,
                                                             time.monotonic() + 5))  # fmt: skip
    assert caught.value.failure == "client_failed"


# -- tor_reach -----------------------------------------------------------------------------------


def reach(*targets: dict[str, Any]) -> Entry:
    return Entry("t", "tor_reach", "127.0.0.1", 9001, params={"targets": list(targets)})


def target(port: int, protocol: str = "dir_port", **over: Any) -> dict[str, Any]:
    return {"name": f"t{port}", "address": "127.0.0.1", "port": port, "protocol": protocol,
            "fingerprint": FPR} | over  # fmt: skip


OK_CONSENSUS = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"


def reach_run(tmp_path: Path, entry: Entry, budget: float = 6, **exe: str) -> Run:
    async def go() -> Run:
        async with listener(OK_CONSENSUS) as port:
            targets = [t | {"port": port} if t["port"] == 0 else t
                       for t in entry.params["targets"]]  # fmt: skip
            real = Entry(entry.name, entry.type, entry.address, entry.port,
                         params={"targets": targets})  # fmt: skip
            run = Run(real, Trace())
            work = tmp_path / "work"
            work.mkdir(exist_ok=True)
            ctx = Context(work, "198.18.3.10", budgets={"tor_reach": budget}, executables=exe)
            await runner_like(real, ctx, run)
            return run

    return asyncio.run(go())


def test_one_target_down_is_partial_not_blocked(tmp_path: Path) -> None:
    """H6.2: one authority offline is routine: the stages pass, the judge says degraded."""
    run = reach_run(tmp_path, reach(target(0), target(closed_port())))
    assert run.failure is None and [s.stage for s in run.stages] == ["connect", "handshake"]
    assert (run.keys["dir_port_total"], run.keys["dir_port_accessible"]) == (2, 1)
    records = list(run.keys["targets"].values())
    assert all(len(r["tcp_connect"]) == 1 for r in records)  # each its own connect
    keys = {"entry": {"name": "t"}, "transport": "tor_reach",
            "stages": [s.as_dict() for s in run.stages],
            "control": {"helper": "198.18.3.10", "port": 40000, "failure": None, "t0": 0, "t": 1},
            **run.keys}  # fmt: skip
    row = judge({"test_name": "msgwatch_circumvention", "test_keys": keys})[0]
    assert (row["verdict"], row["mechanism"]) == ("degraded", "reachability.partial")


def test_every_target_down_fails_the_stage(tmp_path: Path) -> None:
    run = reach_run(tmp_path, reach(target(closed_port()), target(closed_port(), "or_port")))
    assert (run.failed_stage, run.failure) == ("connect", "connection_refused")
    assert run.keys["dir_port_accessible"] == run.keys["or_port_accessible"] == 0


def test_a_failing_obfs4proxy_is_started_once_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M4: a PT that never offers its port is started once, stopped, and its failure local."""
    monkeypatch.setattr(tor_reach, "PT_START_SECONDS", 1.0)
    starts = tmp_path / "starts"
    exe = script(tmp_path, f"echo $$ >> {starts}; echo 'garbage'; exec sleep 30", "fake-pt")
    bridge: dict[str, Any] = {"protocol": "obfs4", "params": {"cert": CERT, "iat-mode": "0"}}
    run = reach_run(tmp_path, reach(target(0, **bridge), target(0, **bridge, name="b2")),
                    obfs4proxy=exe)  # fmt: skip
    assert (run.failed_stage, run.failure) == ("handshake", "client_failed")
    pids = starts.read_text().split()
    assert len(pids) == 1
    assert not Path(f"/proc/{pids[0]}").exists() or "Z" in _state(pids[0])
    assert not any((tmp_path / "work").iterdir())


def _state(pid: str) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return ""


def test_a_missing_obfs4proxy_is_client_not_found(tmp_path: Path) -> None:
    bridge: dict[str, Any] = {"protocol": "obfs4", "params": {"cert": CERT, "iat-mode": "0"}}
    run = reach_run(tmp_path, reach(target(0, **bridge)), obfs4proxy=str(tmp_path / "none"))
    assert run.failure == "client_not_found"
    assert os.listdir(tmp_path / "work") == []

"""The proxies in the lab, for real: ss-server/ss-local, danted, microsocks and tinyproxy abroad,
the transports run in probe1. Each comes up; 64 KB through a stream to the helper's TCP echo come
back; a datagram through Shadowsocks and dante to the helper's UDP echo comes back; microsocks
refuses UDP ASSOCIATE cleanly; a proxy port rejected by the censor fails at ``connect``;
``ss-local`` is always stopped."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention import registry
from msgwatch.circumvention.model import TRANSFER_BYTES, Context, Entry, Run, StageFailed
from msgwatch.circumvention.transfer import transfer
from msgwatch.lab import plan as P
from msgwatch.lab.censor import apply, build_rule, compile_rules, remove
from msgwatch.lab.topology import Lab
from msgwatch.steps.replay import ReplayOptions, ReplayResult, replay
from msgwatch.steps.trace import Trace
from tests.lab.circumvention.conftest import in_probe

pytestmark = [pytest.mark.netns, pytest.mark.servers]
HELPER = P.HELPERS["abroad"]
NAMES = ("shadowsocks", "socks5", "socks5-micro", "http-connect")


@pytest.fixture(scope="module")
def lab(circumvention_lab: Lab) -> Lab:
    """The package's shared lab (tests/lab/circumvention/conftest.py)."""
    return circumvention_lab


@pytest.fixture(scope="module")
def entries(lab: Lab) -> dict[str, Entry]:
    table = json.loads(lab.circumvention_file.read_text())["transport"]
    return {t["name"]: Entry(**t) for t in table if t["name"] in NAMES}


def context(workdir: Path) -> Context:
    return Context(workdir=workdir, helper=HELPER)


async def exercise(entry: Entry, workdir: Path) -> dict[str, Any]:
    """Bring the entry up, time it, move 64 KB through it, and a datagram when it carries UDP."""
    loop = asyncio.get_running_loop()
    ctx = context(workdir)
    run = Run(entry, Trace())
    out: dict[str, Any] = {"failure": None}
    started = loop.time()
    try:
        async with registry.module(entry.type).bring_up(entry, ctx, run) as tunnel:
            out["up_seconds"] = round(loop.time() - started, 3)
            assert tunnel is not None
            out["carries_udp"] = tunnel.carries_udp
            detail: dict[str, Any] = {}
            await transfer(tunnel, run.trace, HELPER, ctx.helper_port, loop.time() + 15, detail)
            out["transfer"] = detail
            if tunnel.carries_udp:
                sock = await tunnel.open_udp(run.trace, 99, HELPER, 40000, loop.time() + 5)
                try:
                    sock.send(b"through the proxy")
                    out["udp"] = await sock.recv(loop.time() + 5)
                finally:
                    sock.close()
                out["replay"] = await replay_through(tunnel, run.trace)
    except StageFailed as exc:
        out["failure"] = exc.record.failure
    out["stages"] = [(s.stage, s.failure) for s in run.stages]
    out["keys"] = run.keys
    return out


async def replay_through(tunnel: Any, trace: Trace) -> ReplayResult:
    """A short call replay (50 datagrams of 160 bytes, 20 ms apart) through the tunnel's UDP,
    as the calls through a tunnel use it (``ReplayOptions.open_udp``)."""
    loop = asyncio.get_running_loop()
    packets = [(i * 0.02, b"%04d" % i + b"v" * 156) for i in range(50)]

    async def open_udp(tr: Trace, txid: int, ip: str, port: int) -> Any:
        return await tunnel.open_udp(tr, txid, ip, port, loop.time() + 5)

    options = ReplayOptions(open_udp=open_udp)
    return await replay(trace, 98, HELPER, 40000, packets, loop.time() + 8, options)


def ss_locals() -> list[str]:
    found = subprocess.run(["pgrep", "-x", "ss-local"], capture_output=True, text=True)
    return found.stdout.split()


@pytest.mark.parametrize("name", NAMES)
def test_each_proxy_comes_up_and_carries_64_kb(
    lab: Lab, entries: dict[str, Entry], name: str
) -> None:
    before = ss_locals()
    with tempfile.TemporaryDirectory() as workdir:
        got = in_probe(lab, lambda: exercise(entries[name], Path(workdir)), timeout=60)
    print(f"{name}: tunnel up in {got.get('up_seconds')} s; {got}")  # noqa: T201
    assert got["failure"] is None, got
    stages = [stage for stage, _ in got["stages"]]
    assert stages == (["connect", "tunnel"] if name == "shadowsocks" else
                      ["connect", "handshake", "tunnel"])  # fmt: skip
    assert got["transfer"]["bytes_received"] == TRANSFER_BYTES
    if name in ("shadowsocks", "socks5"):
        assert got["carries_udp"] is True
        assert got["udp"] == b"through the proxy"
        assert got["replay"].failure is None
        assert got["replay"].received_packets >= 45, got["replay"]
    else:
        assert got["carries_udp"] is False
    if name == "socks5-micro":  # microsocks has no UDP ASSOCIATE, and says so
        assert got["keys"]["udp_associate"]["failure"] == "socks_command_not_supported"
    assert ss_locals() == before  # ss-local stopped


@pytest.mark.parametrize(("name", "port"), [("socks5", 1080), ("http-connect", 8888),
                                            ("shadowsocks", 8388)])  # fmt: skip
def test_a_rejected_proxy_port_fails_at_connect(
    lab: Lab, entries: dict[str, Entry], name: str, port: int
) -> None:
    ctx = lab.censor_context("isp1")
    address = entries[name].address
    rule = build_rule({"type": "reject_tcp", "to": [f"{address}/32"], "ports": [port]})
    apply(compile_rules([rule], ctx), ctx)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            t0 = time.monotonic()
            got = in_probe(lab, lambda: exercise(entries[name], Path(workdir)), timeout=60)
            took = time.monotonic() - t0
    finally:
        remove(ctx)
    assert got["failure"] == "connection_refused", got
    assert got["stages"][-1] == ("connect", "connection_refused")
    assert took < 10

"""The lab's private Tor network with the real tor client in probe1: vanilla bootstrap, obfs4
through the bridge, reachability of authorities/relays/bridge, and the censor blocking the
authorities' and relays' addresses (vanilla fails early, obfs4 through the bridge still works).

One lab for the module (a private Tor network takes ~20-30 s to have its first full consensus).
Measured times are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.circumvention.registry import module
from msgwatch.lab import plan as P
from msgwatch.lab.censor import apply, build_rule, compile_rules, remove
from msgwatch.lab.topology import Lab
from msgwatch.steps.trace import Trace
from tests.lab.circumvention.conftest import in_probe

pytestmark = [pytest.mark.netns, pytest.mark.servers, pytest.mark.timeout(400)]
FENCE = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
HELPER = P.HELPERS["abroad"]


@pytest.fixture(scope="module")
def tor_lab(circumvention_lab: Lab) -> Lab:
    """The package's shared lab (tests/lab/circumvention/conftest.py)."""
    return circumvention_lab


def report(text: str) -> None:
    """A measured figure, shown with ``pytest -s``."""
    print(text)  # noqa: T201 (the measured times)


def entries(lab: Lab) -> dict[str, Entry]:
    table = json.loads(lab.circumvention_file.read_text())["transport"]
    return {e["name"]: Entry(**e) for e in table}


def bring(
    lab: Lab, entry: Entry, budget: float, echo: bytes | None = b"through tor"
) -> tuple[Run, Any]:
    """Bring ``entry`` up inside probe1 (budget in seconds); the run and the bytes echoed back
    through the tunnel (None when it did not come up)."""

    async def go() -> tuple[Run, Any]:
        run = Run(entry, Trace())
        with tempfile.TemporaryDirectory() as work:
            ctx = Context(Path(work), HELPER, budgets={entry.type: budget})
            try:
                async with module(entry.type).bring_up(entry, ctx, run) as tunnel:
                    if tunnel is None or echo is None:
                        return run, None
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 20
                    conn = await tunnel.open_stream(run.trace, 1, HELPER, 40000, deadline)
                    await conn.write(echo, deadline)
                    got = b""
                    while len(got) < len(echo):
                        chunk = await conn.read(deadline)
                        if not chunk:
                            break
                        got += chunk
                    conn.close()
                    return run, got
            except StageFailed:
                return run, None
            finally:
                assert _left(work) == [], "a client process outlived bring_up"
                assert not any(Path(work).iterdir()), "bring_up left files behind"

    return in_probe(lab, go, timeout=budget + 60)


def _left(work: str) -> list[str]:
    """Processes still running with ``work`` in their command line (none must be)."""
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if work.encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            continue
    return left


def test_the_network_and_entries(tor_lab: Lab) -> None:
    table = entries(tor_lab)
    assert {"tor", "tor-obfs4", "tor-reach"} <= set(table)
    for entry in table.values():
        assert module(entry.type).check_params(entry) == []


def test_vanilla_bootstraps_and_carries_a_stream(tor_lab: Lab) -> None:
    t0 = time.monotonic()
    run, echoed = bring(tor_lab, entries(tor_lab)["tor"], 60)
    report(f"\n[tor] vanilla bootstrap {run.keys.get('bootstrap_time')} s "
          f"(with the stream {time.monotonic() - t0:.1f} s)")  # fmt: skip
    assert run.failure is None, (run.stages, run.keys.get("tor_logs"))
    assert [s.stage for s in run.stages] == ["connect", "handshake", "tunnel"]
    assert echoed == b"through tor"
    assert run.keys["tor_progress"] == 100 and run.keys["transport_name"] == "vanilla"
    assert run.stages[-1].detail["progress"] == 100  # (the torrc had the fence's lines)
    assert run.keys["tor_version"] and run.keys["tor_logs"]


def test_obfs4_bootstraps_and_carries_a_stream(tor_lab: Lab) -> None:
    run, echoed = bring(tor_lab, entries(tor_lab)["tor-obfs4"], 60)
    report(f"\n[tor] obfs4 bootstrap {run.keys.get('bootstrap_time')} s")
    assert run.failure is None, (run.stages, run.keys.get("tor_logs"))
    assert echoed == b"through tor"
    assert run.keys["transport_name"] == "obfs4"
    # connect is the probe's own TCP connect to the bridge; tor's progress starts at handshake
    assert [s.stage for s in run.stages] == ["connect", "handshake", "tunnel"]
    assert "progress" not in run.stages[0].detail and run.stages[2].detail["progress"] == 100
    bridge = P.CIRCUMVENTION["tor-bridge"]
    assert [c["ip"] for c in run.trace.tcp_connect][:1] == [bridge]


def test_reachability_all_accessible(tor_lab: Lab) -> None:
    run, _ = bring(tor_lab, entries(tor_lab)["tor-reach"], 30, echo=None)
    assert run.failure is None, run.keys
    keys = run.keys
    assert keys["or_port_dirauth_total"] == keys["or_port_dirauth_accessible"] == 3
    assert keys["or_port_total"] == keys["or_port_accessible"] == 2
    assert keys["dir_port_total"] == keys["dir_port_accessible"] == 3
    assert keys["obfs4_total"] == keys["obfs4_accessible"] == 1


def test_reachability_obfs4_handshake_needs_the_right_cert(tor_lab: Lab) -> None:
    """The obfs4 target is a real obfs4 handshake: with a wrong cert the bridge never answers."""
    reach = entries(tor_lab)["tor-reach"]
    bridge = next(t for t in reach.params["targets"] if t["protocol"] == "obfs4")
    cert = bridge["params"]["cert"]
    wrong = {
        **bridge,
        "params": {
            **bridge["params"],
            "cert": cert[:-4] + ("AAAA" if cert[-4:] != "AAAA" else "BBBB"),
        },
    }
    run, _ = bring(tor_lab, dataclasses.replace(reach, params={"targets": [wrong]}), 30, echo=None)
    assert run.failed_stage == "handshake", run.stages
    record = next(iter(run.keys["targets"].values()))
    assert len(record["tcp_connect"]) == 2  # to the bridge, then to obfs4proxy's SOCKS port
    assert record["summary"]["connect"]["failure"] is None
    assert record["summary"]["handshake"]["failure"] == "generic_timeout_error"
    assert run.keys["obfs4_accessible"] == 0


@pytest.fixture
def relays_blocked(tor_lab: Lab) -> Iterator[None]:
    """The censor of ISP 1 drops everything to the authorities and relays (not the bridge)."""
    ctx = tor_lab.censor_context("isp1")
    addresses = [f"{P.CIRCUMVENTION[r]}/32" for r in
                 ("tor-auth1", "tor-auth2", "tor-auth3", "tor-relay", "tor-exit")]  # fmt: skip
    apply(compile_rules([build_rule({"type": "blackhole", "to": addresses})], ctx), ctx)
    try:
        yield
    finally:
        remove(ctx)


@pytest.mark.usefixtures("relays_blocked")
def test_relays_blocked_vanilla_fails_early_obfs4_works(tor_lab: Lab) -> None:
    table = entries(tor_lab)
    vanilla, _ = bring(tor_lab, table["tor"], 15, echo=None)
    assert vanilla.failed_stage in ("connect", "handshake"), vanilla.stages
    assert vanilla.failure == "generic_timeout_error"
    assert vanilla.keys["tor_progress"] < 15
    assert "progress_age" in vanilla.stages[-1].detail
    # Only the bridge answers: partial reachability, the stages pass (a stage fails only when
    # every target does); every blocked target timed out within the entry's 15 s budget.
    reach, _ = bring(tor_lab, table["tor-reach"], 15, echo=None)
    assert reach.failure is None, reach.stages
    assert reach.keys["or_port_dirauth_accessible"] == 0 and reach.keys["obfs4_accessible"] == 1
    assert reach.keys["dir_port_accessible"] == 0 and reach.keys["or_port_accessible"] == 0
    assert reach.keys["or_port_dirauth_total"] == 3 and reach.keys["dir_port_total"] == 3
    failures = [t["failure"] for t in reach.keys["targets"].values()]
    assert failures.count("generic_timeout_error") == 8 and failures.count(None) == 1
    obfs4, echoed = bring(tor_lab, table["tor-obfs4"], 60)
    report(f"\n[tor] obfs4 bootstrap with the relays blocked {obfs4.keys.get('bootstrap_time')} s")
    assert obfs4.failure is None, (obfs4.stages, obfs4.keys.get("tor_logs"))
    assert echoed == b"through tor"

"""OpenVPN (UDP, TCP) and WireGuard against the lab's real servers abroad, from probe1's namespace.

Each comes up, carries 64 KiB to the helper's TCP echo and a datagram to its UDP echo and back,
and leaves nothing behind in probe1 (no device, address or route); a dead server fails at the
right stage within the budget, a server that reflects the client's own packets (the helper's UDP
echo) gives a failure string, not a hang.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention import registry
from msgwatch.circumvention.model import TRANSFER_BYTES, Context, Entry, Run, StageFailed
from msgwatch.lab import plan as P
from msgwatch.lab.topology import Lab
from msgwatch.steps.trace import Trace
from tests.lab.circumvention.conftest import in_probe

pytestmark = [pytest.mark.netns, pytest.mark.servers]
HELPER = P.HELPERS["abroad"]


@pytest.fixture(scope="module")
def vpn_lab(circumvention_lab: Lab) -> Lab:
    """The package's shared lab (tests/lab/circumvention/conftest.py)."""
    return circumvention_lab


def entries(lab: Lab) -> dict[str, Entry]:
    table = json.loads(lab.circumvention_file.read_text())["transport"]
    return {e["name"]: Entry(**e) for e in table}


def probe_state(lab: Lab) -> tuple[str, str, str]:
    """probe1's links, addresses and routes (IPv4 and IPv6), as ``ip`` prints them."""
    ns = lab.ns("probe1")
    out = [
        subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout
        for args in (["-br", "link"], ["-br", "addr"], ["route", "show", "table", "all"])
    ]
    return out[0], out[1], out[2]


async def exercise(entry: Entry, workdir: Path, budgets: dict[str, float]) -> dict[str, Any]:
    """Bring the tunnel up, send 64 KiB through a stream and a datagram; what happened."""
    ctx = Context(workdir=workdir, helper=HELPER, budgets=budgets)
    run = Run(entry, Trace())
    out: dict[str, Any] = {"run": run}
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with registry.module(entry.type).bring_up(entry, ctx, run) as tunnel:
            out["up"] = loop.time() - started
            assert tunnel is not None and tunnel.carries_udp
            out["device"] = getattr(tunnel, "device", None)
            deadline = loop.time() + 20
            conn = await tunnel.open_stream(run.trace, 1, HELPER, 40000, deadline)
            payload = bytes(range(256)) * (TRANSFER_BYTES // 256)
            back = bytearray()

            async def reader() -> None:
                while len(back) < len(payload):
                    chunk = await conn.read(deadline, 16384)
                    if not chunk:
                        break
                    back.extend(chunk)

            reading = asyncio.create_task(reader())
            await conn.write(payload, deadline)
            await reading
            conn.close()
            out["stream_ok"] = bytes(back) == payload
            sock = await tunnel.open_udp(run.trace, 2, HELPER, 40000, deadline)
            sock.send(b"msgwatch-datagram-through")
            out["datagram"] = await sock.recv(loop.time() + 5)
            sock.close()
    except StageFailed as exc:
        out["failed"] = (exc.record.stage, exc.record.failure)
    out["seconds"] = loop.time() - started
    return out


@pytest.mark.parametrize("name", ["openvpn-udp", "openvpn-tcp", "wireguard"])
def test_tunnel_comes_up_and_carries(vpn_lab: Lab, name: str, tmp_path: Path) -> None:
    before = probe_state(vpn_lab)
    entry = entries(vpn_lab)[name]
    out = in_probe(vpn_lab, lambda: exercise(entry, tmp_path, {}))
    run = out["run"]
    assert "failed" not in out, (out.get("failed"), [s.as_dict() for s in run.stages])
    sys.stderr.write(f"\n{name}: tunnel up in {out['up']:.2f} s\n")  # the figure, with -s
    assert out["stream_ok"]
    assert out["datagram"] == b"msgwatch-datagram-through"
    stages = [s.stage for s in run.stages]
    want = ["connect", "handshake", "tunnel"] if name == "openvpn-tcp" else ["handshake", "tunnel"]
    assert stages == want and all(s.failure is None for s in run.stages)
    assert run.keys["tunnel"] == entry.type
    if entry.type == "openvpn":
        (record,) = run.keys["openvpn_handshake"]
        assert record["failure"] is None and record["transport"] == entry.protocol
        assert record["openvpn_options"]["cipher"] == "AES-256-GCM"
    else:
        assert run.keys["wireguard_handshake"]["latest_handshake"] > 0
    assert probe_state(vpn_lab) == before  # no device, address or route left
    assert not list(tmp_path.iterdir())  # the client's directory is gone


@pytest.mark.parametrize(
    ("name", "stage", "failure"),
    [
        ("openvpn-udp", "handshake", "connection_refused"),
        ("openvpn-tcp", "connect", "connection_refused"),
        ("wireguard", "handshake", "generic_timeout_error"),
    ],
)
def test_dead_server_fails_at_its_stage(
    vpn_lab: Lab, name: str, stage: str, failure: str, tmp_path: Path
) -> None:
    """Nothing listens on the port: OpenVPN gets a refusal (ICMP or RST), WireGuard no answer
    (it ignores ICMP) and times out at its budget."""
    before = probe_state(vpn_lab)
    good = entries(vpn_lab)[name]
    entry = Entry(good.name, good.type, good.address, good.port + 1, good.protocol, good.params)
    budget = 6.0
    started = time.monotonic()
    out = in_probe(vpn_lab, lambda: exercise(entry, tmp_path, {entry.type: budget}))
    assert out.get("failed") == (stage, failure), [s.as_dict() for s in out["run"].stages]
    assert time.monotonic() - started < budget + 5
    assert probe_state(vpn_lab) == before


@pytest.mark.parametrize("name", ["openvpn-udp", "openvpn-tcp", "wireguard"])
def test_reflecting_server_is_a_failure_not_a_hang(vpn_lab: Lab, name: str, tmp_path: Path) -> None:
    """The 'server' is the helper's echo (UDP or TCP 40000): the client gets its own packets."""
    good = entries(vpn_lab)[name]
    entry = Entry(good.name, good.type, HELPER, 40000, good.protocol, good.params)
    budget = 6.0
    started = time.monotonic()
    out = in_probe(vpn_lab, lambda: exercise(entry, tmp_path, {entry.type: budget}))
    assert "failed" in out, out
    stage, failure = out["failed"]
    assert stage == "handshake" and isinstance(failure, str) and failure, [
        s.as_dict() for s in out["run"].stages
    ]
    assert time.monotonic() - started < budget + 5
    assert not list(tmp_path.iterdir())


def probe_address(lab: Lab) -> str:
    """probe1's own IPv4 address on its link (from ``ip -j addr``)."""
    out = subprocess.run(["ip", "-n", lab.ns("probe1"), "-j", "-4", "addr", "show"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                return str(info["local"])
    raise AssertionError("probe1 has no global IPv4 address")


@pytest.mark.parametrize("which", ["own", "neighbour"])
def test_a_tunnel_address_the_probe_has_or_reaches_on_its_link_is_refused(
    vpn_lab: Lab, which: str, tmp_path: Path
) -> None:
    """Review H4: WireGuard's tunnel address equal to the probe's own, or to its gateway's (on
    its link): refused before anything is configured (client_failed, the probe's own), and
    probe1's links, addresses and routes are as they were."""
    import ipaddress

    before = probe_state(vpn_lab)
    own = ipaddress.ip_address(probe_address(vpn_lab))
    address = str(own if which == "own" else own - 1)  # the gateway: .1 beside probe1's .2
    good = entries(vpn_lab)["wireguard"]
    entry = Entry(good.name, good.type, good.address, good.port, good.protocol,
                  {**good.params, "tunnel_address": address})  # fmt: skip
    out = in_probe(vpn_lab, lambda: exercise(entry, tmp_path, {entry.type: 8.0}))
    assert out.get("failed") == ("handshake", "client_failed"), [
        s.as_dict() for s in out["run"].stages
    ]
    assert "refused" in out["run"].stages[-1].detail["error"]
    assert probe_state(vpn_lab) == before
    assert not list(tmp_path.iterdir())


def test_a_broken_local_pem_file_is_client_failed_not_tls_blocking(
    vpn_lab: Lab, tmp_path: Path
) -> None:
    """Review H6.3: the real ``openvpn`` with a ca file that is not PEM logs "OpenSSL: error
    ... no start line" at start-up: the client's own trouble, not ``ssl_failed_handshake``."""
    broken = tmp_path.parent / f"{tmp_path.name}-broken-ca.pem"
    broken.write_text("this is not a certificate\n")
    good = entries(vpn_lab)["openvpn-udp"]
    entry = Entry(good.name, good.type, good.address, good.port, good.protocol,
                  {**good.params, "ca": str(broken)})  # fmt: skip
    try:
        out = in_probe(vpn_lab, lambda: exercise(entry, tmp_path, {entry.type: 8.0}))
    finally:
        broken.unlink()
    assert out.get("failed") == ("handshake", "client_failed"), [
        s.as_dict() for s in out["run"].stages
    ]
    assert not list(tmp_path.iterdir())

"""The censor rules against circumvention: what they compile to, and what they do to real packets.

The first part needs nothing (validation, compilation). The second builds a client — censor — server
network (``tests/lab/censornet.py``) with echo servers and the circumvention servers' addresses
(:data:`msgwatch.lab.plan.CIRCUMVENTION`) held by the server namespace, applies one rule at a time
and checks that the traffic the rule targets is blocked while the closest innocent traffic passes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from msgwatch.lab.censor import Compiled, apply, build_rule, compile_rules, remove
from msgwatch.lab.censor.fet import classify
from msgwatch.lab.plan import CIRCUMVENTION
from tests.lab import censornet as N
from tests.lab.test_censor_rules import CTX, _needs_root

# --- validation and compilation (no root needed) ---------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "openvpn_fingerprint", "protocol": "sctp"}, "protocol: Input should be"),
        ({"type": "openvpn_fingerprint", "to": ["10.8.0.0/24"]}, "outside the lab's networks"),
        ({"type": "openvpn_fingerprint", "flow_timeout": 0}, "flow_timeout: Input should be"),
        ({"type": "wireguard_fingerprint", "messages": []}, "messages: Tuple should have at least"),
        ({"type": "wireguard_fingerprint", "messages": ["data"]}, "messages.0: Input should be"),
        ({"type": "fully_encrypted", "residual": 0}, "residual: Input should be greater"),
        ({"type": "fully_encrypted", "probability": 1.5}, "probability: Input should be less"),
        ({"type": "fully_encrypted", "popcount": 4}, "popcount: unknown field"),
        ({"type": "cut_after_bytes"}, "needs exactly one of `bytes` and `packets`"),
        ({"type": "cut_after_bytes", "bytes": 10, "packets": 2}, "exactly one of"),
        ({"type": "cut_after_bytes", "bytes": 0}, "bytes: Input should be greater than or equal to 1"),
        ({"type": "cut_after_bytes", "bytes": 9, "count": "sideways"}, "count: Input should be"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_with_a_clear_message(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_rule(table)


def compiled_lines(*tables: dict[str, Any]) -> list[str]:
    nft = compile_rules([build_rule(t) for t in tables], CTX).nft
    return [line.strip() for line in nft.splitlines()]


def test_openvpn_fingerprint_compiles_to_a_first_packet_match_and_a_flow_set() -> None:
    lines = compiled_lines({"type": "openvpn_fingerprint", "to": ["198.18.4.20/32"],
                            "ports": [1194]})  # fmt: skip
    assert lines.count("set r0_flows4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service "
                       ". inet_service; flags dynamic,timeout; timeout 120s; }") == 1  # fmt: skip
    udp = next(line for line in lines if "udp length" in line)
    assert "th dport { 1194 } ct state new udp length >= 22 @th,64,8 { 0x38, 0x50 } add" in udp
    tcp = next(line for line in lines if "@ih" in line)
    assert "ct original packets < 8 @ih,0,16 0x000e-0x0400 @ih,16,8 { 0x38, 0x50 }" in tcp
    drops = [line for line in lines if line.endswith('drop comment "r0 openvpn_fingerprint"')]
    assert len(drops) == 2 and "ip saddr { 198.18.4.20/32 }" in drops[1]  # the way back too
    assert not any("r0_flows6" in line for line in lines)  # IPv4 only `to`


def test_wireguard_fingerprint_compiles_to_size_and_type_matches() -> None:
    lines = compiled_lines({"type": "wireguard_fingerprint"})
    matches = [line.split(" drop")[0] for line in lines if "udp length" in line]
    assert matches == [
        "meta l4proto udp udp length 156 @th,64,32 0x01000000",
        "meta l4proto udp udp length 100 @th,64,32 0x02000000",
        "meta l4proto udp udp length 72 @th,64,32 0x03000000",
    ]


def test_fully_encrypted_declares_its_sets_and_a_watcher() -> None:
    rule = build_rule({"type": "fully_encrypted", "ports": [8388], "residual": 3, "seed": 5})
    compiled = compile_rules([rule], CTX)
    assert (
        "set r0_fet4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; timeout 3s; }"
        in compiled.nft
    )
    assert "meta l4proto tcp ip saddr . ip daddr . tcp dport @r0_fet4 drop" in compiled.nft
    (process,) = compiled.processes
    assert process.name == "r0-fet" and process.argv[1:3] == ["-m", "msgwatch.lab.censor.fet"]
    assert process.argv[process.argv.index("--iface") + 1] == CTX.lan_if
    assert '"sets":{"4":"r0_fet4","6":"r0_fet6"}' in process.argv[-1]
    assert '"probability":1.0,"seed":5' in process.argv[-1]


def test_cut_after_bytes_compiles_to_conntrack_counters() -> None:
    lines = compiled_lines(
        {"type": "cut_after_bytes", "bytes": 50000, "to": ["198.18.4.16/32"]},
        {"type": "cut_after_bytes", "packets": 20, "count": "up", "protocol": "udp"},
    )
    assert "ip daddr { 198.18.4.16/32 } meta l4proto tcp ct bytes > 50000 drop" in " ".join(lines)
    assert "ip saddr { 198.18.4.16/32 } meta l4proto tcp ct bytes > 50000 drop" in " ".join(lines)
    assert sum("ct original packets > 20 drop" in line for line in lines) == 1


# --- on the wire ---------------------------------------------------------------------------------

ECHO = 40000
OPENVPN, WIREGUARD, SOCKS, HTTP_PROXY, SHADOWSOCKS = 1194, 51820, 1080, 8888, 8388
CIRC = ("tor-auth1", "tor-relay", "tor-bridge", "socks5", "http-proxy", "shadowsocks")


def echo(conn: socket.socket) -> None:
    """Send back whatever arrives until the peer closes (or 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (data := conn.recv(65536)):
        conn.sendall(data)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[N.CensorNet]:
    _needs_root()
    os.environ["MSGWATCH_ALLOWED_NETWORKS"] = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
    with N.censornet(tmp_path_factory.mktemp("censornet")) as (network, servers, _):
        # The circumvention servers' addresses, held by the server namespace and routed to it.
        for role in CIRC:
            N.sh("ip", "-n", network.server_ns, "addr", "add", f"{CIRCUMVENTION[role]}/32",
                 "dev", "lo")  # fmt: skip
        N.sh("ip", "-n", network.client_ns, "route", "add", "198.18.4.0/24", "via", N.CENSOR_LAN)
        network.censor("ip", "route", "add", "198.18.4.0/24", "via", N.SERVER)
        for address in ("0.0.0.0", "::"):
            for port in (ECHO, ECHO + 1, OPENVPN, SOCKS, HTTP_PROXY, SHADOWSOCKS):
                servers.tcp(address, port, echo)
        for address in (N.SERVER, CIRCUMVENTION["shadowsocks"]):
            for port in (OPENVPN, WIREGUARD, SHADOWSOCKS):
                servers.udp(address, port, lambda data: data)
        yield network


@pytest.fixture
def censor(net: N.CensorNet) -> Iterator[Any]:
    def use(*tables: dict[str, Any]) -> Compiled:
        compiled = compile_rules([build_rule(t) for t in tables], net.ctx)
        apply(compiled, net.ctx)
        return compiled

    try:
        yield use
    finally:
        remove(net.ctx)


def echoed(address: str, port: int, payload: bytes, timeout: float = 1.0) -> str:
    """``echoed`` when the whole payload comes back on a fresh connection, else how it failed."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    return f"closed after {len(got)} bytes"
                got += chunk
            return "echoed" if got == payload else "wrong answer"
    except Exception as exc:
        return N.outcome(exc)


def transfer(address: str, port: int, total: int, chunk: int = 2048, timeout: float = 1.0) -> int:
    """Bytes echoed back before ``total`` is reached or the flow stalls for ``timeout`` s."""
    got = 0
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=2) as sock:
        sock.settimeout(timeout)
        while got < total:
            sock.sendall(os.urandom(chunk))
            want = got + chunk
            while got < want:
                data = sock.recv(65536)
                if not data:
                    return got
                got += len(data)
    return got


def echo_twice(
    address: str, port: int, first: bytes, second: bytes, between: Callable[[], object]
) -> str:
    """Two round trips on one connection, ``between()`` run in between: how the second went."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.sendall(first)
            got = b""
            while len(got) < len(first):
                got += sock.recv(65536) or b"?" * len(first)
            between()
            sock.sendall(second)
            return "echoed" if sock.recv(65536) else "closed"
    except Exception as exc:
        return N.outcome(exc)


def udp_flow(address: str, port: int, payloads: list[bytes], timeout: float = 0.5) -> list[bool]:
    """Each payload sent on one socket (one flow), in order: whether its echo came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        out = []
        for payload in payloads:
            sock.sendto(payload, (address, port))
            try:
                out.append(sock.recv(65535) == payload)
            except TimeoutError:
                out.append(False)
        return out


def hard_reset(opcode: int, key_id: int = 0) -> bytes:
    """An OpenVPN hard reset without tls-auth: opcode/key id, session id, no acks, packet id 0."""
    return bytes([opcode << 3 | key_id]) + os.urandom(8) + b"\x00" + b"\x00\x00\x00\x00"


def tcp_framed(packet: bytes) -> bytes:
    return len(packet).to_bytes(2, "big") + packet


@pytest.mark.netns
def test_openvpn_fingerprint(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "openvpn_fingerprint", "ports": [OPENVPN]})
    started = time.monotonic()
    # UDP: the hard reset (V2, V3) is dropped, and so is the rest of its flow.
    assert net.client(udp_flow, N.SERVER, OPENVPN, [hard_reset(7), b"innocent"]) == [False, False]
    assert net.client(udp_flow, N.SERVER, OPENVPN, [hard_reset(10)]) == [False]
    # Other first bytes pass: data (opcode 9), a hard reset of the server (8), key id 1; and a
    # hard reset that is not the flow's first packet.
    for first in (hard_reset(9), hard_reset(8), hard_reset(7, key_id=1), hard_reset(7)[:13]):
        assert net.client(udp_flow, N.SERVER, OPENVPN, [first]) == [True], first.hex()
    assert net.client(udp_flow, N.SERVER, OPENVPN, [b"innocent" * 2, hard_reset(7)]) == [True, True]
    assert net.client(udp_flow, N.SERVER, WIREGUARD, [hard_reset(7)]) == [True]  # not 1194
    # TCP: after the 2-byte length; the connection then hangs.
    assert net.client(echoed, N.SERVER, OPENVPN, tcp_framed(hard_reset(7))) == "timeout"
    assert net.client(echoed, N.SERVER6, OPENVPN, tcp_framed(hard_reset(10))) == "timeout"
    assert net.client(echoed, N.SERVER, OPENVPN, tcp_framed(hard_reset(9))) == "echoed"
    assert net.client(echoed, N.SERVER, OPENVPN, hard_reset(7) + b"\x00\x00") == "echoed"
    assert net.client(echoed, N.SERVER, ECHO, tcp_framed(hard_reset(7))) == "echoed"
    print(f"openvpn_fingerprint checks: {time.monotonic() - started:.1f} s")  # noqa: T201


def wg(kind: int, size: int, zeros: bytes = b"\x00\x00\x00") -> bytes:
    return bytes([kind]) + zeros + os.urandom(size - 4)


@pytest.mark.netns
def test_wireguard_fingerprint(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "wireguard_fingerprint"})
    started = time.monotonic()
    blocked = [wg(1, 148), wg(2, 92), wg(3, 64)]
    for payload in blocked:
        assert net.client(N.udp_echo, N.SERVER, WIREGUARD, [payload]) == 0, len(payload)
    assert net.client(N.udp_echo, N.SERVER, SHADOWSOCKS, [wg(1, 148)]) == 0  # any port
    innocent = [wg(1, 147), wg(1, 149), wg(2, 93), wg(3, 63), wg(1, 148, b"\x00\x00\x01"),
                wg(4, 148), wg(5, 148)]  # fmt: skip
    assert net.client(N.udp_echo, N.SERVER, WIREGUARD, innocent) == len(innocent)
    print(f"wireguard_fingerprint checks: {time.monotonic() - started:.1f} s")  # noqa: T201


def random_payload(size: int = 300) -> bytes:
    while True:
        payload = os.urandom(size)
        if classify(payload).exemption is None:
            return payload


def in_set(net: N.CensorNet, name: str, address: str) -> bool:
    listed = net.censor("nft", "list", "set", "inet", "msgwatch_censor", name)
    return address in listed


def wait_in_set(net: N.CensorNet, name: str, address: str, limit: float = 3.0) -> bool:
    """Whether ``address`` shows up in the censor's set ``name`` within ``limit`` s."""
    deadline = time.monotonic() + limit
    while not in_set(net, name, address):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.netns
def test_fully_encrypted_blocks_the_3_tuple_for_the_residual(net: N.CensorNet, censor: Any) -> None:
    residual = 3
    censor({"type": "fully_encrypted", "residual": residual})
    started = time.monotonic()
    # The first packet passes (the echo comes back) and triggers the block.
    assert net.client(echoed, N.SERVER, ECHO, random_payload()) == "echoed"
    sent = time.monotonic()
    while not in_set(net, "r0_fet4", N.SERVER) and time.monotonic() - sent < 3:
        time.sleep(0.02)
    blocked_after = time.monotonic() - sent
    assert in_set(net, "r0_fet4", N.SERVER), (net.ctx.run_dir / "censor-r0-fet.log").read_text()
    # Every later packet to that server and port is dropped, on that connection too (once the
    # watcher has added it); another port of the server stays open.
    wait_b = functools.partial(wait_in_set, net, "r0_fet4", N.SERVER_B)
    assert net.client(echo_twice, N.SERVER_B, ECHO, random_payload(), b"more", wait_b) == "timeout"
    assert net.client(N.tcp_exchange, N.SERVER, ECHO, None, 0.5) == "timeout"
    assert net.client(echoed, N.SERVER, ECHO + 1, b"hello") == "echoed"
    assert net.client(N.tls_hello, N.SERVER, "other.example") == "ok"  # Ex5, port 443
    # TLS-prefixed and printable first payloads pass, and leave their server open.
    tls_like = b"\x16\x03\x01" + random_payload()
    pause = functools.partial(time.sleep, 0.5)  # ten times what the watcher needs to block
    assert net.client(echo_twice, N.SERVER_C, ECHO + 1, tls_like, b"again", pause) == "echoed"
    printable = b"HELLO " + random_payload()
    assert net.client(echo_twice, N.SERVER_C, ECHO, printable, b"again", pause) == "echoed"
    assert net.client(echoed, N.SERVER_C, ECHO, b"a new connection") == "echoed"
    # IPv6 has its own set.
    assert net.client(echoed, N.SERVER6, ECHO, random_payload()) == "echoed"
    assert wait_in_set(net, "r0_fet6", N.SERVER6)
    assert net.client(N.tcp_exchange, N.SERVER6, ECHO, None, 0.5) == "timeout"
    # After the residual the 3-tuple is open again.
    time.sleep(max(0.0, sent + blocked_after + residual + 0.3 - time.monotonic()))
    assert net.client(echoed, N.SERVER, ECHO, b"GET / after the residual") == "echoed"
    log = (net.ctx.run_dir / "censor-r0-fet.log").read_text()
    assert f"blocked {N.CLIENT} -> {N.SERVER}:{ECHO}" in log and "ex5" in log and "ex2" in log
    print(f"fully_encrypted: set entry {blocked_after * 1000:.0f} ms after the first payload; "  # noqa: T201
          f"checks {time.monotonic() - started:.1f} s")  # fmt: skip


@pytest.mark.netns
def test_fully_encrypted_port_narrowing_and_garbage(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "fully_encrypted", "residual": 3, "ports": [SHADOWSOCKS],
            "to": [f"{CIRCUMVENTION['shadowsocks']}/32"]})  # fmt: skip
    ss = CIRCUMVENTION["shadowsocks"]
    assert net.client(echoed, N.SERVER, SHADOWSOCKS, random_payload()) == "echoed"  # not `to`
    assert net.client(echoed, ss, ECHO, random_payload()) == "echoed"  # not `ports`
    # Garbage on the LAN (short frames, bad TCP) does not stop the watcher.
    net.client(N.udp_echo, N.SERVER, OPENVPN, [os.urandom(n) for n in (0, 1, 7, 40, 1400)], 0.05)
    assert net.client(echoed, ss, SHADOWSOCKS, random_payload()) == "echoed"
    assert wait_in_set(net, "r0_fet4", ss)
    assert net.client(N.tcp_exchange, ss, SHADOWSOCKS, None, 0.5) == "timeout"
    assert net.client(echoed, N.SERVER, SHADOWSOCKS, b"x") == "echoed"
    assert net.client(echoed, ss, ECHO, b"x") == "echoed"


@pytest.mark.netns
def test_cut_after_bytes(net: N.CensorNet, censor: Any) -> None:
    limit = 20_000
    censor({"type": "cut_after_bytes", "bytes": limit, "to": [f"{CIRCUMVENTION['tor-bridge']}/32"]})
    bridge = CIRCUMVENTION["tor-bridge"]
    started = time.monotonic()
    assert net.client(echoed, bridge, ECHO, b"x" * 2000) == "echoed"  # a short exchange passes
    moved = net.client(transfer, bridge, ECHO, 200_000)
    assert 2 * 2048 <= moved < limit // 2, moved  # both directions count; headers too
    assert net.client(transfer, N.SERVER, ECHO, 200_000) >= 200_000  # another address: no cut
    assert net.client(echoed, bridge, ECHO, b"y" * 2000) == "echoed"  # a new flow starts afresh
    took = time.monotonic() - started
    print(f"cut_after_bytes: {moved} bytes echoed before the stall; checks {took:.1f} s")  # noqa: T201


@pytest.mark.netns
def test_tor_and_proxy_blocking_with_existing_rules(net: N.CensorNet, censor: Any) -> None:
    tor = [f"{CIRCUMVENTION[r]}/32" for r in ("tor-auth1", "tor-relay")]
    censor(
        {"type": "blackhole", "to": tor, "label": "tor relays and authorities"},
        {"type": "reject_tcp", "to": [f"{CIRCUMVENTION['socks5']}/32"], "ports": [SOCKS]},
        {"type": "drop_udp", "to": [f"{CIRCUMVENTION['shadowsocks']}/32"], "ports": [SHADOWSOCKS]},
    )
    assert net.client(N.tcp_exchange, CIRCUMVENTION["tor-auth1"], ECHO, None, 0.5) == "timeout"
    assert net.client(N.tcp_exchange, CIRCUMVENTION["tor-relay"], ECHO, None, 0.5) == "timeout"
    assert net.client(echoed, CIRCUMVENTION["tor-bridge"], ECHO, b"bridge") == "echoed"
    assert net.client(N.tcp_exchange, CIRCUMVENTION["socks5"], SOCKS) == "refused"
    assert net.client(echoed, CIRCUMVENTION["socks5"], HTTP_PROXY, b"x") == "echoed"
    assert net.client(echoed, CIRCUMVENTION["http-proxy"], HTTP_PROXY, b"x") == "echoed"
    ss = CIRCUMVENTION["shadowsocks"]
    assert net.client(N.udp_echo, ss, SHADOWSOCKS, [b"udp relay"]) == 0
    assert net.client(N.udp_echo, ss, OPENVPN, [b"udp relay"]) == 1
    assert net.client(echoed, ss, SHADOWSOCKS, b"tcp") == "echoed"

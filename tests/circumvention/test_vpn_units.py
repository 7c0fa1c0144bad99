"""OpenVPN and WireGuard transports without root: params, the log's stages, hostile output, the
client process's bounds and stop (the lab tests run the real tunnels)."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.circumvention.transports import openvpn, vpnkit, wireguard
from msgwatch.failures import ProbeFailure
from msgwatch.lab.circumvention.vpn import wg_keypair
from msgwatch.steps.trace import Trace

UDP_OK = """\
OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [MH/PKTINFO] [AEAD] [DCO]
TCP/UDP: Preserving recently used remote address: [AF_INET]198.18.4.20:1194
UDPv4 link remote: [AF_INET]198.18.4.20:1194
TLS: Initial packet from [AF_INET]198.18.4.20:1194, sid=8c3ef4a2 0b9d8f11
VERIFY OK: depth=1, O=msgwatch lab, CN=msgwatch lab CA
VERIFY KU OK
VERIFY EKU OK
VERIFY OK: depth=0, O=msgwatch lab, CN=openvpn.lab.invalid
Control Channel: TLSv1.3, cipher TLSv1.3 TLS_AES_256_GCM_SHA384, peer certificate: 256 bits ECsecp256r1, signature: ecdsa-with-SHA256
[openvpn.lab.invalid] Peer Connection Initiated with [AF_INET]198.18.4.20:1194
TLS: move_session: dest=TM_ACTIVE src=TM_INITIAL reinit_src=1
PUSH: Received control message: 'PUSH_REPLY,route-gateway 198.18.5.1,topology subnet,ping 10,ping-restart 60,ifconfig 198.18.5.2 255.255.255.0,peer-id 0,cipher AES-256-GCM'
OPTIONS IMPORT: --ifconfig/up options modified
TUN/TAP device mwv0a1b2c opened
Initialization Sequence Completed
"""


def feed(text: str) -> openvpn.OpenVPNLog:
    log = openvpn.OpenVPNLog()
    for line in text.splitlines():
        log.feed(line)
    return log


def test_log_of_a_udp_tunnel() -> None:
    log = feed(UDP_OK)
    assert log.initial_packet and log.handshake_done and log.tunnel_up
    assert log.address == "198.18.5.2" and log.failure is None
    assert not log.connecting and not log.connected


def test_log_of_a_tcp_connect() -> None:
    log = feed(
        "Attempting to establish TCP connection with [AF_INET]198.18.4.20:443\n"
        "TCP connection established with [AF_INET]198.18.4.20:443\n"
    )
    assert log.connecting and log.connected and not log.handshake_done


@pytest.mark.parametrize(
    ("line", "failure"),
    [
        ("TCP: connect to [AF_INET]198.18.4.20:444 failed: Connection refused", "connection_refused"),
        ("read UDPv4 [ECONNREFUSED]: Connection refused (fd=3,code=111)", "connection_refused"),
        ("Connection reset, restarting [0]", "connection_reset"),
        ("TCP: connect to [AF_INET]198.18.4.20:443 failed: No route to host", "host_unreachable"),
        ("TLS Error: TLS key negotiation failed to occur within 60 seconds (check your network connectivity)", "generic_timeout_error"),
        ("TLS Error: TLS handshake failed", "ssl_failed_handshake"),
        ("OpenSSL: error:0A000126:SSL routines::unexpected eof while reading", "ssl_failed_handshake"),
        ("VERIFY ERROR: depth=0, error=unable to get local issuer certificate: CN=x", "ssl_unknown_authority"),
        ("VERIFY EKU ERROR", "ssl_invalid_certificate"),
        ("AUTH: Received control message: AUTH_FAILED", "openvpn_auth_failed"),
        ("Options error: Unrecognized option or missing or extra parameter(s)", "client_failed"),
    ],
)  # fmt: skip
def test_log_failures(line: str, failure: str) -> None:
    log = feed(STARTED + line)
    assert log.failure == failure and log.evidence == [line[:300]]


STARTED = "TLS: Initial packet from [AF_INET]198.18.4.20:1194, sid=8c3ef4a2 0b9d8f11\n"
"""The first packet from the server: what comes after it may be the network's."""


@pytest.mark.parametrize(
    "lines",
    [
        # a ca/cert/key file that is not PEM: OpenVPN says so at start-up, before any packet
        ["OpenSSL: error:1E08010C:DECODER routines::unsupported",
         "OpenSSL: error:0480006C:PEM routines::no start line",
         "Cannot load inline certificate file", "Exiting due to fatal error"],
        ["VERIFY ERROR: depth=0, error=unable to get local issuer certificate: CN=x"],
        ["Cannot load CA certificate file /tmp/ca.pem"],
        ["Error: private key password verification failed"],
    ],
)  # fmt: skip
def test_a_tls_error_before_the_server_answered_is_the_clients(lines: list[str]) -> None:
    """Review H6.3: a broken local PEM file is not TLS blocking (``client_failed``, local)."""
    assert feed("\n".join(lines)).failure == "client_failed"


def test_a_tls_error_after_the_tcp_connection_is_the_networks() -> None:
    log = feed("TCP connection established with [AF_INET]198.18.4.20:443\n"
               "OpenSSL: error:0A000126:SSL routines::unexpected eof while reading")  # fmt: skip
    assert log.failure == "ssl_failed_handshake"
    log = feed("UDPv4 link remote: [AF_INET]198.18.4.20:1194\n"
               "read UDPv4 [ECONNREFUSED]: Connection refused (fd=3,code=111)")  # fmt: skip
    assert log.failure == "connection_refused"  # an ICMP refusal before any packet stays
    log = feed("TLS Error: cannot locate HMAC in incoming packet from [AF_INET]198.18.4.20:1194")
    assert log.failure == "ssl_failed_handshake"  # garbage from the network stays its own


def test_no_progress_after_a_failure() -> None:
    """A failure ends the log's progress: a later "Peer Connection Initiated" does not count, so
    the failure is put on the stage it happened in."""
    log = feed(
        "TCP connection established with [AF_INET]198.18.3.10:40000\n"
        "TLS Error: TLS handshake failed\n"
        "[x] Peer Connection Initiated with [AF_INET]198.18.3.10:40000\n"
    )
    assert log.connected and not log.handshake_done and log.failure == "ssl_failed_handshake"


@pytest.mark.parametrize(
    ("push", "address"),
    [
        ("PUSH_REPLY,ifconfig 10.8.0.6 255.255.255.0,peer-id 1'", "10.8.0.6"),
        ("PUSH_REPLY,route-gateway 10.8.0.1,ifconfig 127.0.0.2 255.0.0.0'", None),
        ("PUSH_REPLY,ifconfig 0.0.0.0 0.0.0.0'", None),
        ("PUSH_REPLY,ifconfig 224.0.0.1 255.255.255.0'", None),
        ("PUSH_REPLY,ifconfig 169.254.1.1 255.255.0.0'", None),
        ("PUSH_REPLY,ifconfig 10.8.0.300 255.255.255.0'", None),
        ("PUSH_REPLY,ifconfig-ipv6 2001:db8::2/64 2001:db8::1'", None),
        ("PUSH_REPLY," + "A" * 100_000, None),
    ],
)
def test_pushed_address_is_checked(push: str, address: str | None) -> None:
    log = feed(f"PUSH: Received control message: '{push}")
    assert log.address == address


def test_hostile_log_lines_are_bounded() -> None:
    log = feed(STARTED + "\x00\xff" * 50_000 + "\n" + "VERIFY ERROR " + "x" * 10_000)
    assert log.failure == "ssl_invalid_certificate"
    assert all(len(e) <= 300 for e in log.evidence)


def pem_files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN X-----\n-----END X-----\n")
        out[name] = str(path)
    return out


def ovpn(params: Mapping[str, object], protocol: str = "udp", port: int = 1194) -> Entry:
    return Entry("openvpn-udp", "openvpn", "198.18.4.20", port, protocol, params)


def test_openvpn_params(tmp_path: Path) -> None:
    good = pem_files(tmp_path)
    assert openvpn.check_params(ovpn({**good, "cipher": "AES-256-GCM"})) == []
    problems = openvpn.check_params(
        ovpn({"ca": "relative.pem", "cert": "--config /etc/x", "key": str(tmp_path / "missing"),
              "cipher": "BF-CBC", "auth": "MD5", "extra": 1}, protocol="icmp", port=0)
    )  # fmt: skip
    text = "\n".join(problems)
    for part in ("protocol", "port", "unknown params: extra", "ca: the path must be absolute",
                 "cert: a file path", "key:", "cipher", "auth"):  # fmt: skip
        assert part in text, (part, problems)
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (openvpn.MAX_FILE + 1))
    assert any("larger" in p for p in openvpn.check_params(ovpn({**good, "ca": str(big)})))


def test_openvpn_argv_changes_nothing_but_its_device(tmp_path: Path) -> None:
    argv = openvpn.client_argv("openvpn", ovpn(pem_files(tmp_path)), "198.18.4.20", "mwv000000", 9)
    assert "--route-nopull" in argv and "--ifconfig-noexec" in argv
    assert argv[argv.index("--script-security") + 1] == "1"
    filters = [argv[i + 2] for i, a in enumerate(argv) if a == "--pull-filter"]
    assert {"redirect-gateway", "dhcp-option", "route"} <= set(filters)
    assert not any(a in ("--up", "--route-up", "--redirect-gateway", "--route") for a in argv)


def wg_entry(tmp_path: Path, **params: object) -> Entry:
    private, _ = wg_keypair()
    _, public = wg_keypair()
    key = tmp_path / "wg.key"
    key.write_text(private + "\n")
    base: dict[str, object] = {"private_key": str(key), "public_key": public,
                               "tunnel_address": "198.18.6.2", "allowed_ips": ["198.18.0.0/15"]}  # fmt: skip
    return Entry("wireguard", "wireguard", "198.18.4.21", 51820, "udp", {**base, **params})


def test_wireguard_params(tmp_path: Path) -> None:
    assert wireguard.check_params(wg_entry(tmp_path)) == []
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"\xff" * 1_000_000)
    bad = wg_entry(tmp_path, private_key=str(garbage), public_key="x" * 10_000,
                   tunnel_address="not-an-ip", allowed_ips=["0/0"] * 100, more=1)  # fmt: skip
    text = "\n".join(wireguard.check_params(bad))
    for part in ("private_key", "public_key", "tunnel_address", "allowed_ips", "unknown params"):
        assert part in text
    assert wireguard.check_params(wg_entry(tmp_path, allowed_ips="198.18.0.0/15"))
    assert wireguard.check_params(wg_entry(tmp_path, private_key="wg.key"))
    assert wireguard.tunnel_address("198.18.6.2/24") == "198.18.6.2"


def test_latest_handshake_parsing() -> None:
    key = base64.b64encode(bytes(32)).decode()
    assert wireguard.latest_handshake(f"{key}\t0\n") == 0
    assert wireguard.latest_handshake(f"{key}\t1765000000\n{key}\t1765000005\n") == 1765000005
    assert wireguard.latest_handshake("garbage\n" * 100_000 + "x\t" + "9" * 100) == 0


def test_device_names_fit_linux() -> None:
    names = {vpnkit.device_name() for _ in range(50)}
    assert len(names) == 50 and all(len(n) <= 15 and n.startswith("mwv") for n in names)


def context(tmp_path: Path, **executables: str) -> Context:
    return Context(workdir=tmp_path / "work", helper="198.18.3.10", executables=executables)


def bring(module: object, entry: Entry, ctx: Context) -> Run:
    async def main() -> Run:
        run = Run(entry, Trace())
        with pytest.raises(StageFailed):
            async with module.bring_up(entry, ctx, run):  # type: ignore[attr-defined]
                pytest.fail("came up")
        return run

    return asyncio.run(main())


def test_bad_params_fail_before_anything_runs(tmp_path: Path) -> None:
    run = bring(openvpn, ovpn({}, protocol="tcp", port=443), context(tmp_path))
    assert (run.failed_stage, run.failure) == ("connect", "bad_params")
    assert run.stages[0].detail["problems"]
    run = bring(wireguard, wg_entry(tmp_path, public_key="nope"), context(tmp_path))
    assert (run.failed_stage, run.failure) == ("handshake", "bad_params")


def test_missing_client_is_client_not_found(tmp_path: Path) -> None:
    """Nothing starts (never a client or a device in the namespace the tests run in)."""
    ctx = context(tmp_path, openvpn="/nonexistent/openvpn", wg="/nonexistent/wg")
    run = bring(openvpn, ovpn(pem_files(tmp_path)), ctx)
    assert (run.failed_stage, run.failure) == ("handshake", "client_not_found")
    assert run.keys["openvpn_handshake"][0]["failure"] == "client_not_found"
    run = bring(wireguard, wg_entry(tmp_path), ctx)
    assert (run.failed_stage, run.failure) == ("handshake", "client_not_found")
    assert not list((tmp_path / "work").iterdir())  # temporary directories removed


CHATTY = "import sys\nsys.stdout.write('x' * 10_000_000 + '\\n')\nfor i in range(100_000): print(i)\nimport time\ntime.sleep(60)\n"


def test_client_output_is_bounded_and_the_client_stopped(tmp_path: Path) -> None:
    async def main() -> vpnkit.Client:
        client = vpnkit.Client("chatty")
        await client.start([sys.executable, "-c", CHATTY], tmp_path, ["127.0.0.1"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not client.lines or client.lines[-1] != "99999":
            await client.wait_change(deadline)
        await vpnkit.stop_client(client)
        return client

    client = asyncio.run(main())
    assert client.exited and len(client.lines) == vpnkit.KEEP_LINES
    assert all(len(line) <= vpnkit.MAX_LINE for line in client.lines)


def test_client_is_stopped_on_cancellation(tmp_path: Path) -> None:
    async def main() -> vpnkit.Client:
        client = vpnkit.Client("sleeper")

        async def use() -> None:
            try:
                await client.start([sys.executable, "-c", "import time; time.sleep(60)"],
                                   tmp_path, [])  # fmt: skip
                await client.wait_change(asyncio.get_running_loop().time() + 60)
            finally:
                await vpnkit.stop_client(client)

        async def started() -> None:  # cancelled once it runs: a busy machine starts it late
            while client.process is None:
                await asyncio.sleep(0.01)

        task = asyncio.create_task(use())
        await asyncio.wait_for(started(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return client

    assert asyncio.run(main()).exited


def test_a_client_outside_the_fence_never_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8")

    async def main() -> None:
        client = vpnkit.Client("x")
        with pytest.raises(Exception) as caught:
            await client.start([sys.executable, "-c", "pass"], tmp_path, ["198.18.4.20"])
        assert getattr(caught.value, "failure", None) == "destination_not_allowed"
        assert client.process is None

    asyncio.run(main())


# -- review of b19d735: the fixes of F3 ------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("10.8.0.6", True), ("172.16.3.4", True), ("192.168.7.2", True), ("100.64.0.9", True),
        ("198.18.5.2", True), ("fd00::2", True), ("2001:db8:6::2", True),
        ("203.0.113.5", False), ("192.0.2.1", False), ("198.51.100.7", False),  # public
        ("127.0.0.2", False), ("169.254.1.1", False), ("224.0.0.1", False), ("::1", False),
        ("2001:4860::1", False), ("not-an-ip", False),
    ],
)  # fmt: skip
def test_only_a_private_tunnel_address_is_accepted(address: str, ok: bool) -> None:
    """Review H4: a /32 on the device puts the address in the local table: any public one
    (a DNS server's, a messenger's) would have its traffic taken over."""
    assert (vpnkit.address_problem(address) is None) == ok


def test_the_endpoint_or_helper_address_is_never_a_tunnel_address() -> None:
    assert vpnkit.address_problem("198.18.4.20", avoid=["198.18.4.20"])
    assert vpnkit.address_problem("198.18.3.10", avoid=["vpn.example", "198.18.3.10"])
    assert vpnkit.address_problem("198.18.5.2", avoid=["198.18.4.20", "name"]) is None


def test_ipv6_tunnel_address_is_a_slash_128() -> None:
    assert vpnkit.host_prefix("fd00::2") == "fd00::2/128"
    assert vpnkit.host_prefix("198.18.6.2") == "198.18.6.2/32"


@pytest.mark.parametrize(
    ("output", "conflict"),
    [
        ("198.18.5.2 via 198.18.1.1 dev eth0 src 198.18.1.2 uid 0 \\    cache", False),
        ("fd00::2 from :: via fe80::1 dev eth0 proto ra src fd00::9 metric 100 pref medium", False),
        ("local 198.18.1.2 dev lo table local src 198.18.1.2 uid 0 \\    cache <local>", True),
        ("192.168.1.1 dev wlan0 src 192.168.1.23 uid 1000 \\    cache", True),  # the gateway
        ("unreachable 10.9.9.9 table main", False),
        ("", False),
    ],
)  # fmt: skip
def test_an_address_the_namespace_has_or_reaches_on_a_link_is_refused(
    output: str, conflict: bool
) -> None:
    assert (vpnkit.route_conflict(output) is not None) == conflict


FAKE_IP = """\
import json, sys
from pathlib import Path
here = Path(__file__).parent
with open(here / "calls", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["-o", "route", "get"]:
    print((here / "route").read_text())
"""


def fake_ip(tmp_path: Path, route: str) -> tuple[str, Path]:
    """An ``ip`` that logs its arguments and answers ``route get`` with ``route``."""
    script = tmp_path / "ip"
    script.write_text(f"#!{sys.executable}\n{FAKE_IP}")
    script.chmod(0o755)
    (tmp_path / "route").write_text(route)
    return str(script), tmp_path / "calls"


def calls(log: Path) -> list[list[str]]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def set_address(ip_exe: str, address: str, avoid: tuple[str, ...] = ()) -> str | None:
    async def main() -> str | None:
        deadline = asyncio.get_running_loop().time() + 10
        try:
            await vpnkit.set_address(ip_exe, "mwvtest00", address, 1420, deadline, avoid)
        except ProbeFailure as exc:
            return exc.failure
        return None

    return asyncio.run(main())


def test_set_address_adds_a_host_prefix_and_nothing_else(tmp_path: Path) -> None:
    ip_exe, log = fake_ip(tmp_path, "fd00::2 from :: via fe80::1 dev eth0 metric 100")
    assert set_address(ip_exe, "fd00::2") is None
    assert calls(log) == [
        ["-o", "route", "get", "fd00::2"],
        ["addr", "add", "fd00::2/128", "dev", "mwvtest00"],
        ["link", "set", "dev", "mwvtest00", "mtu", "1420", "up"],
    ]


@pytest.mark.parametrize(
    ("address", "route", "avoid"),
    [
        ("203.0.113.9", "203.0.113.9 via 198.18.1.1 dev eth0", ()),  # a public address
        ("198.18.3.10", "198.18.3.10 via 198.18.1.1 dev eth0", ("198.18.3.10",)),  # the helper
        ("198.18.1.2", "local 198.18.1.2 dev lo table local src 198.18.1.2", ()),  # ours already
        ("192.168.1.1", "192.168.1.1 dev wlan0 src 192.168.1.23", ()),  # the LAN's gateway
    ],
)
def test_set_address_refuses_and_changes_nothing(
    tmp_path: Path, address: str, route: str, avoid: tuple[str, ...]
) -> None:
    ip_exe, log = fake_ip(tmp_path, route)
    assert set_address(ip_exe, address, avoid) == "client_failed"
    assert not any(call[:2] == ["addr", "add"] for call in calls(log))


def test_pushed_public_address_is_not_used() -> None:
    log = feed(STARTED + "PUSH: Received control message: 'PUSH_REPLY,ifconfig 203.0.113.7 "
               "255.255.255.0'\nInitialization Sequence Completed")  # fmt: skip
    assert log.tunnel_up and log.address is None  # → openvpn_no_address, nothing configured


def test_wireguard_tunnel_address_must_be_private(tmp_path: Path) -> None:
    for bad in ("203.0.113.2", "198.18.4.21"):  # public; the endpoint's own
        problems = wireguard.check_params(wg_entry(tmp_path, tunnel_address=bad))
        assert any(p.startswith("tunnel_address:") for p in problems), problems
    assert wireguard.check_params(wg_entry(tmp_path, tunnel_address="fd00::2/64")) == []


def test_wireguard_allowed_ips_must_cover_the_helper(tmp_path: Path) -> None:
    """Else the echo would never go through the tunnel: a params problem, nothing started."""
    run = bring(wireguard, wg_entry(tmp_path, allowed_ips=["10.0.0.0/8"]), context(tmp_path))
    assert (run.failed_stage, run.failure) == ("handshake", "bad_params")
    assert "covers the test helper" in run.stages[0].detail["problems"][0]


def executable_script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("how", ["exits", "silent"])
def test_wireguard_local_setup_trouble_is_client_failed_not_a_handshake_timeout(
    tmp_path: Path, how: str
) -> None:
    """Review H6.4: wireguard-go that exits, or never makes its device: ``client_failed``
    before the handshake stage starts, never the network's ``generic_timeout_error``."""
    body = "import sys; sys.exit(3)" if how == "exits" else "import time; time.sleep(60)"
    go = executable_script(tmp_path / "wireguard-go", body)
    ctx = Context(workdir=tmp_path / "work", helper="198.18.3.10", budgets={"wireguard": 3.0},
                  executables={"wireguard-go": go, "wg": sys.executable})  # fmt: skip
    run = bring(wireguard, wg_entry(tmp_path), ctx)
    assert [(s.stage, s.failure) for s in run.stages] == [("handshake", "client_failed")]
    assert run.stages[0].detail["error"]
    assert run.keys["wireguard_handshake"]["failure"] == "client_failed"
    assert not list((tmp_path / "work").iterdir())


def test_stop_never_raises_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M2: the second wait after SIGKILL may time out; stop() must not raise it (it
    would leave bring_up as a network timeout)."""
    monkeypatch.setattr(vpnkit, "GRACE", 0.0)

    async def main() -> None:
        client = vpnkit.Client("stubborn")
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        await client.start([sys.executable, "-c", code], tmp_path, [])
        await asyncio.sleep(0.3)
        await client.stop()  # raised TimeoutError before the fix
        assert client.process is not None
        await asyncio.wait_for(client.process.wait(), 5)

    asyncio.run(main())


def test_release_runs_every_step_on_a_second_cancellation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review M2: stop_client re-raising CancelledError must not skip the device's removal, the
    socket file's and the directory's."""
    removed: list[str] = []

    async def cancelled(client: vpnkit.Client) -> None:
        raise asyncio.CancelledError

    async def cleanup(ip_exe: str, device: str) -> None:
        removed.append(device)

    monkeypatch.setattr(vpnkit, "stop_client", cancelled)
    monkeypatch.setattr(vpnkit, "cleanup_device", cleanup)
    directory = tmp_path / "client"
    directory.mkdir()
    (directory / "password").write_text("secret")
    sock = tmp_path / "dev.sock"
    sock.write_text("")

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await vpnkit.release(vpnkit.Client("x"), directory, "ip", "mwvtest00", [sock])

    asyncio.run(main())
    assert removed == ["mwvtest00"] and not directory.exists() and not sock.exists()


def test_a_slow_helper_command_is_client_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review H6.4: ``ip``/``wg`` hanging is the probe's trouble, not a network timeout."""
    monkeypatch.setattr(vpnkit, "COMMAND_SECONDS", 0.3)

    async def main() -> str:
        try:
            await vpnkit.command([sys.executable, "-c", "import time; time.sleep(30)"],
                                 asyncio.get_running_loop().time() + 30)  # fmt: skip
        except ProbeFailure as exc:
            return exc.failure
        return "returned"

    assert asyncio.run(main()) == "client_failed"


MIDDLE = """\
import asyncio, sys
sys.path[:0] = {path!r}
from pathlib import Path
from msgwatch.circumvention.transports import vpnkit

async def main():
    client = vpnkit.Client("sleeper")
    await client.start([sys.executable, "-c", "import time; time.sleep(60)"], Path({cwd!r}), [])
    print(client.process.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_client_dies_with_a_killed_probe(tmp_path: Path) -> None:
    """Review H5: the probe killed outright (no finally runs): its client program, in a
    session of its own, gets SIGKILL from the kernel (PR_SET_PDEATHSIG) and does not linger."""
    import os
    import subprocess
    import time

    code = MIDDLE.format(path=sys.path, cwd=str(tmp_path))
    probe = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None
        child = int(probe.stdout.readline())
        os.kill(child, 0)  # running
        probe.kill()
        probe.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # reaped by init once dead; a zombie still answers kill(0): look at its state
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    break
            time.sleep(0.05)
        else:
            os.kill(child, 9)
            pytest.fail("the client outlived the probe")
    finally:
        probe.kill()
        probe.wait(5)
        if probe.stdout is not None:
            probe.stdout.close()


def test_resolve_stage_uses_the_resolver_and_keeps_the_addresses(tmp_path: Path) -> None:
    """Review M5: the resolve stage asks ``ctx.resolver`` (not the system's), records the query,
    and keeps the endpoint's addresses on the run (a private entry's are scrubbed later)."""
    from tests.unit.servers import dns_answer, udp_server

    async def main() -> tuple[str, Run]:
        async with udp_server(dns_answer("198.18.4.20", "198.18.4.21")) as server:
            ctx = Context(workdir=tmp_path, helper="198.18.3.10",
                          resolver=f"{server.ip}:{server.port}")  # fmt: skip
            entry = Entry("vpn", "openvpn", "vpn.lab.invalid", 1194, "udp", {}, private=True)
            run = Run(entry, Trace())
            deadline = asyncio.get_running_loop().time() + 5
            return await vpnkit.resolve(entry, ctx, run, deadline), run

    ip, run = asyncio.run(main())
    assert ip in ("198.18.4.20", "198.18.4.21")
    assert [(s.stage, s.failure) for s in run.stages] == [("resolve", None)]
    assert run.endpoint_addresses == {"198.18.4.20", "198.18.4.21"}
    assert any(q["hostname"] == "vpn.lab.invalid" for q in run.trace.queries)


def test_a_bad_resolver_is_bad_params(tmp_path: Path) -> None:
    async def main() -> Run:
        ctx = Context(workdir=tmp_path, helper="198.18.3.10", resolver="resolver.example:53")
        run = Run(Entry("vpn", "openvpn", "vpn.lab.invalid", 1194, "udp"), Trace())
        with pytest.raises(StageFailed):
            await vpnkit.resolve(ctx=ctx, entry=run.entry, run=run, deadline=1e12)
        return run

    run = asyncio.run(main())
    assert (run.failed_stage, run.failure) == ("resolve", "bad_params")
    assert vpnkit.resolver_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    assert vpnkit.resolver_server("198.18.3.53") == ("198.18.3.53", 53)
    assert vpnkit.resolver_server(None) is None


class _Exited:
    returncode = 255


def test_an_exited_clients_last_words_are_read_before_its_failure_is_told() -> None:
    """CI flake of 927d633: the exit of ss-local was seen before its last lines were read, so
    its failure said "ss-local exited (255): " with no reason. The failure now waits (briefly)
    for the reader to take what the program wrote."""

    async def main() -> tuple[str, str]:
        client = vpnkit.Client("ss-local")
        client.process = _Exited()  # type: ignore[assignment]

        async def reader_behind() -> None:  # the pipe's last chunk, read a little later
            await asyncio.sleep(0.2)
            client.lines.append("ERROR: bind: Address already in use")

        client._reader = asyncio.create_task(reader_behind())
        at_once = " | ".join(client.tail(3))
        failure = await client.exit_failure()
        return at_once, f"{failure.failure}: {failure}"

    at_once, told = asyncio.run(main())
    assert at_once == ""  # what the old code said
    assert told == "client_failed: ss-local exited (255): ERROR: bind: Address already in use"


def test_openvpns_own_reason_decides_over_its_exit() -> None:
    """When openvpn's last lines (read after its exit was seen) name a failure, that failure is
    reported, not client_failed."""

    async def main() -> str:
        log = openvpn.OpenVPNLog()
        client = vpnkit.Client("openvpn", log.feed)
        client.process = _Exited()  # type: ignore[assignment]

        async def reader_behind() -> None:
            await asyncio.sleep(0.1)
            line = "AUTH: Received control message: AUTH_FAILED"
            client.lines.append(line)
            log.feed(line)

        client._reader = asyncio.create_task(reader_behind())
        try:
            await openvpn.until(client, log, lambda: False, asyncio.get_running_loop().time() + 5)
        except ProbeFailure as exc:
            return exc.failure
        return "no failure"

    assert asyncio.run(main()) == "openvpn_auth_failed"

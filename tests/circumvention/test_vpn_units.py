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
    log = feed(line)
    assert log.failure == failure and log.evidence == [line[:300]]


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
    log = feed("\x00\xff" * 50_000 + "\n" + "VERIFY ERROR " + "x" * 10_000)
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

        task = asyncio.create_task(use())
        await asyncio.sleep(0.3)
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

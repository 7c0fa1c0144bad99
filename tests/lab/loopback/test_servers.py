"""The mini-Internet's real servers answer as the ground truth says (one lab for the module)."""

import contextlib
import socket
import ssl
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest
from aioice import stun

from msgwatch.lab.loopback import MiniInternet, unavailable
from msgwatch.lab.loopback import topology as T
from msgwatch.lab.loopback.servers import foreign_binds

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(unavailable() is not None, reason=f"mini-Internet: {unavailable()}"),
]


@pytest.fixture(scope="module")
def net() -> Iterator[MiniInternet]:
    with MiniInternet() as lab:
        yield lab


def _ask(name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), T.RESOLVER_IP, timeout=2)


def test_dnsmasq_answers_forges_and_says_nxdomain(net: MiniInternet) -> None:
    assert net.resolver == f"{T.RESOLVER_IP}:53"
    assert _ask("chat.signal.org").answer[0][0].to_text() == "127.0.30.10"
    assert _ask("web.telegram.org").answer[0][0].to_text() == T.BLOCKPAGE_IP
    assert _ask("scontent.xx.fbcdn.net").rcode() == dns.rcode.NXDOMAIN
    aaaa = dns.query.udp(dns.message.make_query("chat.signal.org", "AAAA"), T.RESOLVER_IP, 2)
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer  # NODATA, not REFUSED


def _get(address: str, port: int, host: str, context: ssl.SSLContext | None) -> bytes:
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((address, port), timeout=2))
        if context is not None:  # the TLS socket is closed too, not only the one it wraps
            sock = stack.enter_context(context.wrap_socket(sock, server_hostname=host))
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_nginx_serves_tls_verified_by_the_lab_ca(net: MiniInternet) -> None:
    context = ssl.create_default_context(cafile=str(net.ca_bundle))
    assert _get("127.0.30.10", 443, "chat.signal.org", context).startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _get("127.0.40.20", 443, "www.messenger.com", context)
    with pytest.raises(ssl.SSLCertVerificationError):  # the forged answer's block-page server
        _get(T.BLOCKPAGE_IP, 443, "web.telegram.org", context)


def test_nginx_block_pages(net: MiniInternet) -> None:
    for address in ("127.0.50.10", T.BLOCKPAGE_IP):
        page = _get(address, 80, "zoom.us", None)
        assert page.startswith(b"HTTP/1.1 403")
        assert b"Access to this resource has been blocked by order of" in page


def _stun(ip: str, request: stun.Message) -> stun.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(bytes(request), (ip, T.TURN_PORT))
        return stun.parse_message(sock.recv(2048))


def test_coturn_answers_binding_and_challenges_allocate(net: MiniInternet) -> None:
    for ip in T.TURN_IPS:
        binding = _stun(ip, stun.Message(stun.Method.BINDING, stun.Class.REQUEST))
        assert binding.message_class == stun.Class.RESPONSE
        allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST,
                                attributes={"REQUESTED-TRANSPORT": 17 << 24})  # fmt: skip
        challenge = _stun(ip, allocate)
        assert challenge.message_class == stun.Class.ERROR
        assert challenge.attributes["ERROR-CODE"][0] == 401
        assert "REALM" in challenge.attributes and "NONCE" in challenge.attributes


def test_silent_sockets_complete_handshakes_but_never_answer(net: MiniInternet) -> None:
    with socket.create_connection(T.SILENT_TCP[0], timeout=1) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"\x16\x03\x01\x00\x05hello")  # something like a ClientHello
        with pytest.raises(TimeoutError):
            sock.recv(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)), T.SILENT_UDP[0])
        with pytest.raises(TimeoutError):
            sock.recv(2048)


def test_every_server_binds_loopback_only(net: MiniInternet) -> None:
    for server in net.servers:
        assert server.proc is not None and server.proc.poll() is None
        assert foreign_binds(server.proc.pid) == []

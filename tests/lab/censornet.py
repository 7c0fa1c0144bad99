"""A three-namespace network for testing censor rules on the wire: client — censor — server.

::

    mwc<id>-client  198.18.200.2/24  2001:db8:200::2/64
         │ (veth)
    mwc<id>-censor  LAN 198.18.200.1/24 (+ .80: block page server), 2001:db8:200::1/64
         │          WAN 198.18.201.1/24, 2001:db8:200:1::1/64      forwarding on, the rules under test
    mwc<id>-server  198.18.201.2/24, 198.18.202.2/24, 198.18.203.2/24, 2001:db8:200:1::2/64

Only 198.18.200.0/22 and 2001:db8:200::/48; no namespace has a default route and nothing is linked
to the host's namespace. The servers (TLS, HTTP, UDP echo, DNS, bulk TCP) run as threads of the test
process whose sockets were created inside the server namespace: a network namespace is a property of
a thread (``setns(2)``), and a socket stays in the namespace it was created in. Client code runs the
same way (:meth:`CensorNet.client`), so a probe costs no interpreter start.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.message
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from msgwatch.lab.censor import CensorContext

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)

CLIENT, CENSOR_LAN, CENSOR_WAN, SERVER = (
    "198.18.200.2",
    "198.18.200.1",
    "198.18.201.1",
    "198.18.201.2",
)
BLOCKPAGE = "198.18.200.80"
SERVER_B, SERVER_C = "198.18.202.2", "198.18.203.2"
"""The server's addresses in two more prefixes (198.18.202.0/24, 198.18.203.0/24): "other services"."""
CLIENT6, CENSOR_LAN6, CENSOR_WAN6, SERVER6 = (
    "2001:db8:200::2", "2001:db8:200::1", "2001:db8:200:1::1", "2001:db8:200:1::2",
)  # fmt: skip
REAL_A, REAL_AAAA = "198.18.202.10", "2001:db8:200:1::10"
"""What the server's DNS answers for every name."""
BLOCKPAGE_BODY = b"censor block page server"


def enter(ns: str) -> None:
    """Move the calling thread into network namespace ``ns``."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
    finally:
        os.close(fd)


def in_ns(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a fresh thread inside ``ns``; its result (or its exception)."""

    def run() -> T:
        enter(ns)
        return fn(*args)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "censornet.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


@dataclass
class Servers:
    """Server threads with sockets in one namespace; :meth:`stop` ends them all."""

    ns: str
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def _bound(self, family: int, kind: int, address: str, port: int) -> socket.socket:
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
        sock.settimeout(0.2)
        self.sockets.append(sock)
        return sock

    def _loop(self, sock: socket.socket, handle: Callable[[socket.socket], None]) -> None:
        def run() -> None:
            while not self.stopping.is_set():
                with contextlib.suppress(OSError):
                    handle(sock)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def tcp(self, address: str, port: int, serve: Callable[[socket.socket], None]) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = in_ns(self.ns, self._bound, family, socket.SOCK_STREAM, address, port)

        def accept(sock: socket.socket) -> None:
            conn, _ = sock.accept()
            conn.settimeout(10)

            def one() -> None:
                with contextlib.suppress(OSError), conn:
                    serve(conn)

            threading.Thread(target=one, daemon=True).start()

        self._loop(listener, accept)

    def udp(self, address: str, port: int, answer: Callable[[bytes], bytes | None]) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = in_ns(self.ns, self._bound, family, socket.SOCK_DGRAM, address, port)

        def reply(s: socket.socket) -> None:
            data, peer = s.recvfrom(65535)
            out = answer(data)
            if out is not None:
                s.sendto(out, peer)

        self._loop(sock, reply)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2)
        for sock in self.sockets:
            sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _host(request: bytes) -> str:
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            return value.strip().decode(errors="replace")
    return ""


def http_server(conn: socket.socket) -> None:
    body = f"real page for {_host(_read_request(conn))}".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (len(body), body))  # fmt: skip


def blockpage_server(conn: socket.socket) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (len(BLOCKPAGE_BODY), BLOCKPAGE_BODY))  # fmt: skip


def tls_server(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    """After the handshake: ``HELLO`` is answered ``hello``; ``BULK`` gets bytes until the peer goes."""

    def serve(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            line = tls.recv(64)
            if line.startswith(b"BULK"):
                bulk(tls)
            else:
                tls.sendall(b"hello\n")

    return serve


def bulk(conn: socket.socket) -> None:
    chunk = b"x" * 8192
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn.sendall(chunk)


def dns_server(data: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(data)
    except Exception:
        return None
    response = dns.message.make_response(query)
    question = query.question[0]
    rdtype = {1: "A", 28: "AAAA"}.get(question.rdtype)
    if rdtype:
        address = REAL_A if rdtype == "A" else REAL_AAAA
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", rdtype, address))
    wire: bytes = response.to_wire()
    return wire


@dataclass
class CensorNet:
    """The three namespaces, their servers, and the context of the censor in the middle."""

    id: str
    run_dir: Path

    @property
    def client_ns(self) -> str:
        return f"mwc{self.id}-client"

    @property
    def censor_ns(self) -> str:
        return f"mwc{self.id}-censor"

    @property
    def server_ns(self) -> str:
        return f"mwc{self.id}-server"

    @property
    def namespaces(self) -> list[str]:
        return [self.client_ns, self.censor_ns, self.server_ns]

    @property
    def ctx(self) -> CensorContext:
        return CensorContext(
            netns=self.censor_ns, lan_if=f"mwc{self.id}cl", wan_if=f"mwc{self.id}cw",
            lan_prefix="198.18.200.0/24", lan_prefix6="2001:db8:200::/64", resolver_ip=CENSOR_LAN,
            blockpage_ip=BLOCKPAGE, run_dir=self.run_dir / "censor",
        )  # fmt: skip

    def client(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the client namespace."""
        return in_ns(self.client_ns, fn, *args)

    def censor(self, *argv: str) -> str:
        """A command in the censor's namespace; its stdout."""
        return sh("ip", "netns", "exec", self.censor_ns, *argv)

    def build(self) -> None:
        i = self.id
        c, r, s = self.namespaces
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for key in ("all", "default"):  # no duplicate address detection: usable at once
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
        # veth pairs are created inside the namespaces: nothing ever sits in the host's.
        sh("ip", "-n", c, "link", "add", f"mwc{i}c", "type", "veth", "peer", "name", f"mwc{i}cl",
           "netns", r)  # fmt: skip
        sh("ip", "-n", s, "link", "add", f"mwc{i}s", "type", "veth", "peer", "name", f"mwc{i}cw",
           "netns", r)  # fmt: skip
        addresses = [
            (c, f"mwc{i}c", [f"{CLIENT}/24", f"{CLIENT6}/64"]),
            (r, f"mwc{i}cl", [f"{CENSOR_LAN}/24", f"{BLOCKPAGE}/24", f"{CENSOR_LAN6}/64"]),
            (r, f"mwc{i}cw", [f"{CENSOR_WAN}/24", f"{CENSOR_WAN6}/64"]),
            (s, f"mwc{i}s", [f"{SERVER}/24", f"{SERVER_B}/24", f"{SERVER_C}/24", f"{SERVER6}/64"]),
        ]
        for ns, dev, nets in addresses:
            for net in nets:
                sh(
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    net,
                    "dev",
                    dev,
                    *(["nodad"] if ":" in net else []),
                )
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for net in ("198.18.201.0/24", "198.18.202.0/24", "198.18.203.0/24"):
            sh("ip", "-n", c, "route", "add", net, "via", CENSOR_LAN)
        sh("ip", "-n", c, "-6", "route", "add", "2001:db8:200:1::/64", "via", CENSOR_LAN6)
        sh("ip", "-n", s, "route", "add", "198.18.200.0/24", "via", CENSOR_WAN)
        sh("ip", "-n", s, "-6", "route", "add", "2001:db8:200::/64", "via", CENSOR_WAN6)
        for net in ("198.18.202.0/24", "198.18.203.0/24"):
            sh("ip", "-n", r, "route", "add", net, "via", SERVER)
        self.censor("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.censor("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    def destroy(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@contextlib.contextmanager
def censornet(tmp: Path) -> Iterator[tuple[CensorNet, Servers, Servers]]:
    """Build the network and start its servers; remove everything afterwards, failure or not."""
    net = CensorNet(secrets.token_hex(3), tmp)
    servers, censor_servers = Servers(net.server_ns), Servers(net.censor_ns)
    try:
        net.build()
        cert, key = self_signed(tmp)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        for address in ("0.0.0.0", "::"):
            servers.tcp(address, 443, tls_server(context))
            servers.tcp(address, 80, http_server)
            servers.tcp(address, 9000, bulk)
        for address in (SERVER, SERVER_B, SERVER_C, SERVER6):  # each answers from its address
            for port in (3478, 3479, 5000, 5001):
                servers.udp(address, port, lambda data: data)
        servers.udp(SERVER, 53, dns_server)
        servers.udp(SERVER6, 53, dns_server)
        censor_servers.tcp(BLOCKPAGE, 80, blockpage_server)
        yield net, servers, censor_servers
    finally:
        servers.stop()
        censor_servers.stop()
        net.destroy()


# --- client side: each returns an outcome, never raises for what the censor does -------------


def outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return f"ssl: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def tls_hello(address: str, sni: str, port: int = 443, timeout: float = 1.5) -> str:
    """``ok`` when the handshake completes and the server says hello; else how it failed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=sni) as tls,
        ):
            tls.sendall(b"HELLO\n")
            return "ok" if tls.recv(64) == b"hello\n" else "wrong answer"
    except Exception as exc:
        return outcome(exc)


def http_get(address: str, host: str, port: int = 80, timeout: float = 1.5) -> str:
    """The response (status line ... body) as text, or how it failed."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data.decode(errors="replace")
    except Exception as exc:
        return outcome(exc)


def tcp_exchange(address: str, port: int, data: bytes | None = None, timeout: float = 1.0) -> str:
    """``connected`` (and, with ``data``, ``sent``: the peer did not reset it) or the failure."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            if data is None:
                return "connected"
            sock.sendall(data)
            sock.recv(1)
            return "sent"
    except Exception as exc:
        return outcome(exc)


def udp_echo(address: str, port: int, payloads: list[bytes], timeout: float = 0.5,
             new_socket: bool = True) -> int:  # fmt: skip
    """How many of ``payloads`` came back (each from a socket of its own: one flow each)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    echoed = 0
    shared = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for payload in payloads:
            sock = socket.socket(family, socket.SOCK_DGRAM) if new_socket else shared
            try:
                sock.settimeout(timeout)
                sock.sendto(payload, (address, port))
                with contextlib.suppress(OSError):
                    echoed += sock.recv(65535) == payload
            finally:
                if new_socket:
                    sock.close()
    finally:
        shared.close()
    return echoed


def udp_echo_many(address: str, port: int, count: int, size: int = 64) -> int:
    """Send ``count`` datagrams from ``count`` sockets (flows) at once; count the echoes."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.sendto(os.urandom(size), (address, port))
        deadline, echoed = time.monotonic() + 0.7, set[int]()
        while time.monotonic() < deadline and len(echoed) < count:
            for index, sock in enumerate(socks):
                with contextlib.suppress(BlockingIOError):
                    sock.recv(65535)
                    echoed.add(index)
            time.sleep(0.01)
        return len(echoed)
    finally:
        for sock in socks:
            sock.close()


def dns_answers(
    resolver: str, name: str, rdtype: str = "A", listen: float = 0.6
) -> list[tuple[str, list[str]]]:
    """Every answer to one UDP query that arrives within ``listen`` s: (rcode, addresses), in order."""
    query = dns.message.make_query(name, rdtype)
    family = socket.AF_INET6 if ":" in resolver else socket.AF_INET
    answers: list[tuple[str, list[str]]] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(query.to_wire(), (resolver, 53))
        deadline = time.monotonic() + listen
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            message = dns.message.from_wire(data)
            if message.id != query.id:
                continue
            addresses = [r.to_text() for rrset in message.answer for r in rrset]
            answers.append((dns.rcode.to_text(message.rcode()), addresses))
    return answers


def download_rate(address: str, port: int, seconds: float, skip: float = 0.5,
                  sni: str | None = None) -> float:  # fmt: skip
    """Bytes per second received between ``skip`` and ``seconds`` into a bulk download."""
    sock: socket.socket = socket.create_connection((address, port), timeout=5)
    if sni is not None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=sni)
        sock.sendall(b"BULK\n")
    sock.settimeout(0.2)
    start = time.monotonic()
    counted = 0
    with sock:
        while (now := time.monotonic()) - start < seconds:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            if now - start >= skip:
                counted += len(chunk)
    return counted / (seconds - skip)

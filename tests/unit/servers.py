"""In-process servers on loopback that misbehave on purpose.

Every server binds 127.0.0.1 on an ephemeral port inside the test's own event loop and is closed when
its ``async with`` block ends; nothing here can reach beyond loopback. Like dnspython's
``tests/nanonameserver.py``, a server is a listener plus a *handler* that decides, per request,
whether to answer, answer twice, answer wrongly, send garbage, stay silent or reset.

- UDP (:func:`udp_server`): the handler gets the datagram and a ``reply`` function; delayed or
  repeated replies are scheduled with the loop's ``call_later``. DNS answers come from dnspython
  (:func:`dns_reply`), STUN answers from aioice's codec (:func:`stun_reply`).
- TCP (:func:`tcp_server`, optionally with TLS): the handler is an ordinary asyncio stream handler;
  :func:`reset` closes with SO_LINGER 0, so the peer sees an RST rather than a FIN.
- Certificates (:func:`make_pki`): a test CA, leaves for ``chat.example.test`` and
  ``other.example.test``, and a leaf for ``chat.example.test`` from a CA nobody trusts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aioice import stun
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"

# -- UDP ----------------------------------------------------------------------------------------

Reply = Callable[[bytes], None]
UDPHandler = Callable[[bytes, Reply], None]


@dataclass
class UDPServer:
    ip: str
    port: int
    received: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: UDPHandler, received: list[bytes]) -> None:
        self.handler = handler
        self.received = received
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (Python 3.11's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        transport = self.transport
        assert transport is not None

        def reply(out: bytes) -> None:
            if not transport.is_closing():
                transport.sendto(out, addr)

        self.handler(data, reply)


@asynccontextmanager
async def udp_server(handler: UDPHandler) -> AsyncIterator[UDPServer]:
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UDPProtocol(handler, received), local_addr=(LOOPBACK, 0)
    )
    ip, port = transport.get_extra_info("sockname")[:2]
    try:
        yield UDPServer(ip, port, received)
    finally:
        transport.close()


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (the kernel answers with ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def closed_tcp_port() -> int:
    """A loopback TCP port nobody listens on (a connect is refused with an RST)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def later(delay: float, reply: Reply, data: bytes) -> None:
    asyncio.get_running_loop().call_later(delay, reply, data)


# -- DNS ----------------------------------------------------------------------------------------


def dns_reply(
    query_wire: bytes, *addresses: str, rcode: int = dns.rcode.NOERROR, id_delta: int = 0
) -> bytes:
    """A response to ``query_wire`` with the addresses of the query's type (A or AAAA), TTL 300."""
    query = dns.message.from_wire(query_wire)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    question = query.question[0]
    family = [a for a in addresses if (":" in a) == (question.rdtype == dns.rdatatype.AAAA)]
    if family:
        response.answer.append(
            dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, question.rdtype, family)
        )
    response.id = (query.id + id_delta) & 0xFFFF
    return response.to_wire()


def dns_answer(*addresses: str, rcode: int = dns.rcode.NOERROR) -> UDPHandler:
    def handle(data: bytes, reply: Reply) -> None:
        reply(dns_reply(data, *addresses, rcode=rcode))

    return handle


def dns_raw(payload: bytes) -> UDPHandler:
    def handle(data: bytes, reply: Reply) -> None:
        reply(payload)

    return handle


def dns_forged_then_real(forged: str, real: str, gap: float = 0.05) -> UDPHandler:
    """An on-path injector's answer at once, the resolver's own ``gap`` seconds later."""

    def handle(data: bytes, reply: Reply) -> None:
        reply(dns_reply(data, forged))
        later(gap, reply, dns_reply(data, real))

    return handle


def dns_wrong_id_then_right(address: str, gap: float = 0.02) -> UDPHandler:
    def handle(data: bytes, reply: Reply) -> None:
        reply(dns_reply(data, address, id_delta=1))
        later(gap, reply, dns_reply(data, address))

    return handle


def silent(data: bytes, reply: Reply) -> None:
    """A UDP handler that never answers."""


# -- STUN ---------------------------------------------------------------------------------------


def stun_reply(
    request_wire: bytes,
    *,
    error: tuple[int, str] | None = None,
    mapped: tuple[str, int] | None = None,
    realm: str | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A success (with XOR-MAPPED-ADDRESS ``mapped``) or an error response to ``request_wire``."""
    request = stun.parse_message(request_wire)
    klass = stun.Class.ERROR if error else stun.Class.RESPONSE
    response = stun.Message(request.message_method, klass, request.transaction_id)
    if mapped is not None:
        response.attributes["XOR-MAPPED-ADDRESS"] = mapped
    if error is not None:
        response.attributes["ERROR-CODE"] = error
    if realm is not None:
        response.attributes["REALM"] = realm
    if nonce is not None:
        response.attributes["NONCE"] = nonce
    response.attributes["SOFTWARE"] = "servers.py"
    response.add_fingerprint()
    return bytes(response)


def stun_answer(
    *,
    error: tuple[int, str] | None = None,
    mapped: tuple[str, int] | None = None,
    realm: str | None = None,
    nonce: bytes | None = None,
) -> UDPHandler:
    def handle(data: bytes, reply: Reply) -> None:
        reply(stun_reply(data, error=error, mapped=mapped, realm=realm, nonce=nonce))

    return handle


def garbage_once(payload: bytes) -> UDPHandler:
    """Garbage in reply to the first datagram, silence afterwards."""
    sent: list[bool] = []

    def handle(data: bytes, reply: Reply) -> None:
        if not sent:
            sent.append(True)
            reply(payload)

    return handle


# -- TCP ----------------------------------------------------------------------------------------

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(
    handler: StreamHandler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``handler`` on 127.0.0.1; on exit every connection is aborted and its task ended."""
    handlers: set[asyncio.Task[None]] = set()
    connections: set[asyncio.Task[object]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handler runs in a task of its own: ending it at exit must not cancel the task that
        # asyncio's stream server watches (that would log a spurious error).
        outer = asyncio.current_task()
        assert outer is not None
        connections.add(outer)
        task = asyncio.ensure_future(handler(reader, writer))
        handlers.add(task)
        writers.append(writer)
        try:
            await task
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(serve, LOOPBACK, 0, ssl=tls)
    ip, port = server.sockets[0].getsockname()[:2]
    try:
        yield ip, port
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        for writer in writers:
            writer.transport.abort()
        await asyncio.gather(*handlers, *connections, return_exceptions=True)
        await server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def drain_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def hold_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, then silence: read and discard until the client closes."""
    await drain_until_eof(reader)


async def reset_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def close_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def reset_after_first_read(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read what the client sends first (a ClientHello, a request), then reset."""
    await reader.read(65536)
    reset(writer)


async def close_after_first_read(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.read(65536)
    writer.close()


def send_after_first_read(payload: bytes, then_close: bool = False) -> StreamHandler:
    """Read what the client sends first, answer ``payload``, then close or hold the line open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(payload)
        await writer.drain()
        if not then_close:
            await drain_until_eof(reader)

    return handle


# A fatal TLS alert record: content type 21, TLS 1.2 record version, length 2, level 2 (fatal),
# description 40 (handshake_failure), as a middlebox or a server without a usable cipher sends it.
TLS_ALERT_HANDSHAKE_FAILURE = bytes([21, 3, 3, 0, 2, 2, 40])


def dns_tcp_answer(*addresses: str) -> StreamHandler:
    """A DNS-over-TCP server (RFC 7766 framing) answering one query."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        wire = dns_reply(await reader.readexactly(size), *addresses)
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        await drain_until_eof(reader)

    return handle


# -- HTTP ---------------------------------------------------------------------------------------


def http_response(raw: bytes, requests: list[bytes] | None = None) -> StreamHandler:
    """Read one request's head (kept in ``requests``), answer ``raw`` verbatim, close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if requests is not None:
            requests.append(head)
        writer.write(raw)
        await writer.drain()

    return handle


def http_endless(chunk_size: int = 4096, sent: list[int] | None = None) -> StreamHandler:
    """A 200 whose body (no length: it ends at close) never ends; flow control bounds the sender."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        chunk = b"x" * chunk_size
        while True:
            writer.write(chunk)
            await writer.drain()
            if sent is not None:
                sent[0] += len(chunk)

    return handle


def http_drip(body: bytes, interval: float) -> StreamHandler:
    """A 200 announcing ``len(body)`` bytes, then the body one byte every ``interval`` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        for i in range(len(body)):
            await asyncio.sleep(interval)
            writer.write(body[i : i + 1])
            await writer.drain()

    return handle


# -- Certificates --------------------------------------------------------------------------------

_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


@dataclass(frozen=True)
class Leaf:
    cert: Path
    """PEM: the leaf, then its issuer (the chain the server sends)."""
    key: Path
    der: bytes
    issuer_der: bytes


@dataclass(frozen=True)
class PKI:
    ca: Path
    """The trusted test CA (PEM), for ``ca_bundle``."""
    chat: Leaf
    """``chat.example.test`` from the test CA."""
    other: Leaf
    """``other.example.test`` from the test CA."""
    rogue: Leaf
    """``chat.example.test`` from a CA nobody trusts."""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "msgwatch tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    name: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    directory: Path,
    stem: str,
) -> Leaf:
    issuer_key, issuer_cert = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(_PEM) + issuer_cert.public_bytes(_PEM))
    key_path.write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Leaf(cert_path, key_path, cert.public_bytes(_DER), issuer_cert.public_bytes(_DER))


def make_pki(directory: Path) -> PKI:
    trusted, rogue = _ca("msgwatch test CA"), _ca("rogue CA")
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(trusted[1].public_bytes(_PEM))
    return PKI(
        ca=ca_path,
        chat=_leaf("chat.example.test", trusted, directory, "chat"),
        other=_leaf("other.example.test", trusted, directory, "other"),
        rogue=_leaf("chat.example.test", rogue, directory, "rogue"),
    )


def server_tls(leaf: Leaf, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A server context for ``leaf``; no session tickets, so the client reads nothing after the
    handshake that the test did not ask for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    context.set_alpn_protocols(list(alpn))
    context.num_tickets = 0
    return context


def deadline(seconds: float) -> float:
    """An absolute deadline ``seconds`` from now in the running loop's clock."""
    return asyncio.get_running_loop().time() + seconds


def operations(events: list[dict[str, object]]) -> list[object]:
    return [e["operation"] for e in events]


HANDSHAKE_EVENTS = [
    "connect",
    "tls_handshake_start",
    "write",
    "read",
    "write",
    "tls_handshake_done",
]
"""A completed TLS 1.3 handshake's events: the ClientHello, the server's whole flight in one
read, the client's Finished."""


# One catalogue service on loopback: text over TCP, voice (STUN) over UDP (CLI and spool tests).
TEST_SERVICE = """
schema = 1
id = "{id}"
name = "Test service"
[[sources]]
id = "doc"
title = "test"
url = "https://example.org/doc"
checked = 2026-11-24
[[networks]]
prefix = "127.0.0.0/8"
source = "doc"
checked = 2026-11-24
[functions.text]
mode = "any_of"
[[functions.text.endpoints]]
id = "chat"
address = "127.0.0.1"
port = {tcp_port}
protocol = "tcp"
source = "doc"
checked = 2026-11-24
[functions.voice]
[[functions.voice.endpoints]]
id = "relay"
address = "127.0.0.1"
port = {udp_port}
transport = "udp"
protocol = "stun"
source = "doc"
checked = 2026-11-24
"""

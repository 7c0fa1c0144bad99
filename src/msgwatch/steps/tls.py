"""TLS handshake over a traced TCP connection.

OpenSSL runs on memory buffers (``ssl.MemoryBIO``): the step moves bytes between OpenSSL and the
:class:`~msgwatch.steps.net.TCPConn` itself, so every read and write of the handshake is in the trace
as it happens, and a reset, a silence or garbage after the ClientHello is seen for what it is. The
chain the server presented is kept even when verification fails (OpenSSL still holds it), since a
certificate for the wrong name is the evidence of interception.

``server_name`` may differ from the host the endpoint belongs to: a handshake with a benign name to
the same address is the control that separates SNI filtering from an address block.
"""

from __future__ import annotations

import _ssl  # for ENCODING_DER, which ssl does not re-export
import ssl
from dataclasses import dataclass
from typing import Any

from msgwatch import failures as F
from msgwatch.steps.net import TCPConn
from msgwatch.steps.trace import b64

_CONTEXTS: dict[tuple[str | None, str | None, bool, tuple[str, ...]], ssl.SSLContext] = {}


def tls_context(
    ca_bundle: str | None, verify: bool, alpn: tuple[str, ...], extra_roots: str | None = None
) -> ssl.SSLContext:
    """A client context, cached (loading a CA bundle costs milliseconds). ``extra_roots`` (a PEM
    file) are trusted in addition to ``ca_bundle`` (or the system's store when it is None)."""
    key = (ca_bundle, extra_roots, verify, alpn)
    context = _CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=ca_bundle)
        if extra_roots is not None:
            context.load_verify_locations(cafile=extra_roots)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if alpn:
            context.set_alpn_protocols(list(alpn))
        _CONTEXTS[key] = context
    return context


@dataclass
class TLSConn:
    """A TLS session on top of a :class:`TCPConn`, usable as a byte stream (for HTTP)."""

    tcp: TCPConn
    obj: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO
    alpn: str | None = None

    @property
    def address(self) -> str:
        return self.tcp.address

    async def _flush(self, deadline: float) -> None:
        pending = self.outgoing.read()
        if pending:
            await self.tcp.write(pending, deadline)

    async def write(self, data: bytes, deadline: float) -> None:
        self.obj.write(data)
        await self._flush(deadline)

    async def read(self, deadline: float, max_bytes: int = 16384) -> bytes:
        """Up to ``max_bytes`` of plaintext; ``b""`` at a clean or unclean EOF."""
        while True:
            try:
                return self.obj.read(max(1, max_bytes))
            except ssl.SSLWantReadError:
                await self._flush(deadline)
                data = await self.tcp.read(deadline)
                if not data:
                    self.incoming.write_eof()
                    try:
                        return self.obj.read(max(1, max_bytes))
                    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError):
                        return b""
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def close(self) -> None:
        self.tcp.close()


def _chain(obj: ssl.SSLObject, limit: int) -> list[dict[str, str]]:
    """The certificates the peer sent, leaf first (also after a failed verification).

    Never raises: it runs in the handshake's ``finally``, where an error would hide the real one.
    """
    sslobj: Any = getattr(obj, "_sslobj", None)
    try:
        certs = sslobj.get_unverified_chain() if sslobj is not None else None
        if certs:
            return [b64(c.public_bytes(_ssl.ENCODING_DER)) for c in list(certs)[:limit]]
    except Exception:
        pass
    try:
        leaf = obj.getpeercert(binary_form=True)
    except Exception:
        leaf = None
    return [b64(leaf)] if leaf else []


async def tls_handshake(
    conn: TCPConn,
    server_name: str | None,
    deadline: float,
    *,
    ca_bundle: str | None = None,
    verify: bool = True,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    tags: list[str] | None = None,
    extra_roots: str | None = None,
) -> TLSConn:
    """Handshake on ``conn``; records a ``tls_handshakes`` entry; raises on failure."""
    trace = conn.trace
    context = tls_context(ca_bundle, verify, alpn, extra_roots)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    session = TLSConn(conn, obj, incoming, outgoing)
    t0 = trace.now()
    trace.event("tls_handshake_start", txid=conn.txid, t0=t0, address=conn.address)
    failure: str | None = None
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await session._flush(deadline)
                data = await conn.read(deadline)
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
        await session._flush(deadline)
        session.alpn = obj.selected_alpn_protocol()
    except Exception as exc:
        failure = F.classify(exc)
        raise
    finally:
        trace.event(
            "tls_handshake_done", txid=conn.txid, t0=t0, address=conn.address, failure=failure
        )
        cipher = obj.cipher() if failure is None else None
        record: dict[str, Any] = {
            "network": "tcp",
            "address": conn.address,
            "server_name": server_name or "",
            "offered_alpn": list(alpn),
            "negotiated_protocol": session.alpn or "",
            "tls_version": (obj.version() or "") if failure is None else "",
            "cipher_suite": cipher[0] if cipher else "",
            "no_tls_verify": not verify,
            "peer_certificates": _chain(obj, trace.limits.max_certs),
            "failure": failure,
            "t0": t0,
            "t": trace.now(),
            "transaction_id": conn.txid,
        }
        if tags:
            record["tags"] = tags
        trace.tls(record)
    return session

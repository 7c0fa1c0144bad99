"""The table of protocols: what a chain does after the endpoint's name is resolved.

:data:`CHAINS` maps every catalogue protocol (:data:`msgwatch.catalogue.schema.Protocol`) to its
part of the chain; :mod:`msgwatch.probe.chains` resolves the name, then calls it:

    dns                 nothing more: the resolution is the measurement
    tcp                 TCP connect
    tls                 TCP → TLS (verified)     ┐ plus, in parallel, a control: TCP → TLS with a
    https               TCP → TLS → HTTP GET     ┘ benign SNI to the same address
    http                TCP → HTTP GET
    stun, turn (udp)    STUN Binding / TURN Allocate
    stun, turn (tcp/tls) TCP (→ TLS) → the same request on the stream (TURN's fallback: a 401
                        challenge proves it)
    mtproto             TCP → req_pq_multi → resPQ                    (steps.app: the protocol's
    whatsapp_chat       TCP → WA prologue + ClientHello → the server's first exchange, so that DPI
                        first frame                                   that kills it is seen)

Rules:

- A part never raises: it fills in the :class:`~msgwatch.probe.chain.ChainOutcome` it is given
  (:meth:`~msgwatch.probe.chain.ChainOutcome.fail` with the step that failed: ``tcp_connect``,
  ``tls_handshake``, ``udp_exchange``, ``app_handshake``, ``http_request``). An exception that
  escapes is a bug, recorded by ``run_chain`` as the step ``internal``.
- Every step shares the chain's one ``deadline``.
- Addresses are tried in order, at most ``max_addresses`` of them, until one connects
  (:func:`connect`); a datagram protocol uses the first.
- A new protocol is one step module (in :mod:`msgwatch.steps`, for its first exchange), one line
  here, one server in the lab's table (:data:`msgwatch.lab.servers.SERVERS`) and its name in the
  catalogue's ``Protocol`` (with the transports it runs over). A test checks the tables agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from msgwatch import failures as F
from msgwatch.catalogue.schema import Protocol
from msgwatch.probe.chain import Chain, ChainConfig
from msgwatch.steps.app import mtproto_handshake, whatsapp_hello
from msgwatch.steps.http import Get, Stream, http_get
from msgwatch.steps.net import TCPConn, tcp_connect
from msgwatch.steps.stun import Kind, stun_exchange, stun_stream_exchange
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace

ChainFn = Callable[[Chain], Awaitable[None]]
"""A protocol's part of a chain: fills in ``chain.outcome``; never raises."""

WEB_ALPN = ("http/1.1",)
TLS_ALPN = ("h2", "http/1.1")
STUN_ALPN = ("stun.turn",)
"""RFC 7443: STUN and TURN over TLS."""


@dataclass
class Link:
    """The chain's open connection: ``stream`` is the TLS session over ``conn`` when TLS ran."""

    conn: TCPConn
    stream: Stream
    alpn: str | None = None


async def connect(chain: Chain) -> TCPConn | None:
    """TCP to the first of the chain's addresses that connects; None (and the failure) if none."""
    outcome = chain.outcome
    failure = F.TIMEOUT
    for ip in chain.addresses[: chain.config.max_addresses]:
        outcome.address = ip
        try:
            return await tcp_connect(
                chain.trace, chain.txid, ip, chain.endpoint.port, chain.deadline
            )
        except Exception as exc:
            failure = F.classify(exc)
    outcome.fail(failure, "tcp_connect")
    return None


async def control_handshake(
    trace: Trace, txid: int, ip: str, port: int, config: ChainConfig, deadline: float
) -> str | None:
    """A handshake with a benign SNI and no verification to ``ip:port``; its failure or None."""
    try:
        conn = await tcp_connect(trace, txid, ip, port, deadline)
    except Exception as exc:
        return F.classify(exc)
    try:
        await tls_handshake(conn, config.benign_sni, deadline, verify=False, tags=["control"])
    except Exception as exc:
        return F.classify(exc)
    finally:
        conn.close()
    return None


@contextlib.asynccontextmanager
async def opened(chain: Chain, *, tls: bool, alpn: tuple[str, ...]) -> AsyncIterator[Link | None]:
    """The chain's connection (None when it failed: the outcome says how), closed on exit.

    With ``tls``, the handshake (certificate verified, ``alpn`` offered) runs alongside a control
    handshake with a benign server name to the same address, whose result is in the outcome
    (``control_failure``) once the block exits."""
    outcome = chain.outcome
    conn = await connect(chain)
    if conn is None or outcome.address is None:
        yield None
        return
    control: asyncio.Task[str | None] | None = None
    try:
        if not tls:
            yield Link(conn, conn)
            return
        control_txid = chain.trace.new_transaction()
        outcome.transaction_ids.append(control_txid)
        control = asyncio.create_task(
            control_handshake(
                chain.trace,
                control_txid,
                outcome.address,
                chain.endpoint.port,
                chain.config,
                chain.deadline,
            )
        )
        try:
            session = await tls_handshake(
                conn,
                chain.endpoint.host,
                chain.deadline,
                ca_bundle=chain.config.ca_bundle,
                alpn=alpn,
                extra_roots=chain.extra_roots,
            )
        except Exception as exc:
            outcome.fail(F.classify(exc), "tls_handshake")
            yield None
            return
        outcome.verified = True
        yield Link(conn, session, session.alpn)
    finally:
        conn.close()
        if control is not None:
            with contextlib.suppress(Exception):
                outcome.control_failure = await control
                outcome.control_ran = True


async def resolved(chain: Chain) -> None:
    """``dns``: the name's resolution (done before this part) is the whole measurement."""


async def tcp(chain: Chain) -> None:
    """``tcp``: the connection is the measurement."""
    async with opened(chain, tls=False, alpn=()):
        pass


async def tls(chain: Chain) -> None:
    """``tls``: a verified handshake, with its control."""
    async with opened(chain, tls=True, alpn=TLS_ALPN):
        pass


async def web(chain: Chain) -> None:
    """``http`` and ``https``: one GET of the endpoint's path (over a verified TLS for https)."""
    endpoint = chain.endpoint
    scheme = endpoint.protocol
    async with opened(chain, tls=scheme == "https", alpn=WEB_ALPN) as link:
        if link is None:
            return
        host = endpoint.host or chain.outcome.address or ""
        get = Get.to(scheme, host, endpoint.port, endpoint.path, max_body=chain.config.max_body)
        result = await http_get(
            link.stream, chain.trace, chain.txid, get, chain.deadline, alpn=link.alpn
        )
        chain.outcome.http = result
        if result.failure is not None:
            chain.outcome.fail(result.failure, "http_request")


async def stun(chain: Chain) -> None:
    """``stun`` and ``turn``: one request over UDP, or on a TCP (or TLS) stream."""
    endpoint, outcome = chain.endpoint, chain.outcome
    kind: Kind = "turn" if endpoint.protocol == "turn" else "stun"
    if endpoint.transport == "udp":
        outcome.address = chain.addresses[0]
        result = await stun_exchange(
            chain.trace,
            chain.txid,
            kind,
            outcome.address,
            endpoint.port,
            chain.deadline,
            rto=chain.config.stun_rto,
        )
        if result.failure is not None:
            outcome.fail(result.failure, "udp_exchange")
        return
    over_tls = endpoint.transport == "tls"
    async with opened(chain, tls=over_tls, alpn=STUN_ALPN) as link:
        if link is None:
            return
        transport: Literal["tcp", "tls"] = "tls" if over_tls else "tcp"
        exchange = await stun_stream_exchange(
            chain.trace, chain.txid, kind, link.stream, transport, chain.deadline
        )
        if exchange.failure is not None:
            outcome.fail(exchange.failure, "app_handshake")


async def mtproto(chain: Chain) -> None:
    """``mtproto``: the first exchange of Telegram's protocol."""
    async with opened(chain, tls=False, alpn=()) as link:
        if link is not None:
            app = await mtproto_handshake(link.conn, chain.deadline, time.time())
            if app.failure is not None:
                chain.outcome.fail(app.failure, "app_handshake")


async def whatsapp_chat(chain: Chain) -> None:
    """``whatsapp_chat``: the opening of WhatsApp's chat protocol."""
    async with opened(chain, tls=False, alpn=()) as link:
        if link is not None:
            app = await whatsapp_hello(link.conn, chain.deadline)
            if app.failure is not None:
                chain.outcome.fail(app.failure, "app_handshake")


CHAINS: dict[Protocol, ChainFn] = {
    "dns": resolved,
    "tcp": tcp,
    "tls": tls,
    "https": web,
    "http": web,
    "stun": stun,
    "turn": stun,
    "mtproto": mtproto,
    "whatsapp_chat": whatsapp_chat,
}

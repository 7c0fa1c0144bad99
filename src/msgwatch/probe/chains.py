"""Measurement chains: the steps composed for one catalogue endpoint.

One chain per endpoint, chosen by its protocol:

    dns                 resolve
    tcp                 resolve → TCP connect
    mtproto             resolve → TCP → req_pq_multi → resPQ          (steps.app: the protocol's
    whatsapp_chat       resolve → TCP → WA prologue + ClientHello →    first exchange, so that DPI
                                    the server's first frame          that kills it is seen)
    tls                 resolve → TCP → TLS (verified)   ┐ plus, in parallel, a control: TCP → TLS
    https               resolve → TCP → TLS → HTTP GET   ┘ with a benign SNI to the same address
    http                resolve → TCP → HTTP GET
    stun, turn (udp)    resolve → STUN Binding / TURN Allocate
    stun, turn (tcp/tls) resolve → TCP (→ TLS) → the same request on the stream (TURN's fallback:
                                    a 401 challenge proves it; a failure after the connect is the
                                    step ``app_handshake``, like the other protocols' first exchange)

An endpoint with an ``address`` is not resolved. Addresses from DNS are tried in order, at most
``max_addresses`` of them, until one connects. Every step of a chain shares the chain's
``deadline`` (the runner gives each chain its own, from when it gets a slot).
A chain never raises: its outcome says which step failed and how.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

from msgwatch import failures as F
from msgwatch.catalogue import Endpoint
from msgwatch.steps.app import mtproto_handshake, whatsapp_hello
from msgwatch.steps.dns import DNSResult, resolve
from msgwatch.steps.http import HTTPResult, http_get
from msgwatch.steps.net import TCPConn, tcp_connect
from msgwatch.steps.stun import Kind, stun_exchange, stun_stream_exchange
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace


@dataclass(frozen=True)
class ChainConfig:
    resolver: tuple[str, int] | None = None
    """DNS server to query over UDP; None means the system resolver (getaddrinfo)."""
    ca_bundle: str | None = None
    """PEM file of trusted CAs; None means the system's store."""
    benign_sni: str = "example.com"
    """Server name for the control handshake to the same address."""
    dns_linger: float = 0.3
    """Seconds to keep listening after the first DNS answer (to catch injected answers)."""
    max_addresses: int = 2
    max_body: int = 64 * 1024
    stun_rto: float = 0.5
    download_path: str | None = None
    """Path of a large object for the throughput test of ``media`` https endpoints that name none
    of their own (``download_path`` in the catalogue); None: only those that name one."""
    download_seconds: float = 1.5
    """How long each throughput download may run (within the deadline)."""
    download_bytes: int = 512 * 1024
    """At most this much is read by each throughput download (nothing of it is kept)."""


@dataclass
class ChainOutcome:
    """What happened to one endpoint."""

    function: str
    endpoint: Endpoint
    transaction_ids: list[int] = field(default_factory=list)
    failure: str | None = None
    failed_step: str | None = None
    address: str | None = None
    dns: DNSResult | None = None
    verified: bool = False
    """A certificate for the endpoint's name was verified on the way (TLS succeeded)."""
    control_failure: str | None = None
    control_ran: bool = False
    http: HTTPResult | None = None
    attempt: int = 1
    """1 for the first attempt, 2 for the retry of a failed chain (:mod:`msgwatch.probe.runner`)."""
    not_measured: str | None = None
    """Why the chain measured nothing, when it did not: ``fence`` (the destination is outside
    ``MSGWATCH_ALLOWED_NETWORKS``) or ``no_time`` (it could not get its time before the run's
    deadline). Never a failure: ``failure`` is then None."""

    @property
    def ok(self) -> bool:
        return self.failure is None


async def _addresses(
    trace: Trace, outcome: ChainOutcome, config: ChainConfig, deadline: float
) -> list[str]:
    endpoint = outcome.endpoint
    if endpoint.address is not None:
        return [endpoint.address]
    assert endpoint.host is not None  # the schema guarantees a host or an address
    txid = outcome.transaction_ids[0]
    # A ``dns`` endpoint's transport is the DNS transport to measure; any other endpoint's is its
    # own, and its name is resolved over UDP.
    over = endpoint.transport if endpoint.protocol == "dns" else "udp"
    result = await resolve(trace, txid, endpoint.host, config.resolver, deadline,
                           config.dns_linger, transport=over)  # fmt: skip
    outcome.dns = result
    if result.failure is not None or not result.addresses:
        outcome.failure = result.failure or F.DNS_NO_ANSWER
        outcome.failed_step = "dns"
        return []
    return result.addresses


async def _connect(
    trace: Trace, outcome: ChainOutcome, addresses: list[str], config: ChainConfig, deadline: float
) -> TCPConn | None:
    txid = outcome.transaction_ids[0]
    failure = F.TIMEOUT
    for ip in addresses[: config.max_addresses]:
        outcome.address = ip
        try:
            return await tcp_connect(trace, txid, ip, outcome.endpoint.port, deadline)
        except Exception as exc:
            failure = F.classify(exc)
    outcome.failure, outcome.failed_step = failure, "tcp_connect"
    return None


async def _control_handshake(
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


async def _udp(
    trace: Trace, outcome: ChainOutcome, addresses: list[str], config: ChainConfig, deadline: float
) -> None:
    endpoint = outcome.endpoint
    kind: Kind = "turn" if endpoint.protocol == "turn" else "stun"
    ip = addresses[0]
    outcome.address = ip
    result = await stun_exchange(
        trace, outcome.transaction_ids[0], kind, ip, endpoint.port, deadline, rto=config.stun_rto
    )
    if result.failure is not None:
        outcome.failure, outcome.failed_step = result.failure, "udp_exchange"


async def run_chain(
    trace: Trace,
    function: str,
    endpoint: Endpoint,
    config: ChainConfig,
    deadline: float,
    extra_roots: str | None = None,
) -> ChainOutcome:
    """Measure one endpoint; never raises. ``extra_roots``: the service's own root CAs (PEM)."""
    outcome = ChainOutcome(function, endpoint, [trace.new_transaction()])
    try:
        await _run(trace, outcome, config, deadline, extra_roots)
    except Exception as exc:  # a bug, not a network condition: recorded, never fatal
        outcome.failure = F.classify(exc)
        outcome.failed_step = outcome.failed_step or "internal"
    return outcome


async def _run(
    trace: Trace,
    outcome: ChainOutcome,
    config: ChainConfig,
    deadline: float,
    extra_roots: str | None,
) -> None:
    endpoint = outcome.endpoint
    addresses = await _addresses(trace, outcome, config, deadline)
    if not addresses or endpoint.protocol == "dns":
        return
    if endpoint.transport == "udp":
        await _udp(trace, outcome, addresses, config, deadline)
        return
    await _connected(trace, outcome, addresses, config, deadline, extra_roots)
    path = endpoint.download_path or config.download_path
    wanted = outcome.function == "media" and endpoint.protocol == "https"
    if wanted and path and outcome.ok and outcome.address is not None:
        await _throughput(trace, outcome, outcome.address, path, config, deadline, extra_roots)


async def _connected(
    trace: Trace,
    outcome: ChainOutcome,
    addresses: list[str],
    config: ChainConfig,
    deadline: float,
    extra_roots: str | None,
) -> None:
    endpoint = outcome.endpoint
    wants_tls = endpoint.protocol in ("tls", "https") or endpoint.transport == "tls"
    conn = await _connect(trace, outcome, addresses, config, deadline)
    if conn is None or outcome.address is None:
        return
    control: asyncio.Task[str | None] | None = None
    try:
        stream: object = conn
        alpn: str | None = None
        if wants_tls:
            control_txid = trace.new_transaction()
            outcome.transaction_ids.append(control_txid)
            control = asyncio.create_task(
                _control_handshake(
                    trace, control_txid, outcome.address, endpoint.port, config, deadline
                )
            )
            offered = ("http/1.1",) if endpoint.protocol == "https" else ("h2", "http/1.1")
            if endpoint.protocol in ("stun", "turn"):
                offered = ("stun.turn",)  # RFC 7443
            try:
                session = await tls_handshake(
                    conn,
                    endpoint.host,
                    deadline,
                    ca_bundle=config.ca_bundle,
                    alpn=offered,
                    extra_roots=extra_roots,
                )
            except Exception as exc:
                outcome.failure, outcome.failed_step = F.classify(exc), "tls_handshake"
                return
            outcome.verified = True
            stream, alpn = session, session.alpn
        if endpoint.protocol in ("stun", "turn"):
            kind: Kind = "turn" if endpoint.protocol == "turn" else "stun"
            transport: Literal["tcp", "tls"] = "tls" if wants_tls else "tcp"
            exchange = await stun_stream_exchange(
                trace, outcome.transaction_ids[0], kind, stream,  # type: ignore[arg-type]
                transport, deadline,
            )  # fmt: skip
            if exchange.failure is not None:
                outcome.failure, outcome.failed_step = exchange.failure, "app_handshake"
            return
        if endpoint.protocol in ("mtproto", "whatsapp_chat") and not wants_tls:
            if endpoint.protocol == "mtproto":
                app = await mtproto_handshake(conn, deadline, time.time())
            else:
                app = await whatsapp_hello(conn, deadline)
            if app.failure is not None:
                outcome.failure, outcome.failed_step = app.failure, "app_handshake"
            return
        if endpoint.protocol in ("http", "https"):
            scheme = endpoint.protocol
            host = endpoint.host or outcome.address
            default = 443 if scheme == "https" else 80
            authority = host if endpoint.port == default else f"{host}:{endpoint.port}"
            result = await http_get(
                stream,  # type: ignore[arg-type]
                trace,
                outcome.transaction_ids[0],
                url=f"{scheme}://{authority}{endpoint.path}",
                host=authority,
                path=endpoint.path,
                deadline=deadline,
                alpn=alpn,
                max_body=config.max_body,
            )
            outcome.http = result
            if result.failure is not None:
                outcome.failure, outcome.failed_step = result.failure, "http_request"
    finally:
        conn.close()
        if control is not None:
            with contextlib.suppress(Exception):
                outcome.control_failure = await control
                outcome.control_ran = True


async def _download(
    trace: Trace,
    txid: int,
    ip: str,
    endpoint: Endpoint,
    server_name: str,
    path: str,
    config: ChainConfig,
    deadline: float,
    extra_roots: str | None,
) -> dict[str, object]:
    """One bounded download of ``path``; its throughput record (also when it failed)."""
    control = server_name != endpoint.host
    record: dict[str, object] = {
        "transaction_id": txid, "server_name": server_name, "control": control,
        "address": ip, "path": path, "bytes": 0, "seconds": 0.0, "kbit_s": 0.0, "failure": None,
    }  # fmt: skip
    t0 = trace.now()
    try:
        conn = await tcp_connect(trace, txid, ip, endpoint.port, deadline)
    except Exception as exc:
        record["failure"] = F.classify(exc)
        return record
    try:
        tags = ["throughput", "control"] if control else ["throughput"]
        session = await tls_handshake(
            conn, server_name, deadline, ca_bundle=config.ca_bundle, verify=not control,
            alpn=("http/1.1",), tags=tags, extra_roots=extra_roots,
        )  # fmt: skip
        host = endpoint.host or ip
        started = trace.now()
        result = await http_get(
            session, trace, txid, url=f"https://{host}{path}", host=host, path=path,
            deadline=deadline, alpn=session.alpn, max_body=config.download_bytes, keep_body=0,
        )  # fmt: skip
        seconds = max(trace.now() - started, 1e-6)
        record.update(
            bytes=result.body_length,
            seconds=round(seconds, 6),
            kbit_s=round(result.body_length * 8 / 1000 / seconds, 3),
            failure=None if result.failure == F.TIMEOUT else result.failure,
        )
    except Exception as exc:
        record["failure"] = F.classify(exc)
    finally:
        conn.close()
        record["t0"], record["t"] = t0, trace.now()
    return record


async def _throughput(
    trace: Trace,
    outcome: ChainOutcome,
    ip: str,
    path: str,
    config: ChainConfig,
    deadline: float,
    extra_roots: str | None,
) -> None:
    """The same download with the real server name and with a benign one, side by side.

    A censor that polices by server name (Russia's throttling of Twitter in 2021) slows only the
    first. A download that runs out of time is not a failure: its throughput is what it got."""
    loop = asyncio.get_running_loop()
    window = min(config.download_seconds, deadline - loop.time() - 0.2)
    if window < 0.3 or outcome.endpoint.host is None:
        return
    until = loop.time() + window
    real_txid, control_txid = trace.new_transaction(), trace.new_transaction()
    outcome.transaction_ids += [real_txid, control_txid]
    records = await asyncio.gather(
        _download(trace, real_txid, ip, outcome.endpoint, outcome.endpoint.host, path, config,
                  until, extra_roots),
        _download(trace, control_txid, ip, outcome.endpoint, config.benign_sni, path, config,
                  until, extra_roots),
    )  # fmt: skip
    for record in records:
        trace.download(record)

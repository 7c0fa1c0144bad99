"""Measurement chains: the steps composed for one catalogue endpoint.

One chain per endpoint: its name is resolved (an endpoint with an ``address`` is not), then its
protocol's part runs (:data:`msgwatch.probe.protocols.CHAINS`, which draws every chain), then, for a
``media`` https endpoint with a download path, the throughput pair (:func:`_throughput`).

Every step of a chain shares the chain's ``deadline`` (the runner gives each chain its own, from
when it gets a slot). A chain never raises: its outcome says which step failed and how.
"""

from __future__ import annotations

import asyncio

from msgwatch import failures as F
from msgwatch.catalogue import Endpoint
from msgwatch.probe.chain import Chain, ChainConfig, ChainOutcome
from msgwatch.probe.protocols import CHAINS
from msgwatch.steps.dns import resolve
from msgwatch.steps.http import Get, http_get
from msgwatch.steps.net import tcp_connect
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace

__all__ = ["ChainConfig", "ChainOutcome", "run_chain"]
"""ChainConfig and ChainOutcome live in :mod:`msgwatch.probe.chain`; they are named here too,
where the chains that take and return them are."""


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
    result = await resolve(
        trace, txid, endpoint.host, config.resolver, deadline, config.dns_linger, transport=over
    )
    outcome.dns = result
    if result.failure is not None or not result.addresses:
        outcome.failure = result.failure or F.DNS_NO_ANSWER
        outcome.failed_step = "dns"
        return []
    return result.addresses


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
    if not addresses:
        return
    chain = Chain(trace, outcome, addresses, config, deadline, extra_roots)
    await CHAINS[endpoint.protocol](chain)
    path = endpoint.download_path or config.download_path
    wanted = outcome.function == "media" and endpoint.protocol == "https"
    if wanted and path and outcome.ok and outcome.address is not None:
        await _throughput(chain, outcome.address, path)


async def _download(
    chain: Chain, txid: int, ip: str, server_name: str, path: str, deadline: float
) -> dict[str, object]:
    """One bounded download of ``path`` from ``ip`` (by ``deadline``, the throughput window);
    its throughput record (also when it failed)."""
    trace, endpoint, config = chain.trace, chain.endpoint, chain.config
    control = server_name != endpoint.host
    record: dict[str, object] = {
        "transaction_id": txid,
        "server_name": server_name,
        "control": control,
        "address": ip,
        "path": path,
        "bytes": 0,
        "seconds": 0.0,
        "kbit_s": 0.0,
        "failure": None,
    }
    t0 = trace.now()
    try:
        conn = await tcp_connect(trace, txid, ip, endpoint.port, deadline)
    except Exception as exc:
        record["failure"] = F.classify(exc)
        return record
    try:
        tags = ["throughput", "control"] if control else ["throughput"]
        session = await tls_handshake(
            conn,
            server_name,
            deadline,
            ca_bundle=config.ca_bundle,
            verify=not control,
            alpn=("http/1.1",),
            tags=tags,
            extra_roots=chain.extra_roots,
        )
        host = endpoint.host or ip
        started = trace.now()
        get = Get(host, path, "https", max_body=config.download_bytes, keep_body=0)
        result = await http_get(session, trace, txid, get, deadline, alpn=session.alpn)
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


async def _throughput(chain: Chain, ip: str, path: str) -> None:
    """The same download with the real server name and with a benign one, side by side.

    A censor that polices by server name (Russia's throttling of Twitter in 2021) slows only the
    first. A download that runs out of time is not a failure: its throughput is what it got."""
    trace, outcome, config = chain.trace, chain.outcome, chain.config
    loop = asyncio.get_running_loop()
    window = min(config.download_seconds, chain.deadline - loop.time() - 0.2)
    if window < 0.3 or outcome.endpoint.host is None:
        return
    until = loop.time() + window
    real_txid, control_txid = trace.new_transaction(), trace.new_transaction()
    outcome.transaction_ids += [real_txid, control_txid]
    records = await asyncio.gather(
        _download(chain, real_txid, ip, outcome.endpoint.host, path, until),
        _download(chain, control_txid, ip, config.benign_sni, path, until),
    )
    for record in records:
        trace.download(record)

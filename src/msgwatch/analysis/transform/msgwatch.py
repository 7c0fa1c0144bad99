"""Observation rows of msgwatch's own test (``msgwatch_service``, docs/spec/ts-msgwatch-service.md).

One row per entry of ``queries``, ``tcp_connect``, ``tls_handshakes``, ``requests``,
``msgwatch_udp_exchanges`` (kind ``stun`` or ``turn``: TURN allocations are the exchanges of
protocol ``turn``), ``msgwatch_app_handshakes`` (``app``), ``msgwatch_replays`` (``replay``) and
``msgwatch_throughput`` (``throughput``), for each target whose ``transaction_ids`` hold the
entry's transaction id: the row carries that target's function, ``endpoint_id`` (as ``target``),
role and attempt (at most :data:`MAX_PLACES` targets). An entry no target claims gives one row
with function None.

Figures: a replay's ``loss`` is ``1 - received_packets / sent_packets`` (None when nothing was
sent) and its ``throughput_kbps`` the received bytes over its duration; a throughput download's
``throughput_kbps`` is its ``kbit_s``. ``network_events`` are not rows (the entries above say it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from msgwatch.analysis.transform import trace
from msgwatch.analysis.transform.base import (
    Envelope,
    Row,
    entries,
    integer,
    jtext,
    number,
    small,
    text,
)
from msgwatch.analysis.transform.trace import Place, failure, place, split_address

MAX_PLACES = 16
"""Targets an entry is attributed to, at most (a real one has one or two)."""


def service_of(env: Envelope) -> str:
    """The measurement's service (``msgwatch_service``, else its input)."""
    return text(env.keys.get("msgwatch_service"), 64) or text(env.input, 64) or ""


def places(env: Envelope) -> Callable[[Any], list[Place]]:
    """Transaction id → the places of the targets that hold it."""
    service = service_of(env)
    found: dict[int, list[Place]] = {}
    for target in entries(env.keys.get("msgwatch_targets")):
        ids = target.get("transaction_ids")
        where = place(
            service,
            text(target.get("function"), 32),
            text(target.get("endpoint_id"), 256),
            text(target.get("role"), 32),
            small(target.get("attempt")),
        )
        for txid in ids[:256] if isinstance(ids, list) else ():
            if type(txid) is int and len(found.setdefault(txid, [])) < MAX_PLACES:
                found[txid].append(where)
    unclaimed = [place(service, None)]

    def lookup(txid: Any) -> list[Place]:
        return found.get(txid, unclaimed) if isinstance(txid, int) else unclaimed

    return lookup


def observations(env: Envelope) -> Iterator[Row]:
    """The observation rows of a ``msgwatch_service`` measurement."""
    return records(env.keys, places(env))


def _common(entry: dict[str, Any]) -> dict[str, Any]:
    ip, port = split_address(entry.get("address"))
    return {
        "transaction_id": integer(entry.get("transaction_id")),
        "t0": number(entry.get("t0")),
        "t": number(entry.get("t")),
        "failure": failure(entry.get("failure")),
        "ip": ip,
        "port": port,
        "transport": text(entry.get("transport"), 16),
    }


def _udp(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request")
    request = request if isinstance(request, dict) else {}
    attempts = entries(entry.get("attempts"))
    responses = entries(entry.get("responses"))
    sent = [integer(a.get("num_bytes")) or 0 for a in attempts]
    received = [integer(r.get("num_bytes")) or 0 for r in responses]
    return {
        **_common(entry),
        "kind": "turn" if entry.get("protocol") == "turn" else "stun",
        "packets_sent": len(attempts),
        "packets_received": len(responses),
        "bytes_sent": integer(sum(sent)),
        "bytes_received": integer(sum(received)),
        "detail": jtext({"method": text(request.get("method"), 16)}),
    }


def _app(entry: dict[str, Any]) -> dict[str, Any]:
    detail = {"protocol": text(entry.get("protocol"), 32)}
    if isinstance(entry.get("server_hello"), bool):
        detail["server_hello"] = entry["server_hello"]
    return {
        **_common(entry),
        "kind": "app",
        "transport": "tcp",
        "bytes_sent": integer(entry.get("request_bytes")),
        "bytes_received": integer(entry.get("response_bytes")),
        "detail": jtext(detail),
    }


def _replay(entry: dict[str, Any]) -> dict[str, Any]:
    out = _common(entry)
    out["port"] = small(entry.get("port")) or out["port"]
    sent = integer(entry.get("sent_packets"))
    got = integer(entry.get("received_packets"))
    received_bytes = integer(entry.get("received_bytes"))
    loss = max(0.0, min(1.0, 1 - got / sent)) if sent and got is not None else None
    t0, t = out["t0"], out["t"]
    rate = None
    if received_bytes is not None and t0 is not None and t is not None and t > t0:
        rate = received_bytes * 8 / 1000 / (t - t0)
    detail = {
        "profile": text(entry.get("profile"), 32),
        "variant": text(entry.get("variant"), 32),
        "jitter_ms": number(entry.get("jitter_ms")),
        "direction": text(entry.get("direction"), 8),
    }
    role = text(entry.get("role"), 32)
    if role is not None:  # else the target's
        out["role"] = role
    out.update(
        kind="replay",
        loss=loss,
        throughput_kbps=rate,
        packets_sent=sent,
        packets_received=got,
        bytes_sent=integer(entry.get("sent_bytes")),
        bytes_received=received_bytes,
        detail=jtext({k: v for k, v in detail.items() if v is not None}),
    )
    return out


def _throughput(entry: dict[str, Any]) -> dict[str, Any]:
    out = _common(entry)
    out.update(
        kind="throughput",
        transport="tcp",
        hostname=text(entry.get("server_name"), 256),
        throughput_kbps=number(entry.get("kbit_s")),
        bytes_received=integer(entry.get("bytes")),
        detail=jtext({"control": entry.get("control") is True, "path": text(entry.get("path"))}),
    )
    return out


_READERS: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("msgwatch_udp_exchanges", _udp),
    ("msgwatch_app_handshakes", _app),
    ("msgwatch_replays", _replay),
    ("msgwatch_throughput", _throughput),
)


def records(keys: dict[str, Any], where: Callable[[Any], list[Place]]) -> Iterator[Row]:
    """The rows of ``keys``' standard trace and msgwatch records (UDP/STUN/TURN exchanges, app
    handshakes, replays, throughput), each at ``where``'s places (a circumvention test's
    ``through`` items carry such records)."""
    yield from trace.rows(keys, where)
    for key, read in _READERS:
        for entry in entries(keys.get(key)):
            columns = read(entry)
            for found in where(entry.get("transaction_id")):
                yield {**found, **columns}

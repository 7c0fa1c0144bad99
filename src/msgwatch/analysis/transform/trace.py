"""Observation rows from OONI's standard trace keys (df-002 DNS, df-005 TCP, df-006 TLS, df-001
HTTP), shared by msgwatch's test and OONI's.

Every entry gives one row per place it is attributed to (:data:`Attribution`: service, function,
target, role, attempt); an entry that is not a dict, or a value of the wrong type inside one,
gives no row or a None column, never an error. Failure strings are kept as written (OONI's
df-007); an old-format TCP entry with ``failure: false`` and ``success: false`` has failure
``"failed"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from msgwatch.analysis.transform.base import (
    Row,
    entries,
    integer,
    jtext,
    number,
    small,
    text,
)

Place = dict[str, Any]
"""The columns service, function, target, role and attempt (:func:`place`)."""
Attribution = Callable[[Any], list[Place]]
"""The places of a transaction id."""


def place(
    service: str | None,
    function: str | None,
    target: str | None = None,
    role: str | None = None,
    attempt: int | None = None,
) -> Place:
    """Where an entry belongs, as the row's columns."""
    return {
        "service": service,
        "function": function,
        "target": target,
        "role": role,
        "attempt": attempt,
    }


def constant(places: list[Place]) -> Attribution:
    """The same places for every transaction id."""
    return lambda _: places


def split_address(value: Any) -> tuple[str | None, int | None]:
    """``"ip:port"`` / ``"[v6]:port"`` as (ip, port); (value, None) without a port."""
    if not isinstance(value, str) or not value:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return value[:128], None
    return host.strip("[]")[:128], small(int(port[:6]))


def failure(value: Any) -> str | None:
    """A failure string, bounded (None for null and anything else)."""
    return value[:256] if isinstance(value, str) and value else None


def rows(keys: dict[str, Any], places: Attribution) -> Iterator[Row]:
    """The rows of ``keys``' queries, tcp_connect, tls_handshakes and requests."""
    for kind, read in _READERS:
        for entry in entries(keys.get(kind)):
            columns = read(entry)
            for where in places(entry.get("transaction_id")):
                yield {**where, **columns}


def _timing(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "transaction_id": integer(entry.get("transaction_id")),
        "t0": number(entry.get("t0")),
        "t": number(entry.get("t")),
        "failure": failure(entry.get("failure")),
    }


def _answers(value: Any) -> str | None:
    found = [
        a.get("ipv4") or a.get("ipv6") or a.get("hostname")
        for a in entries(value)[:64]
        if isinstance(a.get("ipv4") or a.get("ipv6") or a.get("hostname"), str)
    ]
    return jtext(found)


def _query(entry: dict[str, Any]) -> dict[str, Any]:
    detail = {"query_type": text(entry.get("query_type"), 16), "rcode": integer(entry.get("rcode"))}
    return {
        **_timing(entry),
        "kind": "dns",
        "hostname": text(entry.get("hostname"), 256),
        "transport": text(entry.get("engine"), 32),
        "answers": _answers(entry.get("answers")),
        "detail": jtext({k: v for k, v in detail.items() if v is not None}),
    }


def _tcp(entry: dict[str, Any]) -> dict[str, Any]:
    status = entry.get("status")
    status = status if isinstance(status, dict) else {}
    out = {**_timing(entry), "kind": "tcp", "transport": "tcp"}
    out["failure"] = failure(status.get("failure"))
    if out["failure"] is None and status.get("success") is False:
        out["failure"] = "failed"
    out["ip"] = text(entry.get("ip"), 128)
    out["port"] = small(entry.get("port"))
    return out


def _tls(entry: dict[str, Any]) -> dict[str, Any]:
    ip, port = split_address(entry.get("address"))
    detail = {
        name: entry.get(name)
        for name in ("tls_version", "negotiated_protocol", "no_tls_verify", "tags")
        if isinstance(entry.get(name), (str, bool, list))
    }
    return {
        **_timing(entry),
        "kind": "tls",
        "hostname": text(entry.get("server_name"), 256),
        "ip": ip,
        "port": port,
        "transport": text(entry.get("network"), 16),
        "detail": jtext(detail),
    }


def _request(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request")
    request = request if isinstance(request, dict) else {}
    response = entry.get("response")
    response = response if isinstance(response, dict) else {}
    url = text(request.get("url"), 1024)
    try:
        host = urlsplit(url).hostname if url else None
    except ValueError:
        host = None
    ip, port = split_address(entry.get("address"))
    body = response.get("body")
    received = integer(response.get("body_length"))
    if received is None and isinstance(body, str):
        received = len(body)
    detail = {"method": text(request.get("method"), 16), "url": text(url)}
    return {
        **_timing(entry),
        "kind": "http",
        "hostname": host,
        "ip": ip,
        "port": port,
        "transport": text(entry.get("network"), 16),
        "status_code": small(response.get("code")),
        "bytes_received": received,
        "detail": jtext({k: v for k, v in detail.items() if v is not None}),
    }


_READERS: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("queries", _query),
    ("tcp_connect", _tcp),
    ("tls_handshakes", _tls),
    ("requests", _request),
)

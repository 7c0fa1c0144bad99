"""``POST /v1/measure``: a client's steps, run from where the helper stands, with the probe's code.

The helper is the probe's control: the same steps, from outside the censored network, at the same
time. So it runs **msgwatch's own probe steps** (``msgwatch.steps.*`` over
``msgwatch.steps.net``, recorded in a ``msgwatch.steps.trace.Trace``) and returns the trace in the
measurement format (``trace.test_keys()``) plus one short result per step.

A request::

    {"steps": [{"kind": "tcp", "address": "203.0.113.7", "port": 443},
               {"kind": "tls", "host": "web.whatsapp.com", "port": 443},
               {"kind": "stun", "address": "198.51.100.9", "port": 3478}],
     "timeout": 10}

(a bare list of steps is accepted too, with the default timeout). Step kinds:

========  ==================================================================================
dns       resolve ``host`` (A and AAAA) with the helper's resolver, or with ``address``:``port``
          (default 53) when given
tcp       TCP connect to ``address``:``port`` (or ``host``'s addresses), then close
tls       TCP, then a TLS handshake with SNI ``server_name`` (default ``host``); ``verify``
          (default true) checks the certificate against the helper's CA bundle
http      TCP (TLS too with ``"scheme": "https"``), then ``GET path`` with ``Host: host``
stun      STUN Binding over UDP to ``address``:``port`` (default 3478)
turn      TURN Allocate without credentials over UDP (a 401 challenge proves the relay)
========  ==================================================================================

Bounds: at most 32 steps, all concurrent under one deadline (``timeout`` ≤ 15 s, default 10);
bodies and records in the trace are capped (:data:`TRACE_LIMITS`).

**Targets are checked before anything is sent** (:mod:`msgwatch.helper.policy`): an address given by
the client, a resolver given by the client, and every address a name resolved to. A refused step
fails with ``destination_not_allowed`` and its ``reason`` (``loopback``, ``private``, ...), and
nothing of it reaches the network. ``msgwatch.steps.net``'s environment fence
(``MSGWATCH_ALLOWED_NETWORKS``) still applies underneath: this check does not replace it, nor
rely on it. The helper's own resolver is the operator's choice and is not checked.

**Answers are checked before anything is returned** (:mod:`msgwatch.helper.redact`): a DNS answer
the policy would refuse as a target (production: a private, loopback, ... address of the
helper's own network) is returned as ``[redacted]``, in the results and in the trace, with the
count (``redacted``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from msgwatch import failures as F
from msgwatch.helper.policy import NOT_ALLOWED, Policy
from msgwatch.helper.redact import redact
from msgwatch.steps.dns import resolve
from msgwatch.steps.http import Get, http_get
from msgwatch.steps.net import TCPConn, endpoint, tcp_connect
from msgwatch.steps.stun import stun_exchange
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace, TraceLimits
from msgwatch.wire import helper_api as api
from msgwatch.wire.helper_api import (
    DEFAULT_MEASURE_TIMEOUT,
    MAX_MEASURE_TIMEOUT,
    MAX_STEPS,
    MeasureAnswer,
)

MAX_ADDRESSES = 2
"""Addresses of a name tried, in order, until one connects (as the probe's chains do)."""
TRACE_LIMITS = TraceLimits(max_records=1000, max_body=16 * 1024, max_raw=1024, max_certs=4)
DEFAULT_PORTS = {"dns": 53, "tls": 443, "stun": 3478, "turn": 3478}

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")  # fmt: skip
_PATH = re.compile(r"^/[\x21-\x7e]{0,1023}$")


class Step(BaseModel):
    """One step of a ``/v1/measure`` request (unknown fields are refused): the validation of the
    contract's :class:`~msgwatch.wire.helper_api.MeasureStep`, field for field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: api.StepKind
    host: str | None = None
    address: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    server_name: str | None = None
    path: str = "/"
    scheme: api.Scheme = "http"
    verify: bool = True

    @field_validator("host", "server_name")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.match(value):
            raise ValueError("not a host name")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("not an IP address") from None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _PATH.match(value):
            raise ValueError("a path starts with / and is at most 1024 printable characters")
        return value

    @model_validator(mode="after")
    def _target(self) -> Step:
        if self.kind == "dns" and self.host is None:
            raise ValueError("a dns step needs a host")
        if self.kind != "dns" and self.host is None and self.address is None:
            raise ValueError(f"a {self.kind} step needs a host or an address")
        if self.kind == "tcp" and self.port is None:
            raise ValueError("a tcp step needs a port")
        return self

    def target_port(self) -> int:
        if self.port is not None:
            return self.port
        if self.kind == "http":
            return 443 if self.scheme == "https" else 80
        return DEFAULT_PORTS[self.kind]


class MeasureRequest(BaseModel):
    """The validation of the contract's :class:`~msgwatch.wire.helper_api.MeasureRequest`."""

    model_config = ConfigDict(extra="forbid")

    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]
    timeout: Annotated[float, Field(gt=0, le=MAX_MEASURE_TIMEOUT)] = DEFAULT_MEASURE_TIMEOUT


def parse_request(data: Any) -> MeasureRequest:
    """The request from decoded JSON (an object, or a bare list of steps); raises ValueError."""
    if isinstance(data, list):
        data = {"steps": data}
    return MeasureRequest.model_validate(data)


@dataclass(frozen=True)
class MeasureConfig:
    policy: Policy
    resolver: tuple[str, int] | None = None
    """The helper's DNS server (UDP); None: the system resolver."""
    ca_bundle: str | None = None
    """CAs the ``tls``/``https`` steps trust; None: the system's store."""
    dns_linger: float = 0.3


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def measure(request: MeasureRequest, config: MeasureConfig) -> MeasureAnswer:
    """Run every step concurrently under one deadline; ``{"trace": ..., "results": [...]}``."""
    trace = Trace(limits=TRACE_LIMITS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout
    runs = [_run_step(trace, step, config, deadline) for step in request.steps]
    results = await asyncio.gather(*runs)
    return redact(MeasureAnswer(trace=trace.test_keys(), results=list(results)), config.policy)


@dataclass(frozen=True)
class _Run:
    """One step's run: where it records, its transaction, the helper's config, the deadline, and
    the step's result (filled in as it goes)."""

    trace: Trace
    txid: int
    config: MeasureConfig
    deadline: float
    result: dict[str, Any]


async def _run_step(
    trace: Trace, step: Step, config: MeasureConfig, deadline: float
) -> dict[str, Any]:
    txid = trace.new_transaction()
    result: dict[str, Any] = {"kind": step.kind, "transaction_id": txid, "failure": None}
    try:
        await _STEPS[step.kind](_Run(trace, txid, config, deadline, result), step)
    except _Refused as refused:
        result.update(failure=NOT_ALLOWED, reason=refused.reason)
    except Exception as exc:  # a bug, not a network condition: reported, never fatal
        result["failure"] = F.classify(exc)
    return result


def _check(config: MeasureConfig, ip: str, port: int) -> None:
    reason = config.policy.reason(ip, port)
    if reason is not None:
        raise _Refused(reason)


async def _targets(run: _Run, step: Step) -> list[str]:
    """The addresses to use: the step's ``address``, or ``host`` resolved; each one allowed."""
    port = step.target_port()
    if step.address is not None:
        _check(run.config, step.address, port)
        return [step.address]
    assert step.host is not None
    found = await resolve(
        run.trace, run.txid, step.host, run.config.resolver, run.deadline, run.config.dns_linger
    )
    run.result["addresses"] = found.addresses[:16]
    if found.failure is not None or not found.addresses:
        run.result["failure"], run.result["failed_step"] = found.failure or F.DNS_NO_ANSWER, "dns"
        return []
    allowed = [ip for ip in found.addresses if run.config.policy.allows(ip, port)]
    if not allowed:
        reason = run.config.policy.reason(found.addresses[0], port)
        raise _Refused(reason or "outside_allowed_prefixes")
    return allowed


async def _dns(run: _Run, step: Step) -> None:
    server = run.config.resolver
    if step.address is not None:
        port = step.target_port()
        _check(run.config, step.address, port)
        server = (step.address, port)
    assert step.host is not None
    found = await resolve(
        run.trace, run.txid, step.host, server, run.deadline, run.config.dns_linger
    )
    run.result.update(
        addresses=found.addresses[:16],
        answers_seen=[a[:16] for a in found.answers_seen[:8]],
        failure=found.failure,
    )


async def _connect(run: _Run, step: Step) -> TCPConn | None:
    addresses = await _targets(run, step)
    port = step.target_port()
    failure = F.TIMEOUT
    for ip in addresses[:MAX_ADDRESSES]:
        run.result["address"] = endpoint(ip, port)
        try:
            return await tcp_connect(run.trace, run.txid, ip, port, run.deadline)
        except Exception as exc:
            failure = F.classify(exc)
    if addresses:
        run.result["failure"], run.result["failed_step"] = failure, "tcp_connect"
    return None


async def _tcp(run: _Run, step: Step) -> None:
    conn = await _connect(run, step)
    if conn is not None:
        conn.close()


async def _tls_and_http(run: _Run, step: Step) -> None:
    conn = await _connect(run, step)
    if conn is None:
        return
    try:
        stream: Any = conn
        alpn: str | None = None
        if step.kind == "tls" or step.scheme == "https":
            offered = ("http/1.1",) if step.kind == "http" else ("h2", "http/1.1")
            try:
                session = await tls_handshake(
                    conn, step.server_name or step.host, run.deadline, ca_bundle=run.config.ca_bundle,
                    verify=step.verify, alpn=offered,
                )  # fmt: skip
            except Exception as exc:
                run.result["failure"], run.result["failed_step"] = F.classify(exc), "tls_handshake"
                return
            stream, alpn = session, session.alpn
            run.result.update(tls_version=session.obj.version(), alpn=alpn)
        if step.kind == "http":
            host = step.host or conn.address.rsplit(":", 1)[0]
            limit = TRACE_LIMITS.max_body
            get = Get.to(step.scheme, host, step.target_port(), step.path, max_body=limit)
            got = await http_get(stream, run.trace, run.txid, get, run.deadline, alpn=alpn)
            run.result.update(status=got.status, body_bytes=len(got.body), truncated=got.truncated)
            if got.failure is not None:
                run.result["failure"], run.result["failed_step"] = got.failure, "http_request"
    finally:
        conn.close()


async def _udp(run: _Run, step: Step) -> None:
    addresses = await _targets(run, step)
    if not addresses:
        return
    port = step.target_port()
    run.result["address"] = endpoint(addresses[0], port)
    kind: Literal["stun", "turn"] = "turn" if step.kind == "turn" else "stun"
    got = await stun_exchange(run.trace, run.txid, kind, addresses[0], port, run.deadline)
    run.result.update(failure=got.failure, error_code=got.error_code,
                  mapped=got.mapped_address is not None)  # fmt: skip
    if got.failure is not None:
        run.result["failed_step"] = "udp_exchange"


_STEPS = {
    "dns": _dns,
    "tcp": _tcp,
    "tls": _tls_and_http,
    "http": _tls_and_http,
    "stun": _udp,
    "turn": _udp,
}

"""The measurement format as typed models (``docs/spec/ts-msgwatch-service.md``).

Rules:

- One ``TypedDict`` per object of the spec, a key per key, in the spec's words; the models are
  plain typing (no pydantic: the probe must not need it), so a writer can be checked by mypy and
  a reader can be walked at run time by :mod:`msgwatch.measurement.validate`.
- A key the writer always writes is required; one it writes only sometimes is ``NotRequired``
  (the spec says when). Extra keys are allowed everywhere: OONI's readers ignore them, and a
  newer probe may add some.
- A rule beyond the type is an ``Annotated`` :class:`Check` (a failure string, a time, an AS
  number): the validator applies it, the type checker sees the plain type.
- ``t0``/``t`` of one object are checked together by the validator (``0 <= t0 <= t``).

This module is the model only: which test name uses which model is in
:mod:`msgwatch.measurement.registry`.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from msgwatch.measurement import vocab


@dataclass(frozen=True)
class Check:
    """A rule on a value beyond its type: ``accepts(value)``, ``says`` what it requires."""

    says: str
    accepts: Callable[[Any], bool]


_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_ASN = re.compile(r"AS\d{1,10}")
_CC = re.compile(r"[A-Z]{2}")

FAILURE = Check("a failure string of the spec, or null", lambda v: v is None or vocab.is_failure(v))
TIME = Check("'YYYY-MM-DD hh:mm:ss'", lambda v: _TIME.fullmatch(v) is not None)
ASN = Check("AS<n>", lambda v: _ASN.fullmatch(v) is not None)
CC = Check("two upper-case letters", lambda v: _CC.fullmatch(v) is not None)
SCRUBBED = Check('"127.0.0.1" (scrubbed)', lambda v: v == "127.0.0.1")

Failure = Annotated[str | None, FAILURE]
Time = Annotated[str, TIME]
Seconds = float
"""Seconds since the measurement's start (``t0``, ``t``)."""


class Base64(TypedDict):
    """Bytes: ``{"format": "base64", "data": ...}``."""

    format: Literal["base64"]
    data: str


# --- the envelope (df-000) -------------------------------------------------------------------------


class OoniEnvelope(TypedDict):
    """df-000 as probes of any kind write it: what the collector requires, the rest typed when
    present (real OONI measurements lack keys, and old ones use other types)."""

    test_name: str
    measurement_start_time: Time
    test_keys: dict[str, Any] | None
    software_name: str
    software_version: str
    probe_asn: NotRequired[Annotated[str, ASN]]
    probe_cc: NotRequired[str]
    test_version: NotRequired[str | None]
    report_id: NotRequired[str | None]


class Envelope(TypedDict):
    """df-000 as msgwatch writes it (spec, "Envelope")."""

    annotations: dict[str, str]
    data_format_version: Literal["0.2.0"]
    extensions: dict[str, int]
    input: str | None
    measurement_start_time: Time
    options: list[Any]
    probe_asn: Annotated[str, ASN]
    probe_cc: Annotated[str, CC]
    probe_ip: Annotated[str, SCRUBBED]
    probe_network_name: str
    report_id: str
    resolver_asn: str
    resolver_ip: str
    resolver_network_name: str
    software_name: str
    software_version: str
    test_helpers: dict[str, Any]
    test_keys: dict[str, Any]
    test_name: str
    test_runtime: float
    test_start_time: Time
    test_version: str


# --- the standard keys (OONI's sub-formats; only what msgwatch relies on is required) ------------


class Answer(TypedDict):
    answer_type: str
    ipv4: NotRequired[str]
    ipv6: NotRequired[str]
    hostname: NotRequired[str]
    ttl: NotRequired[int | None]
    asn: NotRequired[int]
    as_org_name: NotRequired[str]


class Query(TypedDict):
    """df-002."""

    hostname: NotRequired[str]
    query_type: NotRequired[str]
    engine: NotRequired[str]
    resolver_address: NotRequired[str]
    answers: NotRequired[list[Answer] | None]
    raw_response: NotRequired[str | None]
    rcode: NotRequired[int | None]
    tags: NotRequired[list[str] | None]
    failure: Failure
    t0: NotRequired[Seconds | None]
    t: Seconds
    transaction_id: int


class TcpStatus(TypedDict):
    success: bool
    failure: Failure
    blocked: bool | None


class TcpConnect(TypedDict):
    """df-005."""

    ip: str
    port: int
    status: TcpStatus
    t0: NotRequired[Seconds | None]
    t: Seconds
    transaction_id: int


class TlsHandshake(TypedDict):
    """df-006, with ``offered_alpn``."""

    network: NotRequired[str]
    address: NotRequired[str]
    server_name: NotRequired[str | None]
    alpn: NotRequired[list[str] | None]
    offered_alpn: NotRequired[list[str] | None]
    negotiated_protocol: NotRequired[str | None]
    tls_version: NotRequired[str | None]
    cipher_suite: NotRequired[str | None]
    no_tls_verify: NotRequired[bool]
    peer_certificates: NotRequired[list[Base64] | None]
    tags: NotRequired[list[str] | None]
    failure: Failure
    t0: NotRequired[Seconds | None]
    t: Seconds
    transaction_id: int


class HttpRequest(TypedDict):
    url: str
    method: str
    headers: NotRequired[dict[str, str]]
    headers_list: NotRequired[list[list[str]]]
    body: NotRequired[str | Base64 | None]
    body_is_truncated: NotRequired[bool]


class HttpResponse(TypedDict):
    code: NotRequired[int | None]
    headers: NotRequired[dict[str, str]]
    headers_list: NotRequired[list[list[str]]]
    body: NotRequired[str | Base64 | None]
    body_is_truncated: bool
    body_length: NotRequired[int]


class HttpTransaction(TypedDict):
    """df-001 (``requests``, most recent first)."""

    request: NotRequired[HttpRequest]
    response: NotRequired[HttpResponse | None]
    network: NotRequired[str]
    address: NotRequired[str]
    alpn: NotRequired[str | None]
    failure: Failure
    t0: NotRequired[Seconds | None]
    t: Seconds
    transaction_id: int


class NetworkEvent(TypedDict):
    """df-008."""

    operation: str
    address: NotRequired[str | None]
    proto: NotRequired[str | None]
    num_bytes: NotRequired[int | None]
    failure: Failure
    t0: NotRequired[Seconds | None]
    t: Seconds
    transaction_id: int


# --- msgwatch's keys -------------------------------------------------------------------------------


class FunctionEntry(TypedDict):
    """``msgwatch_functions[]``."""

    function: vocab.Function
    mode: Literal["any_of", "all_of"]
    coverage: Literal["full", "signalling"]
    endpoints: list[str]
    call_ports: list[int]
    replay_seconds: float


class Target(TypedDict):
    """``msgwatch_targets[]``: one chain to one endpoint."""

    function: vocab.Function
    role: vocab.Role
    endpoint_id: str
    protocol: str
    transport: str
    host: str | None
    address: str | None
    port: int | None
    transaction_ids: list[int]
    failure: Failure
    failed_step: vocab.FailedStep | None
    attempt: int
    not_measured: vocab.NotMeasured | None


class StunRequest(TypedDict):
    method: Literal["binding", "allocate"]
    transaction_id: str
    num_bytes: int


class StunAttempt(TypedDict):
    t0: Seconds
    num_bytes: int


StunResponse = TypedDict(
    "StunResponse",
    {
        "t": Seconds,
        "num_bytes": int,
        "class": Literal["success", "error", "invalid"],
        "error_code": int | None,
        "reason": str | None,
        "realm": str | None,
        "nonce_present": bool,
        "mapped_address": str | None,
        "software": str | None,
        "raw": Base64,
    },
)


class UDPExchange(TypedDict):
    """``msgwatch_udp_exchanges[]``: one STUN/TURN transaction."""

    protocol: Literal["stun", "turn"]
    address: str
    transport: Literal["udp", "tcp", "tls"]
    request: StunRequest
    attempts: list[StunAttempt]
    responses: list[StunResponse]
    failure: Failure
    t0: Seconds
    t: Seconds
    transaction_id: int


class Throughput(TypedDict):
    """``msgwatch_throughput[]``: one bounded download."""

    transaction_id: int
    server_name: str
    control: bool
    address: str
    path: str
    bytes: int
    seconds: float
    kbit_s: float
    failure: Failure
    t0: NotRequired[Seconds]
    t: NotRequired[Seconds]


class AppHandshake(TypedDict):
    """``msgwatch_app_handshakes[]``: a service protocol's first exchange."""

    protocol: Literal["mtproto", "whatsapp"]
    address: str
    failure: Failure
    t0: Seconds
    t: Seconds
    transaction_id: int
    request_bytes: int
    response_bytes: int
    response: Base64 | None
    server_hello: NotRequired[bool]


class Interval(TypedDict):
    """100 ms of a replay as the probe counted it."""

    t: float
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int


class ReplayProbe(TypedDict, total=False):
    """A replay's ``probe``: the probe's own lag and drops (empty when no socket was opened)."""

    monitored: bool
    loop_lag: float | None
    stalled: float | None
    late_sends: int
    send_lag: float
    socket_drops: int | None
    queue_drops: int
    listened: float
    cut: bool
    late_echoes: int
    sent_confirmed: bool


class HelperCounts(TypedDict, total=False):
    """A replay's ``helper``: the helper's own counts of the flow (absent when it failed)."""

    transaction_id: int
    failure: Failure
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    interval: float | None
    intervals: list[dict[str, Any]]
    truncated: bool
    declined: dict[str, Any] | None
    stalls: dict[str, Any] | None
    upstream_loss: float | None
    downstream_loss: float | None
    originated: dict[str, Any] | None


class ReplayRecord(TypedDict):
    """``msgwatch_replays[]``: one call-traffic replay to (or, downstream, from) a test helper."""

    transaction_id: int
    role: vocab.Role
    profile: str
    variant: str
    marker: str | None
    port: int
    address: str
    transport: Literal["udp"]
    round: int | None
    attempt: int
    sent_packets: int
    sent_bytes: int
    received_packets: int
    received_bytes: int
    loss: float
    jitter_ms: float | None
    marked_sent: int
    marked_received: int
    signature_sent: int
    signature_received: int
    intervals: list[Interval]
    probe: ReplayProbe
    failure: Failure
    t0: Seconds
    t: Seconds
    direction: NotRequired[Literal["down"]]
    send: NotRequired[dict[str, Any] | None]
    send_failure: NotRequired[Failure]
    helper: NotRequired[HelperCounts]


class HelperView(TypedDict):
    """``msgwatch_helper_views[]``: the test helper's own view, over its control API."""

    transaction_id: int
    helper: str
    steps: list[dict[str, Any]]
    results: list[dict[str, Any]]
    helper_trace: NotRequired[dict[str, Any] | None]
    failure: Failure
    t0: Seconds
    t: Seconds


class ProbeLag(TypedDict):
    """``msgwatch_probe_lag``: the probe's own event-loop lag over the run."""

    interval: float
    tolerance: float
    samples: int
    max_lag: float
    stalled: float
    stall_count: int
    stalls: list[list[float]]


class ByteCount(TypedDict):
    """``msgwatch_bytes``: payload bytes this measurement's steps moved."""

    sent: int
    received: int


class EndpointCounts(TypedDict):
    total: int
    ok: int
    failed: int
    not_measured: NotRequired[int]


class VerdictRecord(TypedDict):
    """One function's verdict, as the analysis judges it (spec, "Verdicts"); before 0.3.0 also
    written by the probe into ``test_keys.msgwatch_verdicts``."""

    service: str
    function: str
    coverage: str
    call_path: bool
    scope: Literal["abroad", "all"] | None
    fallback: Literal["open", "closed", "none"] | None
    verdict: vocab.Verdict
    mechanism: str | None
    confidence: float
    rule_id: str
    rules_version: str
    evidence: list[int]
    endpoints: EndpointCounts
    explanation: str


class ServiceTestKeys(TypedDict):
    """``test_keys`` of ``msgwatch_service`` (the names are :mod:`~msgwatch.measurement.vocab`'s;
    a test checks they agree)."""

    queries: list[Query]
    tcp_connect: list[TcpConnect]
    tls_handshakes: list[TlsHandshake]
    requests: list[HttpTransaction]
    network_events: list[NetworkEvent]
    msgwatch_catalogue_version: str
    msgwatch_service: str
    msgwatch_service_networks: list[str]
    msgwatch_functions: list[FunctionEntry]
    msgwatch_test_helper: str | None
    msgwatch_targets: list[Target]
    msgwatch_udp_exchanges: list[UDPExchange]
    msgwatch_throughput: list[Throughput]
    msgwatch_app_handshakes: list[AppHandshake]
    msgwatch_replays: list[ReplayRecord]
    msgwatch_helper_views: list[HelperView]
    msgwatch_probe_lag: ProbeLag
    msgwatch_dropped_events: int
    msgwatch_bytes: ByteCount
    msgwatch_verdicts: NotRequired[list[VerdictRecord]]


# --- OONI's messenger tests (the keys msgwatch reads; msgwatch.collector.summary) ------------------

Status = str | None
"""OONI's ``"ok"``/``"blocked"``/...; null when the test could not tell."""


class WhatsappKeys(TypedDict, total=False):
    whatsapp_endpoints_status: Status
    whatsapp_web_status: Status
    whatsapp_web_failure: str | None
    registration_server_status: Status
    registration_server_failure: str | None


class TelegramKeys(TypedDict, total=False):
    telegram_tcp_blocking: bool | None
    telegram_http_blocking: bool | None
    telegram_web_status: Status
    telegram_web_failure: str | None


class SignalKeys(TypedDict, total=False):
    signal_backend_status: Status
    signal_backend_failure: str | None


class FacebookMessengerKeys(TypedDict, total=False):
    facebook_tcp_blocking: bool | None
    facebook_dns_blocking: bool | None


class WebConnectivityKeys(TypedDict, total=False):
    accessible: bool | None
    blocking: str | bool | None

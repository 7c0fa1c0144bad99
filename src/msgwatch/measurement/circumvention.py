"""The ``msgwatch_circumvention`` format as typed models (``docs/spec/ts-msgwatch-circumvention.md``).

Rules (those of :mod:`msgwatch.measurement.model`):

- One ``TypedDict`` per object of the spec, a key per key; a key every transport writes is
  required, one only some transports write (Tor's, OpenVPN's, Tor reachability's: OONI's names) is
  ``NotRequired``. Extra keys are allowed (a stage's detail is open).
- The models live apart from :mod:`msgwatch.measurement.model` so that ``msgwatch_service``'s
  fingerprint (``tests/measurement/test_spec.py``) moves only with its own keys.
- Failure strings: the transports name their own failures (``client_not_found``, ...), so a
  failure here is any lower-case name of at most 64 characters, or ``unknown_failure <text>``.
"""

import re
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from msgwatch.measurement import vocab
from msgwatch.measurement.model import (
    AppHandshake,
    Check,
    HttpTransaction,
    NetworkEvent,
    ProbeLag,
    Query,
    ReplayRecord,
    Seconds,
    TcpConnect,
    TlsHandshake,
)

TEST_NAME = "msgwatch_circumvention"
TEST_VERSION = "0.1.0"
EXTENSIONS = {
    "dnst": 0,
    "netevents": 0,
    "tcpconnect": 0,
    "tlshandshake": 0,
    "httpt": 0,
    "tunnel": 0,
}
STAGE_NAMES = ("resolve", "connect", "handshake", "tunnel", "transfer", "sustain")
TYPES = ("tor", "obfs4", "tor_reach", "openvpn", "wireguard", "shadowsocks", "socks5",
         "http_connect")  # fmt: skip
TRANSPORT_NAMES = {
    "tor": "vanilla", "obfs4": "obfs4", "tor_reach": "tor", "openvpn": "openvpn",
    "wireguard": "wireguard", "shadowsocks": "shadowsocks", "socks5": "socks5",
    "http_connect": "http_connect",
}  # fmt: skip
"""Entry type → OONI's ``transport_name`` (``vanilla`` for a plain Tor bootstrap)."""

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def is_failure(value: object) -> bool:
    """A failure string of this format: the service format's, or a lower-case name."""
    if vocab.is_failure(value):
        return True
    return type(value) is str and _NAME.fullmatch(value) is not None


FAILURE = Check("a failure string (a lower-case name or unknown_failure <text>), or null",
                lambda v: v is None or is_failure(v))  # fmt: skip
Failure = Annotated[str | None, FAILURE]

Stage = Literal["resolve", "connect", "handshake", "tunnel", "transfer", "sustain"]
Transport = Literal[
    "tor", "obfs4", "tor_reach", "openvpn", "wireguard", "shadowsocks", "socks5", "http_connect"
]


class StageEntry(TypedDict):
    """``stages[]``: one stage as the transport or the runner recorded it (detail keys extra:
    the spec names those the judge may rely on)."""

    stage: Stage
    t0: Seconds
    t: Seconds | None
    failure: Failure
    budget: NotRequired[float | None]
    problems: NotRequired[list[str]]
    addresses: NotRequired[list[str]]
    address: NotRequired[str | None]
    progress: NotRequired[int | None]
    progress_tag: NotRequired[str | None]
    progress_age: NotRequired[float | None]
    accessible: NotRequired[int]
    bytes_sent: NotRequired[int]
    bytes_received: NotRequired[int]
    seconds: NotRequired[float]
    stalled_at: NotRequired[int | None]
    last_echo: NotRequired[float | None]
    echo_rate: NotRequired[int]
    idle: NotRequired[float]
    stall_seconds: NotRequired[float]
    rate: NotRequired[int]


class EntryInfo(TypedDict):
    """``entry``: the endpoint, never its params."""

    name: str
    type: Transport
    address: str
    port: int | None
    protocol: Literal["tcp", "udp"]
    source: str
    private: bool


class Control(TypedDict):
    """``control``: the probe's direct path to the test helper."""

    helper: str
    port: int
    failure: Failure
    t0: Seconds
    t: Seconds


class ThroughTarget(TypedDict):
    """``through[].target``: the text endpoint tried through the tunnel."""

    endpoint: str
    host: str | None
    port: int
    protocol: str
    address: str | None
    resolved_outside: bool


ThroughStep = Literal["resolve", "connect", "tls", "app"]


class Through(TypedDict):
    """``through[]``: one service function tried through the tunnel."""

    service: str
    function: str
    measured: bool
    failure: Failure
    reason: NotRequired[str]
    failed_step: NotRequired[ThroughStep | None]
    resolved_outside: NotRequired[bool]
    target: NotRequired[ThroughTarget | None]
    tls: NotRequired[TlsHandshake | None]
    app: NotRequired[AppHandshake | None]
    replays: NotRequired[list[ReplayRecord]]


class OpenvpnHandshake(TypedDict):
    """``openvpn_handshake[]`` (OONI's ts-040)."""

    handshake_time: NotRequired[float | None]
    endpoint: NotRequired[str]
    ip: NotRequired[str]
    port: NotRequired[int]
    transport: NotRequired[str]
    provider: NotRequired[str]
    openvpn_options: NotRequired[dict[str, Any]]
    t0: NotRequired[Seconds | None]
    t: NotRequired[Seconds | None]
    transaction_id: NotRequired[int]
    failure: Failure


class WireguardHandshake(TypedDict):
    """``wireguard_handshake``: the WireGuard handshake as ``wg`` saw it (no OONI test)."""

    endpoint: str
    ip: str
    port: int
    transport: Literal["udp"]
    t0: Seconds | None
    t: Seconds | None
    handshake_time: float | None
    latest_handshake: int | None
    transaction_id: int
    failure: Failure


class UdpAssociate(TypedDict):
    """``udp_associate``: one datagram through the proxy's UDP relay to the helper's echo."""

    failure: Failure
    echo: bool
    seconds: float


class TorTarget(TypedDict):
    """``targets.<id>`` (OONI's ts-023)."""

    failure: Failure
    summary: NotRequired[dict[str, Any]]
    target_address: str
    target_name: NotRequired[str]
    target_protocol: str
    target_source: NotRequired[str]
    tcp_connect: NotRequired[list[TcpConnect]]
    tls_handshakes: NotRequired[list[TlsHandshake]]
    network_events: NotRequired[list[NetworkEvent]]
    requests: NotRequired[list[HttpTransaction]]


class Bytes(TypedDict):
    sent: int
    received: int


class CircumventionTestKeys(TypedDict):
    """``test_keys`` of ``msgwatch_circumvention``."""

    queries: list[Query]
    tcp_connect: list[TcpConnect]
    tls_handshakes: list[TlsHandshake]
    requests: list[HttpTransaction]
    network_events: list[NetworkEvent]
    transport: Transport
    transport_name: str
    entry: EntryInfo
    stages: list[StageEntry]
    failed_stage: Stage | None
    failure: Failure
    success: bool
    bootstrap_time: float
    budget: float
    control: Control | None
    probe_lag: NotRequired[ProbeLag]
    through: list[Through]
    msgwatch_dropped_events: int
    msgwatch_bytes: Bytes
    # Tor (OONI's vanilla_tor / torsf)
    tor_progress: NotRequired[int]
    tor_progress_tag: NotRequired[str]
    tor_progress_summary: NotRequired[str]
    tor_logs: NotRequired[list[str]]
    tor_version: NotRequired[str]
    timeout: NotRequired[float]
    error: NotRequired[str | None]
    # Tor reachability (OONI's tor)
    targets: NotRequired[dict[str, TorTarget]]
    dir_port_total: NotRequired[int]
    dir_port_accessible: NotRequired[int]
    or_port_total: NotRequired[int]
    or_port_accessible: NotRequired[int]
    or_port_dirauth_total: NotRequired[int]
    or_port_dirauth_accessible: NotRequired[int]
    obfs4_total: NotRequired[int]
    obfs4_accessible: NotRequired[int]
    # OpenVPN (OONI's openvpn)
    openvpn_handshake: NotRequired[list[OpenvpnHandshake]]
    tunnel: NotRequired[str]
    # WireGuard, the proxies' UDP relay (no OONI test)
    wireguard_handshake: NotRequired[WireguardHandshake]
    udp_associate: NotRequired[UdpAssociate]

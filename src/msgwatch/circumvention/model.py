"""What every circumvention transport shares: the entry it tests, the run's context, the stages it
records, and the tunnel it yields once up.

Stages, in order (:data:`STAGES`): ``resolve`` (the endpoint's name, when it has one), ``connect``
(TCP to the first hop; UDP transports have none), ``handshake`` (the transport's own: TLS, OpenVPN's
control channel, WireGuard's initiation/response, SOCKS/HTTP CONNECT negotiation, Tor's link to the
first hop), ``tunnel`` (usable: Tor bootstrapped to 100 %, OpenVPN's "Initialization Sequence
Completed", a WireGuard handshake seen by ``wg``, a proxy's CONNECT to the helper answered),
``transfer`` (at least :data:`TRANSFER_BYTES` through the tunnel to the test helper's echo and
back) and ``sustain`` (traffic for ``Context.sustain_seconds``: a censor may cut a flow after some
bytes). A transport module records the first four through :meth:`Run.stage`; the runner records
the last two and what goes through the tunnel (text, calls).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from msgwatch.failures import classify
from msgwatch.steps.net import TCPConn, UDPSocket
from msgwatch.steps.trace import Trace

STAGES = ("resolve", "connect", "handshake", "tunnel", "transfer", "sustain")
TRANSFER_BYTES = 64 * 1024
"""Bytes sent through a tunnel (and echoed back) in the ``transfer`` stage."""
TYPES = ("tor", "obfs4", "tor_reach", "openvpn", "wireguard", "shadowsocks", "socks5",
         "http_connect")  # fmt: skip
"""Entry types (:mod:`msgwatch.circumvention.registry` names the module of each)."""


@dataclass(frozen=True)
class Entry:
    """One endpoint to test. ``params`` are the type's own (keys, certificates, passwords, bridge
    lines), checked by its module's ``check_params``; never written into a measurement whole."""

    name: str
    """Unique in a run, ``[a-z0-9][a-z0-9-]{0,39}``: the verdict table's row (``service``)."""
    type: str
    address: str
    """An IP literal or a host name (then the ``resolve`` stage comes first)."""
    port: int
    protocol: str = "tcp"
    """``tcp`` or ``udp`` (OpenVPN and WireGuard over UDP; Shadowsocks's UDP relay is a param)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    """Where the endpoint comes from: a URL and date for the catalogue's, ``user`` for a user's."""
    private: bool = False
    """A user's own endpoint: its address and params are scrubbed from the measurement (as OONI's
    ``tor`` test scrubs private bridges)."""


@dataclass
class Context:
    """What a circumvention run needs besides the entries."""

    workdir: Path
    """A private directory for this run (mode 0700); each transport makes its own sub-directory
    for its client's configuration, keys, state and logs. Removed after the run."""
    helper: str
    """The test helper abroad (an IP): ``transfer``/``sustain`` go to its TCP echo, calls to its
    UDP echo on the call ports."""
    helper_port: int = 40000
    """The helper's TCP and UDP echo port for ``transfer`` and ``sustain`` (the neutral port)."""
    ca_bundle: Path | None = None
    """CA certificates for the text path's TLS through the tunnel (the lab's CA in the lab)."""
    resolver: str | None = None
    """``ip:port`` of the resolver for the ``resolve`` stage (None: the system's)."""
    budgets: Mapping[str, float] = field(default_factory=dict)
    """Seconds per entry type for bringing the tunnel up (defaults: :data:`BUDGETS`)."""
    sustain_seconds: float = 5.0
    executables: Mapping[str, str] = field(default_factory=dict)
    """Overrides of client executables by name (``tor``, ``openvpn``, ``wireguard-go``, ``wg``,
    ``ss-local``, ``obfs4proxy``); otherwise found on the PATH and in /usr/sbin."""

    def budget(self, kind: str) -> float:
        return float(self.budgets.get(kind, BUDGETS.get(kind, 20.0)))


BUDGETS: Mapping[str, float] = {
    "tor": 90.0, "obfs4": 90.0, "tor_reach": 20.0, "openvpn": 25.0, "wireguard": 15.0,
    "shadowsocks": 15.0, "socks5": 15.0, "http_connect": 15.0,
}  # fmt: skip
"""Default seconds to bring each type's tunnel up (a Tor bootstrap does not fit a 10 s step)."""


@dataclass
class StageRecord:
    stage: str
    t0: float
    t: float | None = None
    failure: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "t0": self.t0, "t": self.t, "failure": self.failure,
                **self.detail}  # fmt: skip


class StageFailed(Exception):
    """A stage failed (its record carries the failure string); raised out of :meth:`Run.stage`."""

    def __init__(self, record: StageRecord) -> None:
        super().__init__(f"{record.stage}: {record.failure}")
        self.record = record


@dataclass
class Run:
    """The record of one entry's test: the trace (network events, TCP connects, TLS handshakes),
    the stages, and the type's own test keys (``keys``: e.g. Tor's ``tor_progress``, OpenVPN's
    ``openvpn_handshake``, following OONI's names where OONI has the test)."""

    entry: Entry
    trace: Trace
    stages: list[StageRecord] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)
    endpoint_addresses: set[str] = field(default_factory=set)
    """Every address the transport resolved or contacted **for the entry** (what its name
    resolved to, Tor's first hops, a ``tor_reach`` entry's targets, a pushed server address):
    a private entry's are scrubbed from its measurement, with the ports beside them
    (:mod:`msgwatch.circumvention.measurement`). Not the helper's, not the probe's own."""

    @contextlib.asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """Record stage ``name`` around the block; yields its ``detail`` dict to fill. An exception
        in the block becomes the stage's failure (:func:`msgwatch.failures.classify`) and is raised
        again as :class:`StageFailed`; cancellation passes through untouched."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        record = StageRecord(name, self.trace.now())
        self.stages.append(record)
        try:
            yield record.detail
        except asyncio.CancelledError:
            record.t, record.failure = self.trace.now(), "interrupted"
            raise
        except StageFailed:
            record.t = self.trace.now()
            record.failure = record.failure or "stage_failed"
            raise
        except Exception as exc:
            record.t, record.failure = self.trace.now(), classify(exc)
            raise StageFailed(record) from exc
        record.t = self.trace.now()

    def fail(self, name: str, failure: str, **detail: Any) -> StageFailed:
        """Record stage ``name`` as failed now with ``failure`` (e.g. a bootstrap that stopped at
        a given progress); returns the exception to raise."""
        now = self.trace.now()
        record = StageRecord(name, now, now, failure, dict(detail))
        self.stages.append(record)
        return StageFailed(record)

    @property
    def failed_stage(self) -> str | None:
        return next((s.stage for s in self.stages if s.failure is not None), None)

    @property
    def failure(self) -> str | None:
        return next((s.failure for s in self.stages if s.failure is not None), None)


class Tunnel(Protocol):
    """A transport that came up: what goes through it. Every method checks the destination
    against the fence (:func:`msgwatch.fence.check_destination`) before anything is sent."""

    @property
    def carries_udp(self) -> bool:
        """Whether :meth:`open_udp` can carry datagrams (Tor and HTTP CONNECT cannot)."""
        ...

    async def open_stream(self, trace: Trace, txid: int, ip: str, port: int,
                          deadline: float) -> TCPConn:  # fmt: skip
        """A traced TCP connection to ``ip:port`` through the tunnel."""
        ...

    async def open_udp(self, trace: Trace, txid: int, ip: str, port: int,
                       deadline: float) -> UDPSocket:  # fmt: skip
        """A traced, connected UDP socket to ``ip:port`` through the tunnel (raises
        ``ProbeFailure`` when the transport carries no UDP)."""
        ...

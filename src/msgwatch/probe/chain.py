"""One chain's parts: what it is configured with, what it is given, and what it returns.

A chain measures one catalogue endpoint (:mod:`msgwatch.probe.chains` runs it). Its protocol's
part (:mod:`msgwatch.probe.protocols`) is given a :class:`Chain` — the trace, the outcome being
filled in, the addresses the name resolved to, the configuration and the chain's one deadline — and
fills in :class:`ChainOutcome`: a protocol's chain never raises, it says which step failed and how.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgwatch.catalogue import Endpoint
from msgwatch.steps.dns import DNSResult
from msgwatch.steps.http import HTTPResult
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

    def fail(self, failure: str, step: str) -> None:
        """Record the failed step and how it failed."""
        self.failure, self.failed_step = failure, step


@dataclass
class Chain:
    """What a protocol's part of a chain is given (the endpoint is ``outcome.endpoint``)."""

    trace: Trace
    outcome: ChainOutcome
    addresses: list[str]
    """The endpoint's addresses: its own ``address``, or what its name resolved to."""
    config: ChainConfig
    deadline: float
    """Loop time by which every step of the chain is done."""
    extra_roots: str | None = None
    """The service's own root CAs (PEM), trusted besides ``config.ca_bundle``."""

    @property
    def endpoint(self) -> Endpoint:
        return self.outcome.endpoint

    @property
    def txid(self) -> int:
        """The chain's own transaction (its first)."""
        return self.outcome.transaction_ids[0]

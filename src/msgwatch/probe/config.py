"""A run's configuration: every field says what it means and what its default is.

:class:`RunConfig` is the whole run's (the runner's, and what every test of the run reads);
:class:`~msgwatch.probe.chain.ChainConfig`, inside it, is each chain's. The defaults are the
library's: the session and the CLI take theirs from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgwatch.measurement.envelope import TEST_NAME
from msgwatch.probe.calls import ROUNDS
from msgwatch.probe.chain import ChainConfig
from msgwatch.wire.helper_api import CONTROL_PORT, NEUTRAL_PORT


@dataclass(frozen=True)
class RunConfig:
    """The run's configuration (see :mod:`msgwatch.probe.runner` for how a run uses it)."""

    chain: ChainConfig = field(default_factory=ChainConfig)
    timeout: float = 10.0
    """Seconds each chain has, from the moment it gets a slot (every step of it included)."""
    concurrency: int | None = None
    """Chains at once; None: from the file-descriptor limit (:func:`slots_for`)."""
    run_timeout: float | None = None
    """Seconds: the whole run's deadline. None: as many ``timeout`` as the waves of slots and the
    retries need, plus half a timeout. A chain that cannot get its whole ``timeout`` before this
    deadline is not run (``not_measured: "no_time"``)."""
    retry: bool = True
    """Try each failed chain once more, later in the run (see the module's notes)."""
    retry_after: float = 0.5
    """Seconds between a chain's failure and its second attempt."""
    probe_addresses: tuple[str, ...] = ()
    """The probe's own addresses known beforehand (e.g. a configured public address): scrubbed
    from every measurement along with those the run learns."""
    helper: str | None = None
    """Address of a test helper: with one, functions that list ``call_ports`` also get the call
    path measured (STUN to the helper on each call port)."""
    functions: tuple[str, ...] | None = None
    """Only these functions (all when None)."""
    probe_asn: str | None = None
    probe_cc: str | None = None
    probe_network_name: str = ""
    geoip_databases: tuple[str, ...] = ()
    """Local MaxMind-format databases giving the network (ASN, country) of the probe's addresses
    when ``probe_asn``/``probe_cc`` are not given (:mod:`msgwatch.probe.network`)."""
    sequential: bool = False
    replay_seconds: float = 0.0
    """With a helper: seconds of call-traffic replay per kind (the original's rounds together, the
    control's rounds together, the neutral replay) of voice and video functions that list call
    ports; 0 turns replays off."""
    helper_control_port: int = CONTROL_PORT
    """The test helpers' control API port (their view of the relays, their counts of the replays)."""
    replay_rounds: int = ROUNDS
    """Original/control pairs per function, each ``replay_seconds / replay_rounds`` long."""
    neutral_port: int = NEUTRAL_PORT
    """The helper's port that no messenger uses for calls (the plain echo's "UDP in general")."""
    domestic_helper: str | None = None
    """A test helper inside the country: the original replay is also sent there, which tells
    "calls abroad are blocked" from "calls are blocked"."""
    replay_seed: int | None = None
    """Seed of the replays' schedules and order (a random one per run when None)."""
    budget_bytes: int | None = 20 * 1000 * 1000
    """Bytes the whole run may send and receive (None: no limit); sending past it fails the
    step with ``budget_exceeded``."""
    tests: tuple[str, ...] = (TEST_NAME,)
    """The tests to run, by ``test_name`` (:data:`msgwatch.probe.nettests.NETTESTS`)."""

"""The parameters of one ``msgwatch run``, and their defaults: :class:`RunOptions`.

Rules:

- **One home for the defaults.** ``msgwatch run``'s options take theirs from ``RunOptions()``
  (:mod:`msgwatch.cli.run`); a library caller (the benchmarks, the lab's observatory) gets the
  same run by changing only the fields it cares about (``dataclasses.replace``).
- **Light on purpose.** ``msgwatch run --help`` shows these defaults without loading the probe,
  the wire codecs or asyncio (tests/unit/test_cli_startup.py), so the values that are the
  library's own are mirrored here, each naming the constant it mirrors, and
  ``tests/session/test_options.py`` checks that every mirror equals its constant. The others
  (``budget_mb``) are the session's own.
- **Parsed, not text.** Values arrive parsed (a resolver is ``(host, port)``, lists are tuples);
  what only the library can check (function names, GeoIP databases, addresses, collector URLs)
  is checked by :func:`msgwatch.session.run.prepare`, which names the option at fault.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunOptions:
    """What to measure, how, and where the measurements go."""

    services: tuple[str, ...] | None = None
    """Service ids (None: every service of the catalogue)."""
    functions: tuple[str, ...] | None = None
    """Functions to measure (None: all)."""
    catalogue: str | None = None
    """Catalogue directory (None: the shipped one)."""
    resolver: tuple[str, int] | None = None
    """DNS server to query over UDP (None: the system's)."""
    ca_bundle: str | None = None
    """Trusted CAs, PEM (None: the system's store)."""
    timeout: float = 10.0
    """Seconds each measurement chain has (mirrors ``probe.runner.RunConfig.timeout``)."""
    concurrency: int | None = None
    """Chains at once (None: from the file-descriptor limit)."""
    helper: str | None = None
    """Test helper address: adds the call path; needs consent (``assume_yes`` or asked)."""
    domestic_helper: str | None = None
    """A test helper inside the country (domestic calls)."""
    download_path: str | None = None
    """Path of a large object for media throughput tests."""
    replay_seed: int | None = None
    """Seed of the replays (None: a random one)."""
    replay_seconds: float = 0.0
    """Seconds of each call-traffic replay (mirrors ``RunConfig.replay_seconds``; 0: none)."""
    replay_rounds: int = 3
    """Original/control pairs of a replay (mirrors ``probe.calls.ROUNDS``)."""
    neutral_port: int = 40000
    """The helper's plain-UDP control port (mirrors ``wire.helper_api.NEUTRAL_PORT``)."""
    helper_control_port: int = 8765
    """The helper's control API port (mirrors ``wire.helper_api.CONTROL_PORT``)."""
    budget_mb: float = 40.0
    """Megabytes the run may send and receive in all (the session's own default)."""
    assume_yes: bool = False
    """Unattended: consent to call tests without asking."""
    output: str | None = None
    """``--output`` (msgwatch.session.output: a file, or a directory for the default name)."""
    probe_asn: str | None = None
    probe_cc: str | None = None
    geoip_databases: tuple[str, ...] = ()
    """MaxMind-format databases (none given: ``$MSGWATCH_GEOIP_DB``)."""
    probe_addresses: tuple[str, ...] = ()
    """The probe's public addresses, if known (looked up, and scrubbed)."""
    state_dir: str | None = None
    """The spool, the probe id and run.lock (None: ``$MSGWATCH_STATE_DIR`` or the default)."""
    collectors: tuple[str, ...] = ()
    """Collector URLs, tried in order (none given: ``$MSGWATCH_COLLECTORS``)."""
    collector_ca: str | None = None
    collector_token_file: str | None = None
    submit: bool = True
    """False: spool the measurements, submit nothing."""
    submit_timeout: float = 10.0
    """Seconds to connect to a collector (mirrors ``spool.client.Client``'s connect timeout)."""

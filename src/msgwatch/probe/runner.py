"""The runner: every endpoint of every selected service, concurrently, each chain with its time.

How a run works:

1. The fence (``MSGWATCH_ALLOWED_NETWORKS``) is checked first: a malformed or empty value raises
   :class:`~msgwatch.fence.FenceError` before anything is sent.
2. Chains run concurrently in ``concurrency`` slots. By default the slots are sized from the
   file-descriptor limit (:func:`slots_for`; the soft limit is raised towards the hard one first),
   since a slot costs a few descriptors and nothing else worth bounding. Starts are paced
   (:data:`START_INTERVAL`), so that a thousand chains starting at once do not stall the loop
   into the first chains' time.
3. **Each chain gets its own time**: its deadline is ``timeout`` from the moment it gets a slot,
   never from the start of the run, so a chain that waited for a slot is not cut short. The run
   has a deadline of its own (``run_timeout``; by default as many chain timeouts as the waves of
   slots and the retries need): a chain that cannot get its whole time before it is **not run**
   and recorded as such (``not_measured: "no_time"``), with no step and no failure. When every
   chain fits in the slots (the usual case), the run takes about one timeout (two when chains
   fail: see 4).
4. **A single failure does not decide**: a chain that failed is tried once more, later in the run
   (``retry_after`` seconds after it failed, in a slot of its own, with its own time); both
   attempts are recorded (``attempt`` 1 and 2) and the judge reads a path that failed once and
   worked once as ``degraded`` (intermittent), one that failed both times by its failure. With a
   test helper, the failed endpoints of a redundant pool some of whose endpoints worked are then
   checked by the helper (role ``pool_view``): an endpoint that fails here while the helper
   reaches it makes the pool ``degraded``.
5. A destination the fence refused is not a measurement of the network: its target is recorded
   as ``not_measured: "fence"`` and the service's measurement is marked not to be spooled or
   submitted (:attr:`ServiceRun.measured`).
6. Each service has its own :class:`~msgwatch.steps.trace.Trace`, so each becomes one measurement;
   the traces share one set of the probe's own addresses. Only when **every** chain of every
   service is done are the measurements built and scrubbed — with every address the run learned
   anywhere (a STUN answer in one service scrubs a block page's echo in another) and those given
   in ``probe_addresses`` — and judged by :func:`msgwatch.analysis.verdicts.judge.judge`, from the
   measurement alone, as the analysis would.

``sequential=True`` runs the same chains one at a time (one slot): the baseline that
``benchmarks/`` compares against.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import resource
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.catalogue import Catalogue, Endpoint, FunctionTargets, Service
from msgwatch.failures import classify
from msgwatch.fence import NOT_ALLOWED, check_fence
from msgwatch.measurement.envelope import RunInfo, build_measurement
from msgwatch.probe.calls import ROUNDS, run_replays
from msgwatch.probe.chains import ChainConfig, ChainOutcome, run_chain
from msgwatch.probe.network import for_run
from msgwatch.steps import lag
from msgwatch.steps.control import HelperLink, helper_measure
from msgwatch.steps.trace import BUDGET_EXCEEDED, Budget, Trace
from msgwatch.wire.helper_api import CONTROL_PORT, NEUTRAL_PORT

Progress = Callable[[str, ChainOutcome], None]

FDS_PER_CHAIN = 4
"""Descriptors one chain may hold at once: its DNS socket, its connection, the benign-SNI control
handshake's connection, and one to spare (a throughput pair runs after the chain's own)."""
FD_RESERVE = 64
"""Descriptors kept for everything else (the event loop, files, the spool, the helper link)."""
MAX_SLOTS = 512
"""At most this many chains at once, however high the limit: one event loop drives them all, and
on two busy cores 1,360 at once stalled it into 83 false timeouts where waves of 112 had none
(benchmarks/run_blocked_catalogue.py at 8×)."""
POOL_VIEW_STEPS = 16
START_INTERVAL = 0.002
"""Seconds between two chains' starts. Starting a chain (a socket, a first packet) costs the
event loop about a millisecond; a thousand at once would stall it for a second or two, and that
time would be taken from the chains' own (measured: 154 false timeouts at 8× the catalogue
without it). Paced, a chain's clock starts when the loop can run it."""


def slots_for(nofile: int) -> int:
    """How many chains may run at once with ``nofile`` file descriptors."""
    return max(1, min(MAX_SLOTS, (nofile - FD_RESERVE) // FDS_PER_CHAIN))


def default_slots() -> int:
    """Slots from this process's descriptor limit, after raising the soft limit as far as the
    slots can use (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_SLOTS * FDS_PER_CHAIN + FD_RESERVE
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (OSError, ValueError):
            pass
    return slots_for(wanted if soft == resource.RLIM_INFINITY else soft)


@dataclass(frozen=True)
class RunConfig:
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


@dataclass
class ServiceRun:
    service: Service
    measurement: dict[str, Any]
    verdicts: list[dict[str, Any]]
    outcomes: list[ChainOutcome]

    @property
    def measured(self) -> bool:
        """False when the fence refused a destination of this service: the measurement shows the
        run's configuration, so it is kept out of the spool and never submitted."""
        return not any(o.not_measured == "fence" for o in self.outcomes)


def count_chains(
    services: list[Service], functions: tuple[str, ...] | None = None, helper: str | None = None
) -> int:
    return sum(
        len(targets(s, f, helper))
        for s in services
        for f in s.functions
        if functions is None or f.function in functions
    )


def targets(
    service: Service, function: FunctionTargets, helper: str | None
) -> list[tuple[str, Endpoint]]:
    """(role, endpoint) pairs for one function: its catalogue endpoints (role ``endpoint``) and,
    with a helper, one STUN endpoint on the helper per call port (role ``call_path``)."""
    out = [("endpoint", e) for e in function.endpoints]
    if helper is None or not function.call_ports or function.call_ports_source is None:
        return out
    source = next(s for s in service.sources if s.id == function.call_ports_source)
    for port in function.call_ports:
        endpoint = Endpoint(
            id=f"call-path/{port}",
            host=None,
            address=helper,
            port=port,
            transport="udp",
            protocol="stun",
            path="/",
            source=source.id,
            checked=source.checked,
            note="STUN to the test helper on one of the service's call ports",
        )
        out.append(("call_path", endpoint))
    return out


def _target_record(role: str, outcome: ChainOutcome) -> dict[str, Any]:
    endpoint = outcome.endpoint
    return {
        "function": outcome.function,
        "role": role,
        "endpoint_id": endpoint.id,
        "protocol": endpoint.protocol,
        "transport": endpoint.transport,
        "host": endpoint.host,
        "address": outcome.address or endpoint.address,
        "port": endpoint.port,
        "transaction_ids": list(outcome.transaction_ids),
        "failure": outcome.failure,
        "failed_step": outcome.failed_step,
        "attempt": outcome.attempt,
        "not_measured": outcome.not_measured,
    }


def _jobs(services: list[Service], config: RunConfig) -> int:
    chains = count_chains(services, config.functions, config.helper)
    if config.helper is None or config.replay_seconds <= 0:
        return chains
    return chains + sum(
        1
        for s in services
        for f in s.functions
        if config.functions is None or f.function in config.functions
    )


def run_seconds(jobs: int, slots: int, config: RunConfig) -> float:
    """The run's deadline, from its start, unless ``config.run_timeout`` gives one."""
    if config.run_timeout is not None:
        return config.run_timeout
    waves = max(1, math.ceil(jobs / max(1, slots)))
    attempts = 2 if config.retry else 1
    pacing = START_INTERVAL * jobs * attempts
    return config.timeout * (waves * attempts + 0.5) + config.retry_after * (attempts - 1) + pacing


def _not_run(function: str, endpoint: Endpoint, attempt: int) -> ChainOutcome:
    """A chain that never got its time: no step ran, so nothing failed."""
    return ChainOutcome(function, endpoint, [], attempt=attempt, not_measured="no_time")


def _retryable(outcome: ChainOutcome) -> bool:
    return (
        outcome.failure is not None
        and outcome.not_measured is None
        and outcome.failure != BUDGET_EXCEEDED
        and outcome.failed_step != "internal"
    )


def _fenced(outcome: ChainOutcome) -> ChainOutcome:
    """A destination the fence refused is not measured (the run's configuration, not a failure)."""
    if outcome.failure == NOT_ALLOWED:
        outcome.failure, outcome.failed_step = None, None
        outcome.not_measured = "fence"
    return outcome


def _view_step(outcome: ChainOutcome) -> dict[str, Any] | None:
    """What the test helper is asked about one failed endpoint (None: nothing it can check)."""
    endpoint = outcome.endpoint
    if endpoint.protocol == "dns":
        return None
    if endpoint.transport == "udp":
        kind = "turn" if endpoint.protocol == "turn" else "stun"
    elif endpoint.protocol in ("tls", "https") or endpoint.transport == "tls":
        kind = "tls"
    else:
        kind = "tcp"
    where = {"host": endpoint.host} if endpoint.host else {"address": endpoint.address}
    if kind == "tls" and not endpoint.host:
        kind = "tcp"
    return {"kind": kind, "port": endpoint.port, **where}


async def run(
    catalogue: Catalogue,
    services: list[Service],
    config: RunConfig,
    progress: Progress | None = None,
) -> list[ServiceRun]:
    """Measure ``services``; one :class:`ServiceRun` per service, in the given order.

    Raises :class:`~msgwatch.fence.FenceError` before anything is sent when the fence is
    malformed."""
    check_fence()
    loop = asyncio.get_running_loop()
    started_at = dt.datetime.now(dt.UTC)
    slots = 1 if config.sequential else (config.concurrency or default_slots())
    run_deadline = loop.time() + run_seconds(_jobs(services, config), slots, config)
    semaphore = asyncio.Semaphore(max(1, slots))
    next_start = [loop.time()]
    resolver_ip = config.chain.resolver[0] if config.chain.resolver else ""
    info = RunInfo.new(
        probe_asn=config.probe_asn,
        probe_cc=config.probe_cc,
        probe_network_name=config.probe_network_name,
        resolver_ip=resolver_ip,
        catalogue_version=catalogue.version,
        now=started_at,
    )

    async def slot() -> float | None:
        """A slot and the chain's own deadline, or None when the chain cannot get its whole time
        before the run's deadline (then no slot is held)."""
        latest = run_deadline - config.timeout
        if loop.time() > latest:
            return None
        try:
            async with asyncio.timeout_at(latest):
                await semaphore.acquire()
        except TimeoutError:
            return None
        now = loop.time()
        at = max(now, next_start[0])
        next_start[0] = at + START_INTERVAL
        if at > now:
            await asyncio.sleep(at - now)
        if loop.time() > latest:
            semaphore.release()
            return None
        return loop.time() + config.timeout

    async def attempt(
        trace: Trace, service: Service, function: str, endpoint: Endpoint, number: int
    ) -> ChainOutcome:
        limit = await slot()
        if limit is None:
            return _not_run(function, endpoint, number)
        try:
            outcome = await run_chain(
                trace, function, endpoint, config.chain, limit, service.trust_roots
            )
        finally:
            semaphore.release()
        outcome.attempt = number
        return _fenced(outcome)

    async def one(
        trace: Trace, service: Service, function: str, role: str, endpoint: Endpoint
    ) -> list[tuple[str, ChainOutcome]]:
        first = await attempt(trace, service, function, endpoint, 1)
        if progress is not None:
            progress(service.id, first)
        done = [(role, first)]
        if config.retry and _retryable(first):
            await asyncio.sleep(config.retry_after)
            done.append((role, await attempt(trace, service, function, endpoint, 2)))
        return done

    seed = config.replay_seed if config.replay_seed is not None else random.randrange(1 << 30)
    # One link per helper for the whole run: it queues the control connections to it.
    port = config.helper_control_port
    abroad = HelperLink(config.helper, port) if config.helper is not None else None
    domestic = HelperLink(config.domestic_helper, port) if config.domestic_helper else None

    async def replays(
        trace: Trace, service: Service, function: FunctionTargets
    ) -> list[tuple[str, ChainOutcome]]:
        assert abroad is not None
        limit = await slot()
        if limit is None:
            return []
        try:
            done = await run_replays(
                trace, service, function, abroad, config.replay_seconds, seed, limit,
                domestic, rounds=config.replay_rounds, neutral_port=config.neutral_port,
            )  # fmt: skip
        finally:
            semaphore.release()
        for _, outcome in done:
            _fenced(outcome)
            if progress is not None:
                progress(service.id, outcome)
        return done

    async def pool_view(
        trace: Trace, function: FunctionTargets, done: list[tuple[str, ChainOutcome]]
    ) -> list[tuple[str, ChainOutcome]]:
        """With a helper: its view of the pool's endpoints that failed every attempt here, when
        others of the pool worked (role ``pool_view``; the judge's ``pool.partial``)."""
        endpoints = [o for r, o in done if r == "endpoint"]
        ok = {o.endpoint.id for o in endpoints if o.ok and o.not_measured is None}
        failed = [o for o in endpoints if o.failure is not None and o.endpoint.id not in ok]
        failed = list({o.endpoint.id: o for o in failed}.values())
        steps = [s for s in map(_view_step, failed) if s is not None][:POOL_VIEW_STEPS]
        if abroad is None or function.mode != "any_of" or not ok or not steps:
            return []
        limit = await slot()
        if limit is None:
            return []
        txid = trace.new_transaction()
        try:
            record = await helper_measure(trace, txid, abroad, steps, limit)
        except Exception as exc:  # never fatal: the view is extra evidence
            record = {"failure": classify(exc)}
        finally:
            semaphore.release()
        endpoint = failed[0].endpoint.model_copy(update={"id": "pool-view"})
        outcome = ChainOutcome(function.function, endpoint, [txid], address=abroad.address)
        if record.get("failure") is not None:
            outcome.failure, outcome.failed_step = str(record["failure"]), "helper_view"
        return [("pool_view", outcome)]

    async def measure_function(
        trace: Trace, service: Service, function: FunctionTargets
    ) -> list[tuple[str, ChainOutcome]]:
        jobs = [
            one(trace, service, function.function, role, endpoint)
            for role, endpoint in targets(service, function, config.helper)
        ]
        if config.helper is not None and config.replay_seconds > 0:
            jobs.append(replays(trace, service, function))
        done = [pair for pairs in await asyncio.gather(*jobs) for pair in pairs]
        return done + await pool_view(trace, function, done)

    budget = Budget(limit=config.budget_bytes)
    known: set[str] = set()
    """The probe's own addresses, as any service of the run learns them."""
    traces: list[Trace] = []
    jobs: list[list[asyncio.Task[list[tuple[str, ChainOutcome]]]]] = []
    for service in services:
        trace = Trace(budget=budget, probe_addresses=known)
        traces.append(trace)
        functions = [
            f
            for f in service.functions
            if config.functions is None or f.function in config.functions
        ]
        jobs.append([asyncio.create_task(measure_function(trace, service, f)) for f in functions])
    # Every chain of every service first: an address learned by the last one scrubs the first.
    async with lag.running() as monitor:  # the probe's own lag, for the whole run
        finished = [await asyncio.gather(*tasks) for tasks in jobs]
    scrub_with = known | {a for a in config.probe_addresses if a}
    # The network (ASN, country) of the addresses the run learned: msgwatch.probe.network.
    network = for_run(given_asn=config.probe_asn, given_cc=config.probe_cc,
                      given_addresses=config.probe_addresses, learned=known,
                      databases=config.geoip_databases)  # fmt: skip
    info = replace(
        RunInfo.new(probe_asn=network.asn, probe_cc=network.cc,
                    probe_network_name=network.name or config.probe_network_name,
                    resolver_ip=resolver_ip, catalogue_version=catalogue.version, now=started_at),
        annotations=network.annotations(),
    )  # fmt: skip
    results: list[ServiceRun] = []
    for service, trace, per_function in zip(services, traces, finished, strict=True):
        pairs = [pair for done in per_function for pair in done]
        roles = [role for role, _ in pairs]
        outcomes = [outcome for _, outcome in pairs]
        runtime = trace.now()
        keys = trace.test_keys()
        keys.update(
            {
                "msgwatch_service": service.id,
                "msgwatch_catalogue_version": catalogue.version,
                "msgwatch_service_networks": [n.prefix for n in service.networks],
                "msgwatch_functions": [
                    {
                        "function": f.function,
                        "mode": f.mode,
                        "coverage": f.coverage,
                        "endpoints": [e.id for e in f.endpoints],
                        "call_ports": list(f.call_ports) if config.helper else [],
                        "replay_seconds": config.replay_seconds if config.helper else 0,
                    }
                    for f in service.functions
                    if config.functions is None or f.function in config.functions
                ],
                "msgwatch_targets": [
                    _target_record(r, o) for r, o in zip(roles, outcomes, strict=True)
                ],
                "msgwatch_test_helper": config.helper,
                "msgwatch_probe_lag": monitor.record(trace.start),
            }
        )
        start = started_at + dt.timedelta(seconds=trace.start - traces[0].start)
        measurement = build_measurement(
            info,
            service_id=service.id,
            start=start,
            runtime=runtime,
            test_keys=keys,
            probe_addresses=scrub_with,
        )
        verdicts = judge(measurement)
        measurement["test_keys"]["msgwatch_verdicts"] = verdicts
        results.append(ServiceRun(service, measurement, verdicts, outcomes))
    return results

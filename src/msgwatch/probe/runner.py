"""The runner: every endpoint of every selected service, concurrently, under one deadline.

How a run works:

1. One deadline is computed at the top: ``start + timeout``. Every chain, and every step inside it,
   gets that deadline; nothing waits past it. Under blocking (where everything is a timeout) the run
   therefore takes about one timeout, not the sum of them.
2. Chains start together, gated by a semaphore of ``concurrency`` slots (sockets are cheap; the
   limit is there to keep a huge catalogue from exhausting file descriptors).
3. Each service has its own :class:`~msgwatch.probe.trace.Trace`, so each becomes one measurement.
4. When all chains are done, each service's measurement is built, scrubbed, and judged by
   :func:`msgwatch.verdicts.judge.judge` — from the measurement alone, as the analysis would.

``sequential=True`` runs the same chains one at a time, each with a deadline of its own: the
baseline that ``benchmarks/`` compares against.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msgwatch.catalogue import Catalogue, Endpoint, FunctionTargets, Service
from msgwatch.helper.ports import NEUTRAL_PORT
from msgwatch.measurement.envelope import RunInfo, build_measurement
from msgwatch.probe.calls import ROUNDS, run_replays
from msgwatch.probe.chains import ChainConfig, ChainOutcome, run_chain
from msgwatch.probe.steps.control import CONTROL_PORT, HelperLink
from msgwatch.probe.trace import Budget, Trace
from msgwatch.verdicts.judge import judge

Progress = Callable[[str, ChainOutcome], None]


@dataclass(frozen=True)
class RunConfig:
    chain: ChainConfig = field(default_factory=ChainConfig)
    timeout: float = 10.0
    """Seconds: the run's single deadline is this far from its start."""
    concurrency: int = 256
    helper: str | None = None
    """Address of a test helper: with one, functions that list ``call_ports`` also get the call
    path measured (STUN to the helper on each call port)."""
    functions: tuple[str, ...] | None = None
    """Only these functions (all when None)."""
    probe_asn: str | None = None
    probe_cc: str | None = None
    probe_network_name: str = ""
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
    }


async def run(
    catalogue: Catalogue,
    services: list[Service],
    config: RunConfig,
    progress: Progress | None = None,
) -> list[ServiceRun]:
    """Measure ``services``; one :class:`ServiceRun` per service, in the given order."""
    loop = asyncio.get_running_loop()
    started_at = dt.datetime.now(dt.UTC)
    deadline = loop.time() + config.timeout
    semaphore = asyncio.Semaphore(1 if config.sequential else max(1, config.concurrency))
    resolver_ip = config.chain.resolver[0] if config.chain.resolver else ""
    info = RunInfo.new(
        probe_asn=config.probe_asn,
        probe_cc=config.probe_cc,
        probe_network_name=config.probe_network_name,
        resolver_ip=resolver_ip,
        catalogue_version=catalogue.version,
        now=started_at,
    )

    async def one(
        trace: Trace, service: Service, function: str, role: str, endpoint: Endpoint
    ) -> list[tuple[str, ChainOutcome]]:
        async with semaphore:
            limit = loop.time() + config.timeout if config.sequential else deadline
            outcome = await run_chain(
                trace, function, endpoint, config.chain, limit, service.trust_roots
            )
        if progress is not None:
            progress(service.id, outcome)
        return [(role, outcome)]

    seed = config.replay_seed if config.replay_seed is not None else random.randrange(1 << 30)
    # One link per helper for the whole run: it queues the control connections to it.
    port = config.helper_control_port
    abroad = HelperLink(config.helper, port) if config.helper is not None else None
    domestic = HelperLink(config.domestic_helper, port) if config.domestic_helper else None

    async def replays(
        trace: Trace, service: Service, function: FunctionTargets
    ) -> list[tuple[str, ChainOutcome]]:
        assert abroad is not None
        async with semaphore:
            done = await run_replays(
                trace, service, function, abroad, config.replay_seconds, seed, deadline,
                domestic, rounds=config.replay_rounds, neutral_port=config.neutral_port,
            )  # fmt: skip
        for _, outcome in done:
            if progress is not None:
                progress(service.id, outcome)
        return done

    budget = Budget(limit=config.budget_bytes)
    traces: list[Trace] = []
    jobs: list[list[asyncio.Task[list[tuple[str, ChainOutcome]]]]] = []
    for service in services:
        trace = Trace(budget=budget)
        traces.append(trace)
        functions = [
            f
            for f in service.functions
            if config.functions is None or f.function in config.functions
        ]
        tasks = [
            asyncio.create_task(one(trace, service, f.function, role, endpoint))
            for f in functions
            for role, endpoint in targets(service, f, config.helper)
        ]
        if config.helper is not None and config.replay_seconds > 0:
            tasks += [asyncio.create_task(replays(trace, service, f)) for f in functions]
        jobs.append(tasks)
    results: list[ServiceRun] = []
    for service, trace, tasks in zip(services, traces, jobs, strict=True):
        pairs = [pair for done in await asyncio.gather(*tasks) for pair in done]
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
            }
        )
        start = started_at + dt.timedelta(seconds=trace.start - traces[0].start)
        measurement = build_measurement(
            info,
            service_id=service.id,
            start=start,
            runtime=runtime,
            test_keys=keys,
            probe_addresses=trace.probe_addresses,
        )
        verdicts = judge(measurement)
        measurement["test_keys"]["msgwatch_verdicts"] = verdicts
        results.append(ServiceRun(service, measurement, verdicts, outcomes))
    return results

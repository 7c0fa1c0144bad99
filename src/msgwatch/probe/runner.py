"""The runner: the run's tests, concurrently, in shared slots, under one deadline and one byte budget.

How a run works:

1. The fence (``MSGWATCH_ALLOWED_NETWORKS``) is checked first: a malformed or empty value raises
   :class:`~msgwatch.fence.FenceError` before anything is sent.
2. The tests ``RunConfig.tests`` names are looked up in the registry
   (:data:`msgwatch.probe.nettests.NETTESTS`); each gives its inputs (the service test: the selected
   services), and each input becomes one measurement with its own
   :class:`~msgwatch.steps.trace.Trace`. The traces share one byte budget (``budget_bytes``) and
   one set of the probe's own addresses.
3. Jobs run concurrently in ``concurrency`` slots shared by every test. By default the slots are
   sized from the file-descriptor limit (:func:`slots_for`; the soft limit is raised towards the
   hard one first), since a slot costs a few descriptors and nothing else worth bounding. Starts
   are paced (:data:`~msgwatch.probe.nettests.base.START_INTERVAL`), so that a thousand chains
   starting at once do not stall the loop into the first chains' time.
4. **Each job gets its own time**: its deadline is its test's job time (the run's ``timeout``
   unless the test declares another) from the moment it gets a slot, never from the start of the
   run, so a job that waited for a slot is not cut short. The run has a deadline of its own
   (``run_timeout``; by default the longest any of its tests needs: for the service test as many
   chain timeouts as the waves of slots and the retries need); a test may cap its own below it. A
   job that cannot get its whole time before its test's deadline is **not run** and recorded as
   such (``not_measured: "no_time"``), with no step and no failure. When every chain fits in the
   slots (the usual case), the run takes about one timeout (two when chains fail and are retried).
5. The event loop's lag is measured for the whole run (``msgwatch_probe_lag``, in every
   measurement).
6. Only when **every** job of every test is done are the measurements built and scrubbed — with
   every address the run learned anywhere (a STUN answer in one service scrubs a block page's echo
   in another) and those given in ``probe_addresses``. The probe records; it does not judge: the
   verdicts are the reader's (:func:`msgwatch.analysis.verdicts.judge.judge` on a measurement).

``sequential=True`` runs the same jobs one at a time (one slot): the baseline that
``benchmarks/`` compares against.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import resource
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from msgwatch.catalogue import Catalogue, Service
from msgwatch.fence import check_fence
from msgwatch.measurement.envelope import RunInfo, build_measurement
from msgwatch.probe.chain import ChainOutcome
from msgwatch.probe.config import RunConfig
from msgwatch.probe.nettests import nettest
from msgwatch.probe.nettests.base import (
    Helpers,
    NetTest,
    RunPlan,
    Slots,
    TestContext,
    TestResult,
    TestRun,
)
from msgwatch.probe.nettests.service import count_chains
from msgwatch.probe.network import for_run
from msgwatch.steps import lag
from msgwatch.steps.control import HelperLink
from msgwatch.steps.trace import Budget, Trace

__all__ = [
    "RunConfig",
    "ServiceRun",
    "TestRun",
    "count_chains",
    "default_slots",
    "run",
    "slots_for",
]

ServiceRun = TestRun
"""The name the session and the CLI know a run's measurement by."""

Progress = Callable[[str, ChainOutcome], None]
"""Called with a measurement's input (a service's id) and each outcome as it is known."""

FDS_PER_CHAIN = 4
"""Descriptors one chain may hold at once: its DNS socket, its connection, the benign-SNI control
handshake's connection, and one to spare (a throughput pair runs after the chain's own)."""
FD_RESERVE = 64
"""Descriptors kept for everything else (the event loop, files, the spool, the helper link)."""
MAX_SLOTS = 512
"""At most this many chains at once, however high the limit: one event loop drives them all, and
on two busy cores 1,360 at once stalled it into 83 false timeouts where waves of 112 had none
(benchmarks/run_blocked_catalogue.py at 8×)."""


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


def _helpers(config: RunConfig) -> Helpers:
    """One link per helper for the whole run (it queues the control connections to it)."""
    port = config.helper_control_port
    seed = config.replay_seed if config.replay_seed is not None else random.randrange(1 << 30)
    return Helpers(
        abroad=HelperLink(config.helper, port) if config.helper is not None else None,
        domestic=HelperLink(config.domestic_helper, port) if config.domestic_helper else None,
        seed=seed,
    )


def _envelope(
    info: RunInfo,
    test: NetTest,
    input: str,
    start: dt.datetime,
    trace: Trace,
    keys: dict[str, Any],
    scrub_with: set[str],
) -> dict[str, Any]:
    """One measurement, scrubbed, named after its test."""
    measurement = build_measurement(
        info,
        service_id=input,
        start=start,
        runtime=trace.now(),
        test_keys=keys,
        probe_addresses=scrub_with,
    )
    measurement["test_name"], measurement["test_version"] = test.test_name, test.test_version
    return measurement


def _run_seconds(tests: list[NetTest], inputs: list[list[str]], plan: RunPlan, slots: int) -> float:
    """The run's deadline, from its start: ``run_timeout``, else what its longest test needs."""
    config = plan.config
    if config.run_timeout is not None:
        return config.run_timeout
    needs = [t.seconds(t.jobs(plan, i), slots, config) for t, i in zip(tests, inputs, strict=True)]
    return max(needs, default=0.0)


def _run_info(
    catalogue: Catalogue, config: RunConfig, known: set[str], now: dt.datetime
) -> RunInfo:
    """What the run's measurements share, with the network (ASN, country) of the addresses the
    run learned (:mod:`msgwatch.probe.network`)."""
    network = for_run(
        given_asn=config.probe_asn,
        given_cc=config.probe_cc,
        given_addresses=config.probe_addresses,
        learned=known,
        databases=config.geoip_databases,
    )
    info = RunInfo.new(
        probe_asn=network.asn,
        probe_cc=network.cc,
        probe_network_name=network.name or config.probe_network_name,
        resolver_ip=config.chain.resolver[0] if config.chain.resolver else "",
        catalogue_version=catalogue.version,
        now=now,
    )
    return replace(info, annotations=network.annotations())


async def run(
    catalogue: Catalogue,
    services: list[Service],
    config: RunConfig,
    progress: Progress | None = None,
) -> list[TestRun]:
    """Run the configured tests; one :class:`TestRun` per input, tests in the configured order,
    inputs in their test's order (the service test: the given order of ``services``).

    Raises :class:`~msgwatch.fence.FenceError` before anything is sent when the fence is
    malformed, ValueError when a test is unknown."""
    check_fence()
    tests = [nettest(name) for name in config.tests]
    loop = asyncio.get_running_loop()
    started_at, start = dt.datetime.now(dt.UTC), loop.time()
    plan = RunPlan(catalogue, services, config)
    inputs = [test.inputs(plan) for test in tests]
    slots = Slots(1 if config.sequential else (config.concurrency or default_slots()))
    run_deadline = start + _run_seconds(tests, inputs, plan, slots.count)
    helpers = _helpers(config)
    budget = Budget(limit=config.budget_bytes)
    known: set[str] = set()
    """The probe's own addresses, as any measurement of the run learns them."""

    def context(test: NetTest, input: str) -> TestContext:
        cap = test.time.cap
        return TestContext(
            plan=plan,
            trace=Trace(budget=budget, probe_addresses=known),
            helpers=helpers,
            slots=slots,
            seconds=test.time.seconds(config),
            until=run_deadline if cap is None else min(run_deadline, start + cap),
            budget=budget,
            reserve=test.bytes.reserve,
            report=(lambda o: progress(input, o)) if progress is not None else (lambda _: None),
        )

    contexts = [
        (t, i, context(t, i)) for t, names in zip(tests, inputs, strict=True) for i in names
    ]
    tasks = [asyncio.create_task(t.measure(ctx, i)) for t, i, ctx in contexts]
    # Every job of every test first: an address learned by the last one scrubs the first.
    async with lag.running() as monitor:  # the probe's own lag, for the whole run
        results: list[TestResult] = [await task for task in tasks]
    scrub_with = known | {a for a in config.probe_addresses if a}
    info = _run_info(catalogue, config, known, started_at)
    first = contexts[0][2].trace.start if contexts else 0.0
    runs: list[TestRun] = []
    for (test, input, ctx), result in zip(contexts, results, strict=True):
        lagged = monitor.record(ctx.trace.start)
        keys = {**ctx.trace.test_keys(), **result.keys, "msgwatch_probe_lag": lagged}
        begun = started_at + dt.timedelta(seconds=ctx.trace.start - first)
        measurement = _envelope(info, test, input, begun, ctx.trace, keys, scrub_with)
        runs.append(TestRun(test.test_name, input, measurement, result.outcomes, result.measured))
    return runs

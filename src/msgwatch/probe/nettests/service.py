"""The service test (``msgwatch_service``): every endpoint of one service, one measurement.

For each selected function of the service:

1. **Chains** (:func:`msgwatch.probe.chains.run_chain`) to every catalogue endpoint (role
   ``endpoint``) and, with a test helper, a STUN chain to the helper on each of the function's call
   ports (role ``call_path``), each in a slot of its own with the run's ``timeout``.
2. **A single failure does not decide**: a chain that failed is tried once more, later in the run
   (``retry_after`` seconds after it failed, in a slot of its own, with its own time); both
   attempts are recorded (``attempt`` 1 and 2) and the judge reads a path that failed once and
   worked once as ``degraded`` (intermittent), one that failed both times by its failure.
3. With a helper and ``replay_seconds``, the **call-traffic replays** (:mod:`msgwatch.probe.calls`),
   in one slot.
4. With a helper, the failed endpoints of a redundant pool some of whose endpoints worked are then
   checked by the helper (role ``pool_view``): an endpoint that fails here while the helper
   reaches it makes the pool ``degraded``.
5. A destination the fence refused is not a measurement of the network: its target is recorded
   as ``not_measured: "fence"`` and the measurement is marked not to be spooled or submitted
   (:attr:`~msgwatch.probe.nettests.base.TestResult.measured`).

Its keys: ``msgwatch_service``, ``msgwatch_catalogue_version``, ``msgwatch_service_networks``,
``msgwatch_functions``, ``msgwatch_targets``, ``msgwatch_test_helper``. Its deadline: as many
``timeout`` as the waves of slots and the retries need, plus half a timeout (:func:`run_seconds`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from msgwatch.catalogue import Endpoint, FunctionTargets, Service
from msgwatch.failures import classify
from msgwatch.fence import NOT_ALLOWED
from msgwatch.measurement.envelope import TEST_NAME, TEST_VERSION
from msgwatch.probe.calls import run_replays
from msgwatch.probe.chain import ChainOutcome
from msgwatch.probe.chains import run_chain
from msgwatch.probe.config import RunConfig
from msgwatch.probe.nettests.base import (
    START_INTERVAL,
    NetTest,
    RunPlan,
    TestContext,
    TestResult,
)
from msgwatch.steps.control import helper_measure
from msgwatch.steps.trace import BUDGET_EXCEEDED, Trace

POOL_VIEW_STEPS = 16

Done = list[tuple[str, ChainOutcome]]
"""(role, outcome) pairs, in the order they are recorded."""


def count_chains(
    services: list[Service], functions: tuple[str, ...] | None = None, helper: str | None = None
) -> int:
    return sum(len(targets(s, f, helper)) for s in services for f in _selected(s, functions))


def _selected(service: Service, functions: tuple[str, ...] | None) -> list[FunctionTargets]:
    return [f for f in service.functions if functions is None or f.function in functions]


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


def jobs(services: list[Service], config: RunConfig) -> int:
    """Slot jobs of the services' first attempts: their chains, and one per function's replays."""
    chains = count_chains(services, config.functions, config.helper)
    if config.helper is None or config.replay_seconds <= 0:
        return chains
    return chains + sum(len(_selected(s, config.functions)) for s in services)


def run_seconds(jobs: int, slots: int, config: RunConfig) -> float:
    """The service test's time from the run's start: its waves of chains and their retries."""
    waves = max(1, math.ceil(jobs / max(1, slots)))
    attempts = 2 if config.retry else 1
    pacing = START_INTERVAL * jobs * attempts
    return config.timeout * (waves * attempts + 0.5) + config.retry_after * (attempts - 1) + pacing


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


class _Measuring:
    """One service's measurement in progress: its chains, replays and pool views."""

    def __init__(self, ctx: TestContext, service: Service) -> None:
        self.ctx, self.service, self.config = ctx, service, ctx.config
        self.trace: Trace = ctx.trace

    async def attempt(self, function: str, endpoint: Endpoint, number: int) -> ChainOutcome:
        async with self.ctx.job() as slot:
            if slot.deadline is None:
                return _not_run(function, endpoint, number)
            outcome = await run_chain(
                self.trace,
                function,
                endpoint,
                self.config.chain,
                slot.deadline,
                self.service.trust_roots,
            )
        outcome.attempt = number
        return _fenced(outcome)

    async def one(self, function: str, role: str, endpoint: Endpoint) -> Done:
        first = await self.attempt(function, endpoint, 1)
        self.ctx.report(first)
        done = [(role, first)]
        if self.config.retry and _retryable(first):
            await asyncio.sleep(self.config.retry_after)
            done.append((role, await self.attempt(function, endpoint, 2)))
        return done

    async def replays(self, function: FunctionTargets) -> Done:
        helpers, config = self.ctx.helpers, self.config
        assert helpers.abroad is not None
        async with self.ctx.job() as slot:
            if slot.deadline is None:
                return []
            done = await run_replays(
                self.trace,
                self.service,
                function,
                helpers.abroad,
                config.replay_seconds,
                helpers.seed,
                slot.deadline,
                helpers.domestic,
                rounds=config.replay_rounds,
                neutral_port=config.neutral_port,
            )
        for _, outcome in done:
            _fenced(outcome)
            self.ctx.report(outcome)
        return done

    async def pool_view(self, function: FunctionTargets, done: Done) -> Done:
        """With a helper: its view of the pool's endpoints that failed every attempt here, when
        others of the pool worked (role ``pool_view``; the judge's ``pool.partial``)."""
        abroad = self.ctx.helpers.abroad
        endpoints = [o for r, o in done if r == "endpoint"]
        ok = {o.endpoint.id for o in endpoints if o.ok and o.not_measured is None}
        failed = [o for o in endpoints if o.failure is not None and o.endpoint.id not in ok]
        failed = list({o.endpoint.id: o for o in failed}.values())
        steps = [s for s in map(_view_step, failed) if s is not None][:POOL_VIEW_STEPS]
        if abroad is None or function.mode != "any_of" or not ok or not steps:
            return []
        async with self.ctx.job() as slot:
            if slot.deadline is None:
                return []
            txid = self.trace.new_transaction()
            try:
                record = await helper_measure(self.trace, txid, abroad, steps, slot.deadline)
            except Exception as exc:  # never fatal: the view is extra evidence
                record = {"failure": classify(exc)}
        endpoint = failed[0].endpoint.model_copy(update={"id": "pool-view"})
        outcome = ChainOutcome(function.function, endpoint, [txid], address=abroad.address)
        if record.get("failure") is not None:
            outcome.failure, outcome.failed_step = str(record["failure"]), "helper_view"
        return [("pool_view", outcome)]

    async def function(self, function: FunctionTargets) -> Done:
        config = self.config
        work = [
            self.one(function.function, role, endpoint)
            for role, endpoint in targets(self.service, function, config.helper)
        ]
        if config.helper is not None and config.replay_seconds > 0:
            work.append(self.replays(function))
        done = [pair for pairs in await asyncio.gather(*work) for pair in pairs]
        return done + await self.pool_view(function, done)


class ServiceTest(NetTest):
    """``msgwatch_service``: one measurement per selected service."""

    test_name = TEST_NAME
    test_version = TEST_VERSION

    def inputs(self, plan: RunPlan) -> list[str]:
        return [s.id for s in plan.services]

    def jobs(self, plan: RunPlan, inputs: list[str]) -> int:
        return jobs([s for s in plan.services if s.id in inputs], plan.config)

    def seconds(self, jobs: int, slots: int, config: RunConfig) -> float:
        return run_seconds(jobs, slots, config)

    async def measure(self, ctx: TestContext, input: str) -> TestResult:
        plan, config = ctx.plan, ctx.config
        service = next(s for s in plan.services if s.id == input)
        functions = _selected(service, config.functions)
        measuring = _Measuring(ctx, service)
        finished = await asyncio.gather(*(measuring.function(f) for f in functions))
        pairs = [pair for done in finished for pair in done]
        outcomes = [outcome for _, outcome in pairs]
        keys = {
            "msgwatch_service": service.id,
            "msgwatch_catalogue_version": plan.catalogue.version,
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
                for f in functions
            ],
            "msgwatch_targets": [_target_record(r, o) for r, o in pairs],
            "msgwatch_test_helper": config.helper,
        }
        measured = not any(o.not_measured == "fence" for o in outcomes)
        return TestResult(keys, outcomes, measured)

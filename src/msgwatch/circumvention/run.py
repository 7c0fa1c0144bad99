"""A circumvention run: every entry brought up, pushed, held and used, concurrently.

For each entry, a fresh :class:`~msgwatch.circumvention.model.Run` with its own
:class:`~msgwatch.steps.trace.Trace` (sharing the run's byte budget), then:

1. ``bring_up`` by the entry type's transport module (stages ``resolve`` … ``tunnel``), within
   ``ctx.budget(type)``;
2. once the tunnel is up: ``transfer`` (:func:`msgwatch.circumvention.transfer.transfer`) and,
   when it passed, ``sustain`` — both to ``ctx.helper:ctx.helper_port``;
3. what goes through it (:func:`through_tunnel`: :func:`msgwatch.circumvention.through.through`,
   kept record by record): the text path and the calls of each asked service, in
   ``run.keys["through"]``; a tunnel that did not come up (or a test without one, ``tor_reach``)
   gives ``measured: false`` records instead.
4. ``run.keys["probe_lag"]``: the probe's event-loop stalls while the entry ran, in the shape of
   ``msgwatch_service``'s ``msgwatch_probe_lag`` (:func:`~msgwatch.circumvention.evidence.lag_record`): the judge's evidence that a
   timeout was the probe's own (``probe.overloaded``).

Rules:

- **Each entry its own budget.** Bringing up is cut at ``ctx.budget(type)``; what follows has
  :func:`after_up` seconds. A cut records ``generic_timeout_error`` on the stage that was open
  (with ``budget`` in its detail): a transport that hangs fails, it does not stall the run. A cut
  with no stage open never invents a network failure (nothing of the network's was awaited): the
  stage after the last one run is ``interrupted``, a local failure; once every stage of the entry
  passed (the cut came during what goes through, or during cleanup), no stage is added: the
  record in flight through the tunnel ends ``interrupted`` and those not started are
  ``measured: false`` with ``reason: "interrupted"`` (:func:`_timed_out`).
- **One failing never stops another.** Entries run as separate tasks (at most ``concurrency``
  at once); an entry's unexpected exception becomes its own failure (``unknown_failure …``).
- **Always stopped.** The transport's context manager is always exited, on failure, on the
  budget's cut and on cancellation (Ctrl-C cancels the run: every entry is cancelled and its
  client stopped before the cancellation goes on). A run-wide deadline (``deadline``) cancels
  what is left; an entry whose cleanup itself hangs is abandoned after :data:`STOP_GRACE` and
  recorded as ``interrupted`` (the open stage; never a stage after the entry's last one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention import registry, through, transfer
from msgwatch.circumvention.evidence import direct_control, lag_record
from msgwatch.circumvention.model import STAGES, Context, Entry, Run, StageFailed, Tunnel
from msgwatch.circumvention.registry import TransportModule
from msgwatch.circumvention.through import Service
from msgwatch.steps import lag
from msgwatch.steps.trace import Budget, Trace

CONCURRENCY = 4
"""Entries at once by default (tunnel clients are processes; Tor's bootstrap takes CPU)."""
STOP_GRACE = 10.0
"""Seconds a cancelled entry has to stop its client before it is abandoned."""
INTERRUPTED = "interrupted"
NO_TUNNEL = frozenset({"tor_reach"})
"""Entry types that test reachability and bring no tunnel up: nothing goes through them."""

Modules = Callable[[str], TransportModule]
OnDone = Callable[[Run], None]


def after_up(ctx: Context, services: Sequence[Service], call_seconds: float) -> float:
    """Seconds an entry has once its tunnel is up: transfer, sustain, what goes through."""
    sustain = ctx.sustain_seconds + transfer.SUSTAIN_GRACE + 2.0
    return transfer.TRANSFER_SECONDS + sustain + through.budget(services, call_seconds) + 2.0


def entry_seconds(
    entry: Entry, ctx: Context, services: Sequence[Service], call_seconds: float
) -> float:
    """Seconds one entry may take in all."""
    return ctx.budget(entry.type) + after_up(ctx, services, call_seconds)


def run_seconds(
    entries: Sequence[Entry], ctx: Context, services: Sequence[Service], call_seconds: float,
    concurrency: int,
) -> float:  # fmt: skip
    """The run-wide deadline's default: the longest entry, once per wave of ``concurrency``."""
    if not entries:
        return 0.0
    longest = max(entry_seconds(e, ctx, services, call_seconds) for e in entries)
    return longest * math.ceil(len(entries) / max(1, concurrency)) + STOP_GRACE


async def run_entries(
    entries: Sequence[Entry],
    ctx: Context,
    *,
    services: Sequence[Service] = (),
    concurrency: int = CONCURRENCY,
    deadline: float | None = None,
    budget: Budget | None = None,
    call_seconds: float = through.CALL_SECONDS,
    seed: int = 0,
    modules: Modules = registry.module,
    on_done: OnDone | None = None,
    control: bool = True,
) -> list[Run]:
    """Test every entry (module notes); the runs in the entries' order. ``deadline``: seconds
    for the whole run (default :func:`run_seconds`); ``budget``: the run's byte budget shared by
    every trace; ``modules(type)``: the transport module of a type (tests pass their own);
    ``on_done(run)``: called as each entry ends; ``control``: measure the direct path to the
    helper first (:func:`direct_control`), copied into every run's ``keys["control"]``."""
    seconds = deadline if deadline is not None else run_seconds(
        entries, ctx, services, call_seconds, concurrency)  # fmt: skip
    shared = budget if budget is not None else Budget()
    runs = [Run(e, Trace(budget=shared)) for e in entries]
    if control and runs:
        checked = await direct_control(ctx)
        for run in runs:
            run.keys["control"] = checked
    async with lag.running() as monitor:  # the probe's own lag, for every entry's judge
        await _all(runs, ctx, services, call_seconds, seed, modules, on_done, concurrency,
                   seconds, monitor)  # fmt: skip
    return runs


async def _all(
    runs: list[Run], ctx: Context, services: Sequence[Service], call_seconds: float, seed: int,
    modules: Modules, on_done: OnDone | None, concurrency: int, seconds: float,
    monitor: lag.LagMonitor,
) -> None:  # fmt: skip
    """Every entry as its own task, at most ``concurrency`` at once, within ``seconds``."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(run: Run) -> None:
        async with gate:
            begun, samples = time.monotonic(), monitor.samples
            try:
                await _entry(run, ctx, services, call_seconds, seed, modules)
            finally:
                run.keys["probe_lag"] = lag_record(monitor, run.trace.start, begun, samples)
        if on_done is not None:
            on_done(run)

    tasks = [asyncio.ensure_future(one(r)) for r in runs]
    try:
        _, pending = await asyncio.wait(tasks, timeout=seconds)
    except asyncio.CancelledError:
        await _stop(tasks)
        for run in runs:
            _interrupted(run)
        raise
    if pending:
        await _stop(list(pending))
    for run, task in zip(runs, tasks, strict=True):
        if task.cancelled() or not task.done():
            _interrupted(run)
        elif (error := task.exception()) is not None:
            _broken(run, error)


async def _stop(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Cancel ``tasks`` and give their clients :data:`STOP_GRACE` to stop."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait(tasks, timeout=STOP_GRACE)


def _interrupted(run: Run) -> None:
    """Mark a run the run-wide deadline or a cancellation ended: its open stage, else the stage
    after the last one run, else (every stage passed) the record in flight through the tunnel."""
    if run.failure is None:
        if run.stages and run.stages[-1].t is None:
            last = run.stages[-1]
            last.t, last.failure = run.trace.now(), INTERRUPTED
        elif (stage := _next_stage(run)) is not None:
            run.fail(stage, INTERRUPTED)
        else:
            _cut_through(run, INTERRUPTED)
    run.keys.setdefault("through", [])


def _broken(run: Run, error: BaseException) -> None:
    """An entry's unexpected exception: its own failure, nobody else's."""
    failure = F.classify(error) if isinstance(error, Exception) else INTERRUPTED
    if run.failure is None:
        if (stage := _next_stage(run)) is not None:
            run.fail(stage, failure)
        else:
            _cut_through(run, failure)
    run.keys.setdefault("through", [])


def _next_stage(run: Run) -> str | None:
    """The stage after the last one recorded (None: the entry's last stage was recorded; a test
    without a tunnel, ``tor_reach``, ends at ``handshake``)."""
    last = run.stages[-1].stage if run.stages else None
    index = STAGES.index(last) + 1 if last in STAGES else 0
    end = STAGES.index("handshake") + 1 if run.entry.type in NO_TUNNEL else len(STAGES)
    return STAGES[index] if index < end else None


def _cut_through(run: Run, failure: str) -> None:
    """What was in flight through the tunnel when it was cut ends with ``failure`` (records
    not started stay ``measured: false``, reason ``interrupted``: :func:`through_tunnel`)."""
    for record in run.keys.get("through") or []:
        if record.get("failure") == INTERRUPTED and record.get("measured"):
            record["failure"] = failure


async def _entry(
    run: Run, ctx: Context, services: Sequence[Service], call_seconds: float, seed: int,
    modules: Modules,
) -> None:  # fmt: skip
    """One entry, within its budgets (module notes)."""
    entry = run.entry
    loop = asyncio.get_running_loop()
    up_budget = ctx.budget(entry.type)
    run.keys["budget"] = {"bring_up": up_budget,
                          "after_up": round(after_up(ctx, services, call_seconds), 3)}  # fmt: skip
    try:
        module = modules(entry.type)
    except Exception as exc:
        run.fail("resolve", F.unknown(f"no transport for {entry.type}: {type(exc).__name__}"))
        run.keys["through"] = through.not_measured(services, "no_transport")
        return
    phase = ["bring_up"]
    try:
        async with asyncio.timeout(up_budget) as cut:
            async with module.bring_up(entry, ctx, run) as tunnel:
                phase[0] = "after_up"
                cut.reschedule(loop.time() + after_up(ctx, services, call_seconds))
                await _use(run, tunnel, ctx, services, call_seconds, seed)
                phase[0] = "cleanup"
    except StageFailed:
        pass
    except TimeoutError:
        _timed_out(run, up_budget if phase[0] == "bring_up" else None)
    except Exception as exc:  # a transport's bug must not stop the others
        _broken(run, exc)
    if "through" not in run.keys:
        reason = f"{run.failed_stage or 'tunnel'}_failed"
        run.keys["through"] = (
            [] if run.entry.type in NO_TUNNEL else through.not_measured(services, reason)
        )


def _timed_out(run: Run, budget: float | None) -> None:
    """The budget's cut. The open (or interrupted) stage times out: something of the network's
    was awaited there. With no stage open, nothing of the network's was (a transport's own work
    between its stages, what goes through, cleanup), so no network failure is invented: the stage
    after the last one run is ``interrupted`` (local), and after the entry's last stage the
    record in flight through the tunnel ends ``interrupted``; the stages keep what they
    measured."""
    open_stage = next((s for s in reversed(run.stages) if s.failure in (None, INTERRUPTED)
                       and (s.t is None or s.failure == INTERRUPTED)), None)  # fmt: skip
    if open_stage is not None:
        open_stage.t, open_stage.failure = run.trace.now(), F.TIMEOUT
        open_stage.detail["budget"] = budget
    elif run.failure is not None:
        return
    elif (stage := _next_stage(run)) is not None:
        run.fail(stage, INTERRUPTED, budget=budget)
    else:
        _cut_through(run, INTERRUPTED)


async def _use(
    run: Run, tunnel: Tunnel | None, ctx: Context, services: Sequence[Service],
    call_seconds: float, seed: int,
) -> None:  # fmt: skip
    """Transfer, sustain and what goes through, on a tunnel that is up."""
    if tunnel is None:  # a test without a tunnel (tor_reach): nothing goes through it
        run.keys["through"] = []
        return
    loop = asyncio.get_running_loop()
    try:
        async with run.stage("transfer") as detail:
            until = loop.time() + transfer.TRANSFER_SECONDS
            await transfer.transfer(tunnel, run.trace, ctx.helper, ctx.helper_port, until, detail)
        async with run.stage("sustain") as detail:
            until = loop.time() + ctx.sustain_seconds + transfer.SUSTAIN_GRACE + 2.0
            await transfer.sustain(tunnel, run.trace, ctx.helper, ctx.helper_port,
                                   ctx.sustain_seconds, until, detail)  # fmt: skip
    except StageFailed:
        pass  # recorded; what goes through is still measured (a cut flow shows there too)
    await through_tunnel(run, tunnel, ctx, services, call_seconds, seed)


async def through_tunnel(
    run: Run, tunnel: Tunnel, ctx: Context, services: Sequence[Service], call_seconds: float,
    seed: int,
) -> None:  # fmt: skip
    """What goes through ``tunnel`` (:func:`msgwatch.circumvention.through.through`), its
    records kept in ``run.keys["through"]`` as each is done. When the run cuts it short, the
    record in flight gets ``measured: true, failure: "interrupted"`` and those not started
    ``measured: false, reason: "interrupted"``: a cut keeps what was measured."""
    planned = through.not_measured(services, INTERRUPTED)
    done: list[dict[str, Any]] = []
    run.keys["through"] = done
    try:
        await through.through(tunnel, run.trace, services, ctx, call_seconds=call_seconds,
                              seed=seed, out=done)  # fmt: skip
    finally:
        if len(done) < len(planned):
            rest = planned[len(done) :]
            rest[0].update(measured=True, failure=INTERRUPTED)
            rest[0].pop("reason", None)
            done.extend(rest)

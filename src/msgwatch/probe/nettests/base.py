"""What a test kind is, and what the runner shares with it.

A test kind (:class:`NetTest`, OONI's "nettest") declares:

- its ``test_name`` and ``test_version`` (the measurement's; the names live in
  :mod:`msgwatch.measurement`);
- its inputs for a run (:meth:`NetTest.inputs`): one measurement each, the envelope's ``input``;
- its time (:class:`TimeBudget`): the seconds each of its jobs has from when it gets a slot (the
  run's ``timeout`` unless it says otherwise: a Tor bootstrap needs a minute, a chain ten
  seconds) and, optionally, a cap under the run's deadline by which all its jobs end;
- its use of the run's byte budget (:class:`ByteUse`): what its traces count as they go, plus a
  reservation charged before each job, for traffic no trace sees (a client program's);
- how it measures one input (:meth:`NetTest.measure`), returning its part of ``test_keys``.

Rules:

- A job holds one of the run's slots for its whole time (:meth:`TestContext.job`); a job that
  cannot get its whole time before the test's deadline is not run, and the test records that
  (``not_measured: "no_time"``), never as a failure.
- ``measure`` never raises and never judges: it returns facts. The runner builds and scrubs the
  envelopes once every test of the run is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from msgwatch.catalogue import Catalogue, Service
from msgwatch.failures import ProbeFailure
from msgwatch.probe.chain import ChainOutcome
from msgwatch.probe.config import RunConfig
from msgwatch.steps.control import HelperLink
from msgwatch.steps.trace import Budget, Trace

START_INTERVAL = 0.002
"""Seconds between two jobs' starts. Starting a chain (a socket, a first packet) costs the
event loop about a millisecond; a thousand at once would stall it for a second or two, and that
time would be taken from the chains' own (measured: 154 false timeouts at 8× the catalogue
without it). Paced, a job's clock starts when the loop can run it."""


@dataclass(frozen=True)
class TimeBudget:
    """A test's time, under the run's deadline."""

    job_seconds: float | None = None
    """Seconds each job has from when it gets a slot; None: the run's ``timeout``."""
    cap: float | None = None
    """Seconds from the run's start by which every job of the test ends (None: the run's
    deadline, which is stretched to fit one wave of the test's jobs)."""

    def seconds(self, config: RunConfig) -> float:
        return config.timeout if self.job_seconds is None else self.job_seconds


@dataclass(frozen=True)
class ByteUse:
    """A test's share of the run's byte budget (``RunConfig.budget_bytes``)."""

    reserve: int = 0
    """Bytes charged to the run's budget when a job gets its slot, for traffic that no trace
    counts (a client program's); a job the budget cannot cover is not run (``budget_exceeded``).
    What the test's trace sends and receives is counted as it goes, whatever this says."""


@dataclass(frozen=True)
class RunPlan:
    """What the run was asked to measure."""

    catalogue: Catalogue
    services: list[Service]
    config: RunConfig


@dataclass(frozen=True)
class Helpers:
    """What every test of the run shares about the test helpers."""

    abroad: HelperLink | None = None
    """The test helper's link (one per helper for the whole run: it queues the control
    connections to it)."""
    domestic: HelperLink | None = None
    seed: int = 0
    """Seed of the replays' schedules and order."""


@dataclass(frozen=True)
class Slot:
    """A job's turn: its ``deadline`` (loop time), or None and why it is not run."""

    deadline: float | None
    refused: str | None = None
    """``no_time`` (the job could not get its whole time) or ``budget_exceeded``."""


class Slots:
    """The run's slots: at most ``count`` jobs at once, their starts paced."""

    def __init__(self, count: int, interval: float = START_INTERVAL) -> None:
        self.count = max(1, count)
        self.interval = interval
        self._semaphore = asyncio.Semaphore(self.count)
        self._next_start = -math.inf

    async def acquire(self, seconds: float, until: float) -> float | None:
        """A slot and the job's deadline (``seconds`` from now), or None (no slot held) when the
        job cannot have its whole time before ``until``."""
        loop = asyncio.get_running_loop()
        latest = until - seconds
        if loop.time() > latest:
            return None
        try:
            async with asyncio.timeout_at(latest):
                await self._semaphore.acquire()
        except TimeoutError:
            return None
        now = loop.time()
        at = max(now, self._next_start)
        self._next_start = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)
        if loop.time() > latest:
            self._semaphore.release()
            return None
        return loop.time() + seconds

    def release(self) -> None:
        self._semaphore.release()


@dataclass
class TestContext:
    """What the runner gives a test for one input."""

    __test__ = False  # not a pytest class

    plan: RunPlan
    trace: Trace
    """The input's own trace: one measurement (it charges the run's byte budget)."""
    helpers: Helpers
    slots: Slots
    seconds: float
    """Each job's time (:class:`TimeBudget`)."""
    until: float
    """Loop time by which every job of the test ends."""
    budget: Budget
    """The run's byte budget."""
    reserve: int = 0
    """Bytes charged to ``budget`` per job (:class:`ByteUse`)."""
    report: Callable[[ChainOutcome], None] = field(default=lambda _: None)
    """Progress: called with each outcome as it is known."""

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[Slot]:
        """One job's turn, held until the block exits (see :class:`Slot`)."""
        deadline = await self.slots.acquire(self.seconds, self.until)
        if deadline is None:
            yield Slot(None, "no_time")
            return
        try:
            if self.reserve:
                try:
                    self.budget.spend(self.reserve)
                except ProbeFailure as exc:
                    yield Slot(None, exc.failure)
                    return
            yield Slot(deadline)
        finally:
            self.slots.release()


@dataclass
class TestResult:
    """What a test measured for one input: its part of ``test_keys``, and its outcomes."""

    __test__ = False

    keys: dict[str, Any]
    outcomes: list[ChainOutcome] = field(default_factory=list)
    measured: bool = True
    """False when the fence refused a destination: the measurement shows the run's
    configuration, so it is kept out of the spool and never submitted."""


@dataclass
class TestRun:
    """One measurement of a run, as the runner returns it."""

    __test__ = False

    test_name: str
    input: str
    measurement: dict[str, Any]
    outcomes: list[ChainOutcome]
    measured: bool
    """See :attr:`TestResult.measured`."""


class NetTest(ABC):
    """A kind of test (see the module's notes)."""

    test_name: str
    test_version: str
    time: TimeBudget = TimeBudget()
    bytes: ByteUse = ByteUse()

    @abstractmethod
    def inputs(self, plan: RunPlan) -> list[str]:
        """What this run measures with the test: one measurement each."""

    def jobs(self, plan: RunPlan, inputs: list[str]) -> int:
        """How many slot jobs the test runs for ``inputs`` (for the run's deadline)."""
        return len(inputs)

    def seconds(self, jobs: int, slots: int, config: RunConfig) -> float:
        """Seconds from the run's start the test needs for ``jobs`` in ``slots``: its waves of
        jobs and half a ``timeout``, within its cap."""
        if jobs == 0:
            return 0.0
        waves = math.ceil(jobs / max(1, slots))
        need = waves * self.time.seconds(config) + config.timeout / 2 + START_INTERVAL * jobs
        return need if self.time.cap is None else min(need, self.time.cap)

    @abstractmethod
    async def measure(self, ctx: TestContext, input: str) -> TestResult:
        """Measure one input; never raises."""

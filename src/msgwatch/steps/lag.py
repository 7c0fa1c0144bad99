"""The probe's own lag: how late its event loop runs, measured while it measures.

A probe runs on a laptop or a small box that does other things. When its event loop is late, an
answer that arrived in time is read late (a step times out with the answer in its socket), a
replay's datagrams leave late and bunched, and its echoes wait in the kernel until the receive
buffer overflows. None of that is the network's doing, and a verdict must not take it for
censorship. So the probe measures its own lag, as it measures the network:

- :class:`LagMonitor` is a task that asks to wake every :data:`INTERVAL` seconds and records how
  late each wake-up came (scheduled against actual, both on the loop's monotonic clock). A late
  wake-up of ``L`` seconds means the loop could run nothing of the probe's for about ``L``: the
  monitor keeps those (``L`` above :data:`TOLERANCE`) as *stalls* ``(end, lag)``, bounded in number.
- :meth:`LagMonitor.stalled` gives the seconds of stall inside a window, :meth:`LagMonitor.worst`
  the longest lag that overlapped it: a step or a replay asks about its own span.
- :func:`running` starts one monitor per event loop (nested users share it) and :func:`current`
  finds it; :meth:`LagMonitor.record` is its summary for the measurement (``msgwatch_probe_lag``,
  times relative to the measurement's start, docs/spec/ts-msgwatch-service.md).

The sampler costs one timer wake-up every 20 ms. Its own lateness is the finding; it holds no
lock and never raises into the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

INTERVAL = 0.02
"""Seconds between the monitor's wake-ups."""
TOLERANCE = 0.05
"""A wake-up later than this is a stall (timer slack and a busy but healthy loop stay below)."""
MAX_STALLS = 4096
"""Stalls kept (the oldest go first); the totals count them all."""
RECORD_STALLS = 200
"""Stalls listed in the measurement's record (the longest ones)."""


class LagMonitor:
    """Samples the lag of the running event loop (module notes)."""

    def __init__(self, interval: float = INTERVAL, tolerance: float = TOLERANCE) -> None:
        self.interval = interval
        self.tolerance = tolerance
        self.stalls: deque[tuple[float, float]] = deque(maxlen=MAX_STALLS)
        """(monotonic time the loop came back, lag in seconds), oldest first."""
        self.samples = 0
        self.max_lag = 0.0
        self.total_stalled = 0.0
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    def start(self) -> None:
        if self._task is None:
            self.started = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, wake - loop.time()))
            now = loop.time()
            self.observe(now, now - wake)
            wake = max(wake + self.interval, now + self.interval / 2)

    def observe(self, now: float, lag: float) -> None:
        """One wake-up that came ``lag`` seconds after it was due, at ``now`` (monotonic)."""
        self.samples += 1
        lag = max(0.0, lag)
        self.max_lag = max(self.max_lag, lag)
        if lag > self.tolerance:
            self.stalls.append((now, lag))
            self.total_stalled += lag

    def stalled(self, start: float, end: float) -> float:
        """Seconds of stall inside ``[start, end]`` (monotonic): each stall covers ``[now - lag,
        now]``, and only its overlap with the window counts. Stalls still running at ``end`` are
        not seen yet (the next wake-up reports them)."""
        total = 0.0
        for back, lag in reversed(self.stalls):
            if back - lag > end:
                continue
            if back < start:
                break
            total += max(0.0, min(back, end) - max(back - lag, start))
        return total

    def worst(self, start: float, end: float) -> float:
        """The longest lag that overlapped ``[start, end]`` (0 when none did)."""
        worst = 0.0
        for back, lag in reversed(self.stalls):
            if back < start:
                break
            if back - lag <= end:
                worst = max(worst, lag)
        return worst

    def record(self, origin: float) -> dict[str, Any]:
        """The measurement's ``msgwatch_probe_lag``: times in seconds since ``origin``
        (the measurement's start, monotonic), stalls as ``[start, seconds]``, the longest
        :data:`RECORD_STALLS` of them in time order."""
        longest = sorted(self.stalls, key=lambda s: s[1], reverse=True)[:RECORD_STALLS]
        return {
            "interval": self.interval,
            "tolerance": self.tolerance,
            "samples": self.samples,
            "max_lag": round(self.max_lag, 6),
            "stalled": round(self.total_stalled, 6),
            "stall_count": sum(1 for _ in self.stalls),
            "stalls": [
                [round(back - lag - origin, 6), round(lag, 6)] for back, lag in sorted(longest)
            ],
        }


_MONITORS: dict[int, LagMonitor] = {}


def current() -> LagMonitor | None:
    """The monitor of the running event loop, when one runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _MONITORS.get(id(loop))


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[LagMonitor]:
    """The running loop's monitor, started here when none runs yet (and stopped when the last
    user leaves)."""
    key = id(asyncio.get_running_loop())
    monitor = _MONITORS.get(key)
    if monitor is None:
        monitor = _MONITORS[key] = LagMonitor()
        monitor.start()
    monitor._users += 1
    try:
        yield monitor
    finally:
        monitor._users -= 1
        if monitor._users == 0:
            _MONITORS.pop(key, None)
            await monitor.stop()

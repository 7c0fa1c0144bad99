"""The helper's own stalls: when its event loop ran late, so that what it echoed left late.

A probe judges a call path by the echoes it gets back within a grace after its last datagram. If
the helper itself stops for a while (a busy machine, a page-in, a stopped process), the datagrams
wait in its socket's buffer and are echoed late, in a burst: the probe counts them lost or
bunched, and the loss would read as the path's. The probe already leaves out what its own lag
spoiled (``msgwatch.analysis.rounds``); this is the same evidence from the other end.

:func:`watch` wakes every :data:`INTERVAL` seconds and records each wake-up that came at least
:data:`TOLERANCE` late as a stall (its start and length, monotonic seconds) in :class:`Stalls`.
A flow's view (``GET /v1/udp/flows``, :mod:`msgwatch.helper.flows`) carries the stalls that
touch the flow's life, its first datagram to its last activity, each stall with a shadow after it:
a datagram that arrived during a stall is read, and its flow begins in the helper's eyes, only
when the helper gets to it, and after a long stall the helper first works through every socket's
backlog. A flow that began within the shadow, the stall's own length (at least :data:`MARGIN`)
after it ended, may have waited it out. Measured in the lab: after 2 s stopped, flows that had
waited were first read more than 0.25 s after the helper went on. The shadow errs towards
counting a stall that did no harm: it only leaves a round out.

Bounds: at most :data:`MAX_STALLS` stalls are kept, oldest dropped first, and none older than
the flows' own expiry is needed (:meth:`Stalls.forget`). Time is passed in; only :func:`watch`
reads a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from msgwatch.wire.helper_api import StallCounts

__all__ = ["INTERVAL", "MARGIN", "MAX_STALLS", "TOLERANCE", "Stalls", "watch"]

INTERVAL: Final = 0.02
"""Seconds between the watch's wake-ups (the probe's own loop watch uses the same)."""
TOLERANCE: Final = 0.05
"""A wake-up this many seconds late, or more, is a stall."""
MARGIN: Final = 0.25
"""The shortest shadow: seconds after a stall in which a flow that begins may have waited it out."""
MAX_STALLS: Final = 4096


@dataclass
class Stalls:
    """Recent stalls as (start, seconds), in the order they ended."""

    max_stalls: int = MAX_STALLS
    _stalls: deque[tuple[float, float]] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self._stalls)

    def add(self, start: float, seconds: float) -> None:
        self._stalls.append((start, seconds))
        while len(self._stalls) > self.max_stalls:
            self._stalls.popleft()

    def forget(self, before: float) -> None:
        """Drop the stalls that ended before ``before``."""
        while self._stalls and sum(self._stalls[0]) < before:
            self._stalls.popleft()

    def within(self, start: float, end: float) -> StallCounts:
        """The stalls that began by ``end`` and ended no earlier than their shadow before
        ``start``: how many, their seconds together and the longest (each counted whole)."""
        found = [s for b, s in self._stalls if b <= end and b + s + max(MARGIN, s) >= start]
        return StallCounts(
            count=len(found),
            seconds=round(float(sum(found)), 3),
            longest=round(max(found, default=0.0), 3),
        )


async def watch(stalls: Stalls, clock: Callable[[], float] = time.monotonic) -> None:
    """Record the loop's stalls in ``stalls`` until cancelled."""
    while True:
        due = clock() + INTERVAL
        await asyncio.sleep(INTERVAL)
        late = clock() - due
        if late >= TOLERANCE:
            stalls.add(due, late)

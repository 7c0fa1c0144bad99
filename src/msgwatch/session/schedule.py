"""Scheduled runs: the loop behind ``msgwatch run --every 30m --jitter 5m``, and ``run.lock``.

Rules:

- **Cadence.** Runs start ``every`` apart, each start moved by a uniform draw in
  ``[-jitter, +jitter]`` (probes that share a schedule drift apart, and the cadence is not a clock an
  observer can set a watch by). The average period stays ``every``. The first run starts at once.
  A run that takes longer than the period is followed by the next one straight away, once: missed
  starts are not caught up in a burst.
- **No overlap.** Every run, one-shot or scheduled, holds an exclusive ``flock`` on
  ``STATE/run.lock`` while it measures, spools, writes and submits. A scheduled run that finds the
  lock held **skips** that start and waits for its next one: waiting would put two measurements back
  to back (twice the traffic for no new information) and would let a queue of late runs build up
  behind a stuck one. A one-shot ``msgwatch run`` **waits** instead: someone asked for a
  measurement now and expects one. ``flock`` is released by the kernel when a process dies, so a
  crash never leaves a stale lock.
- **Clean stop.** SIGTERM or SIGINT between runs ends the loop at once; during a run, the run is
  finished (its measurements spooled, its submission cut short at the next backoff wait) and then
  the loop ends. A second SIGINT interrupts immediately (KeyboardInterrupt); a second SIGTERM exits.
- **Time is injected**: ``clock`` (monotonic seconds) and ``wait(seconds) -> stop?``; ``count``
  bounds the number of starts (runs and skips) for tests.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

from msgwatch.durable import flocked

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds from ``90s``, ``30m``, ``1h``, ``1h30m``, ``1.5h``, ``2d`` or a bare number of
    seconds; raises ``ValueError``."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value):
            raise ValueError(f"{text!r} is not a duration (like 90s, 30m, 1h30m)") from None
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{text!r} is not a duration")
    return seconds


def run_lock(state_dir: Path, *, wait: bool) -> AbstractContextManager[bool]:
    """``flock`` on ``STATE/run.lock``; yields whether it was acquired (always, when waiting)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return flocked(state_dir / "run.lock", wait=wait)


class Stopper:
    """A stop flag set by SIGTERM/SIGINT while :meth:`installed`; :meth:`wait` sleeps until a
    timeout or a stop, whichever comes first."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def stop(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop was requested."""
        return self._event.wait(max(0.0, seconds)) if seconds > 0 else self._event.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():  # the second signal: do not wait for the run any more
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(128 + signum)
        self.signal = signum
        self._event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        """Handle SIGTERM and SIGINT for the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM.value, signal.SIGINT.value):
            previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def run_every(
    task: Callable[[int], None],
    *,
    every: float,
    jitter: float,
    lock: Callable[[], AbstractContextManager[bool]],
    wait: Callable[[float], bool],
    on_skip: Callable[[int], None] = lambda _index: None,
    count: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> int:
    """Call ``task(index)`` every ``every`` seconds (± ``jitter``) under ``lock()``, or
    ``on_skip(index)`` when the lock is busy; stops after ``count`` starts or when ``wait`` reports
    a stop. Returns how many tasks ran."""
    if every <= 0:
        raise ValueError("every must be positive")
    if not 0 <= jitter < every:
        raise ValueError("jitter must be at least 0 and less than every")
    draw = rng or random.Random()
    ran = 0
    index = 0
    next_start = clock()
    while count is None or index < count:
        if wait(next_start - clock()):
            break
        started = clock()
        with lock() as acquired:
            if acquired:
                task(index)
                ran += 1
            else:
                on_skip(index)
        index += 1
        if count is not None and index >= count:
            break
        next_start = started + every + (draw.uniform(-jitter, jitter) if jitter else 0.0)
    return ran

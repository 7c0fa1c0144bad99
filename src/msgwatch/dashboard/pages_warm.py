"""Building ahead what the views read: :meth:`Observatory.warm` (roll-ups, networks, the uid
index) in a background thread when the app starts and whenever the lake's committed state changes.

Rules:

- :class:`Warmer` tells a new committed state by the stat of the lake's ``state.json`` (size,
  mtime, inode). :meth:`Warmer.poke` is called when the app is created and by every view; it
  costs one ``stat`` and never blocks: it starts the thread, or leaves a running one to see the
  new state, and returns.
- One warming at a time: a thread warms, then checks the stat again and warms again until the
  state it warmed is the newest.
- A failure (no lake yet, a pass replaced mid-read) is logged, and the state counts as warmed:
  the next new state tries again. Nothing of it reaches a request; the views read hourly rows
  until the roll-ups exist.
- The thread is a daemon: a stopping server does not wait for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.measurements import MeasurementSource

logger = logging.getLogger("msgwatch.dashboard")


def state_stamp(lake_dir: Path) -> str:
    """The committed state's stamp: size, mtime and inode of ``state.json`` ("" when absent)."""
    try:
        info = os.stat(lake_dir / "state.json")
    except OSError:
        return ""
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


class Warmer:
    """Warms the lake of ``lake_dir`` in the background once per committed state."""

    def __init__(
        self,
        lake_dir: Path,
        measurements: MeasurementSource | None = None,
        warm: Callable[[], None] | None = None,
    ) -> None:
        self.lake_dir = lake_dir
        self._warm = warm or (lambda: Observatory(lake_dir, measurements).warm())
        self._lock = threading.Lock()
        self._warmed = ""  # the stamp last warmed (or failed)
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """Start warming when the committed state is new and no warming runs; never waits."""
        stamp = state_stamp(self.lake_dir)
        with self._lock:
            if stamp in ("", self._warmed) or self._running():
                return
            self._thread = threading.Thread(
                target=self._run, name="msgwatch-dashboard-warm", daemon=True
            )
            self._thread.start()

    def _running(self) -> bool:
        return self._thread is not None  # the thread clears it, under the lock, as it ends

    def _run(self) -> None:
        while True:
            stamp = state_stamp(self.lake_dir)
            with self._lock:
                if stamp in ("", self._warmed):
                    self._thread = None
                    return
                self._warmed = stamp
            try:
                self._warm()
            except Exception:  # logged; a request never sees it
                logger.warning("dashboard: warming %s failed", self.lake_dir, exc_info=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running warming (tests, benchmarks); True when none runs any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            return not self._running()

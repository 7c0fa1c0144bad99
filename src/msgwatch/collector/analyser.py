"""The collector's scheduled analysis (``--analyse-every``): an incremental pass over its own archive.

Every ``every`` seconds the collector analyses what it stored since the last pass into its
analysis directory, which the read API then serves (``routes/analysis.py``).

Rules:

- **A pass is a child process**, ``msgwatch analyse OUT --archive DATA --bucket S --workers 1
  --json`` (the very pass the systemd unit runs, docs/collector-analysis.md), in its own process
  group. A thread of the collector starts it and waits for it, so the pass never runs on the event
  loop nor shares the collector's interpreter lock, and a pass that crashes or runs out of memory
  takes only itself down. One worker: the collector keeps the other core for its submissions.
- **One at a time**: the thread runs passes one after another, and every pass holds ``OUT``'s
  lock; a pass that finds another process's pass running exits at once and counts as failed.
- **Schedule**: the first pass at start, then each ``every`` seconds after the previous one
  started (right after it ended, when it took longer).
- **Failure**: a pass that exits non-zero, is killed or cannot start is logged (status and the end
  of its stderr) and the next interval tries again; nothing of it reaches the collector.
- **Stop** (the collector's shutdown): no new pass starts; a running one gets SIGTERM (its whole
  group: its workers too), SIGKILL after :data:`STOP_GRACE` seconds. The pass commits its state
  last, so an interrupted pass is simply redone by the next one.
- Each pass's report is logged in one line, and kept (:attr:`Analyser.last_report`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from msgwatch.collector.settings import Settings

logger = logging.getLogger("msgwatch.collector.analyser")

STOP_GRACE = 10.0
"""Seconds a pass may take to end after SIGTERM at shutdown."""
OUTPUT_LIMIT = 256 * 1024
"""At most this much of a pass's stdout, and of its stderr's end, is read."""


@dataclass(frozen=True)
class Schedule:
    """What the collector analyses, into where, how often."""

    data_dir: Path
    out_dir: Path
    every: float
    bucket_seconds: int = 3600
    database: str | None = None

    def command(self) -> list[str]:
        """The pass's command line."""
        command = [sys.executable, "-m", "msgwatch", "analyse", os.fspath(self.out_dir),
                   "--archive", os.fspath(self.data_dir), "--bucket", str(self.bucket_seconds),
                   "--workers", "1", "--json"]  # fmt: skip
        if self.database is not None:
            command += ["--database", self.database]
        return command


class Analyser:
    """Runs the schedule's passes in a thread until :meth:`stop` (see the module's rules)."""

    def __init__(self, schedule: Schedule, command: Sequence[str] | None = None) -> None:
        self.schedule = schedule
        self._command = list(command) if command is not None else schedule.command()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, name="msgwatch-analyser", daemon=True)
        self.passes = 0
        self.failures = 0
        self.measurements = 0  # analysed by this analyser's passes, in all
        self.last_report: dict[str, Any] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """No new pass; the running one, if any, is ended (SIGTERM, then SIGKILL)."""
        self._stopping.set()
        self._signal(signal.SIGTERM)
        self._thread.join(grace)
        if self._thread.is_alive():
            self._signal(signal.SIGKILL)
            self._thread.join(grace)

    def _signal(self, sig: int) -> None:
        """``sig`` to the running pass's process group (its workers too)."""
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a bug here must not end the schedule
                logger.exception("the analysis pass could not be run")
            self._stopping.wait(max(0.0, started + self.schedule.every - time.monotonic()))

    def run_once(self) -> dict[str, Any] | None:
        """One pass, waited for; its report (None when it failed or the analyser is stopping)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            with self._lock:
                if self._stopping.is_set():
                    return None
                try:
                    self._process = subprocess.Popen(
                        self._command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                        start_new_session=True,
                    )  # fmt: skip
                except OSError as exc:
                    self.failures += 1
                    logger.error("the analysis pass cannot start: %s", exc)
                    return None
            status = self._process.wait()
            with self._lock:
                self._process = None
            return self._finished(status, _head(out), _tail(err))

    def _finished(self, status: int, stdout: bytes, stderr: bytes) -> dict[str, Any] | None:
        """Log the pass's report, or its failure."""
        report: Any = None
        with contextlib.suppress(ValueError):
            report = json.loads(stdout.splitlines()[-1]) if stdout.strip() else None
        if status != 0 or not isinstance(report, dict):
            self.failures += 1
            if self._stopping.is_set():
                logger.info("the analysis pass was stopped (status %d)", status)
                return None
            error = report.get("error") if isinstance(report, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            detail = message or stderr.decode("utf-8", "replace").strip()[-2000:] or "no output"
            logger.warning("the analysis pass failed (status %d): %s", status, detail)
            return None
        self.passes += 1
        self.measurements += int(report.get("measurements") or 0)
        self.last_report = report
        logger.info("%s", describe(report))
        return report


def describe(report: dict[str, Any]) -> str:
    """A pass's report in one line."""
    if report.get("new_pass") is False:
        return f"analysis: nothing new, pass {report.get('pass_number')} stands"
    skipped = sum((report.get("skipped") or {}).values())
    return (
        f"analysis pass {report.get('pass_number')}: {report.get('measurements', 0)} measurements"
        f" ({skipped} skipped, {report.get('problems', 0)} problems), "
        f"{report.get('verdicts', 0)} verdicts, {report.get('events', 0)} events"
        f" in {float(report.get('seconds') or 0):.1f} s"
        + (" (rebuilt)" if report.get("rebuilt") else "")
    )


def _head(handle: IO[bytes]) -> bytes:
    handle.seek(0)
    return handle.read(OUTPUT_LIMIT)


def _tail(handle: IO[bytes]) -> bytes:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - OUTPUT_LIMIT))
    return handle.read()


def start(settings: Settings) -> Analyser | None:
    """The running analyser of ``settings`` (``analysis_dir`` and ``analyse_every`` > 0), else None."""
    if settings.analysis_dir is None or settings.analyse_every <= 0:
        return None
    schedule = Schedule(
        data_dir=settings.data_dir,
        out_dir=settings.analysis_dir,
        every=settings.analyse_every,
        bucket_seconds=settings.analysis_bucket,
        database=settings.database,
    )
    analyser = Analyser(schedule)
    analyser.start()
    logger.info(
        "analysing the archive into %s every %g s", settings.analysis_dir, settings.analyse_every
    )
    return analyser

"""The observatory in the lab: a real collector abroad, probes submitting to it on a schedule.

A scenario with an ``[observatory]`` table runs its probes as scheduled runs
(``msgwatch run --every … --count …``) with their own spools and the collector's address; the
collector (``msgwatch collector serve``) runs in the abroad namespace on :data:`plan.COLLECTOR`.
A phase may block the collector's address (selector ``collector``) or restart the collector with
SIGKILL. At the end, :func:`reconcile` compares what the probes made (their spools) with what the
collector holds: every measurement made must be there exactly once.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgwatch.lab import plan as P
from msgwatch.spool import Spool

if TYPE_CHECKING:
    from msgwatch.lab.topology import Lab

READY_TIMEOUT = 20.0
MAX_RESPONSE = 64 * 1024 * 1024


class CollectorError(RuntimeError):
    """The lab's collector did not start or answer; the message names its log."""


def collector_url() -> str:
    return f"http://{P.COLLECTOR}:{P.COLLECTOR_PORT}"


def _get(path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """``GET path`` on the collector (called inside the abroad namespace)."""
    conn = http.client.HTTPConnection(P.COLLECTOR, P.COLLECTOR_PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(MAX_RESPONSE)
    finally:
        conn.close()


def _ready(deadline_s: float) -> str:
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _ = _get("/health", timeout=1.0)
            if status == 200:
                return ""
            last = f"/health answered {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    return last


def _all_uids() -> list[str]:
    """Every measurement_uid the collector lists (all pages)."""
    uids: list[str] = []
    cursor: str | None = None
    for _ in range(100_000):
        path = "/api/v1/measurements?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        status, body = _get(path, timeout=10.0)
        if status != 200:
            raise CollectorError(f"the collector's list answered {status}: {body[:200]!r}")
        page = json.loads(body)
        uids.extend(r["measurement_uid"] for r in page["results"])
        cursor = page.get("next_cursor")
        if not cursor:
            return uids
    raise CollectorError("the collector's list never ended")


@dataclass
class LabCollector:
    """``msgwatch collector serve`` inside the abroad namespace."""

    lab: Lab
    data_dir: Path
    proc: subprocess.Popen[Any] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.data_dir.parent / "collector.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "msgwatch", "collector", "serve",
            "--host", P.COLLECTOR, "--port", str(P.COLLECTOR_PORT),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = self.lab.popen("abroad", argv, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        problem = self.lab.run_in("abroad", _ready, READY_TIMEOUT, timeout=READY_TIMEOUT + 5)
        if problem:
            raise CollectorError(f"the lab's collector did not answer ({problem}); see {self.log}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no chance to flush or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def uids(self) -> list[str]:
        result: list[str] = self.lab.run_in("abroad", _all_uids, timeout=60)
        return result


@dataclass
class Reconciliation:
    """What the probes made against what the collector holds."""

    made: int = 0
    acknowledged: int = 0
    pending: int = 0
    rejected: int = 0
    collected: int = 0
    missing: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    collector_starts: int = 0

    @property
    def exact(self) -> bool:
        return not (self.missing or self.doubled or self.unknown or self.pending or self.rejected)

    def summary(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "acknowledged": self.acknowledged,
            "pending": self.pending,
            "rejected": self.rejected,
            "collected": self.collected,
            "missing": self.missing,
            "doubled": self.doubled,
            "unknown": self.unknown,
            "collector_starts": self.collector_starts,
            "exact": self.exact,
        }


def spool_contents(state_dir: Path) -> tuple[dict[str, str], int, int]:
    """(acknowledged key → uid, pending count, rejected count) of one probe's spool."""
    spool = state_dir / "spool"
    # The spool's own reader: the previous generation's records too, should the ledger rotate.
    acknowledged = {entry["key"]: entry["uid"] for entry in Spool(state_dir).ledger()}
    pending = len(list((spool / "pending").glob("*.json"))) if (spool / "pending").exists() else 0
    rejected_dir = spool / "rejected"
    rejected = len(list(rejected_dir.glob("*.json"))) if rejected_dir.exists() else 0
    return acknowledged, pending, rejected


def reconcile(state_dirs: list[Path], collector: LabCollector, made: int) -> Reconciliation:
    """``made``: the measurements the probes' scheduled runs said they spooled."""
    result = Reconciliation(made=made, collector_starts=collector.starts)
    expected: dict[str, str] = {}
    for state in state_dirs:
        acknowledged, pending, rejected = spool_contents(state)
        expected.update(acknowledged)
        result.pending += pending
        result.rejected += rejected
    result.acknowledged = len(expected)
    uids = collector.uids()
    result.collected = len(uids)
    seen: set[str] = set()
    for uid in uids:
        if uid in seen:
            result.doubled.append(uid)
        seen.add(uid)
    wanted = set(expected.values())
    result.missing = sorted(wanted - seen)
    result.unknown = sorted(seen - wanted)
    accounted = result.acknowledged + result.pending + result.rejected
    if accounted != made:
        # A measurement made but neither acknowledged nor still in the spool is lost.
        result.missing.append(f"{made - accounted} made but not in any spool")
    return result

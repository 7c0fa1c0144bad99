"""Verdicts must not depend on how busy the machine is (issue 9, item 10).

A probe runs on a laptop or a small box that does other things. Here the machine is oversubscribed
on purpose, four CPU-bound processes more than it has cores for (this lab's machine has two), while
the lab runs ``baseline`` (nothing censored anywhere) and ``stun-dpi`` (ISP 1 drops STUN; ISP 2 is
untouched). On every uncensored path nothing may read as ``blocked``, ``degraded`` or
``throttled`` (a probe too busy to tell may say ``inconclusive``, never blame the network), and the
censored ISP's verdicts must still be the ground truth, mechanism included.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import load_scenario
from tests.lab.conftest import lab_unavailable

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

HOGS = 4
INTERFERENCE = ("blocked", "degraded", "throttled")


@contextmanager
def oversubscribed(count: int = HOGS) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` CPU-bound processes for the duration; each is killed and reaped on the way out."""
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            hogs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.2)
        assert all(h.poll() is None for h in hogs), "a CPU hog did not start"
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(timeout=10)


def _row(r: dict[str, Any]) -> str:
    return (f"{r['phase']}/{r['isp']}/{r['service']}/{r['function']}: expected {r['expected']} "
            f"{r['expected_mechanism']}, got {r['verdict']} {r['mechanism']}")  # fmt: skip


def test_no_false_verdict_on_an_oversubscribed_machine(tmp_path: Path) -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    runs = {}
    with oversubscribed() as hogs:
        for name in ("baseline", "stun-dpi"):
            runs[name] = run_scenario(load_scenario(name), tmp_path / name)
        assert all(h.poll() is None for h in hogs), "the load did not last the whole test"
    false = [r for run in runs.values() for r in run.rows
             if r["expected"] == "ok" and r["verdict"] in INTERFERENCE]  # fmt: skip
    assert not false, "\n".join(map(_row, false))
    censored = [r for r in runs["stun-dpi"].rows if r["isp"] == "isp1"]
    assert censored and all(r["match"] for r in censored), "\n".join(
        _row(r) for r in censored if not r["match"]
    )
    # Every uncensored row was measured (a verdict, not a crash), and the replays say what the
    # probe's own lag and drops were.
    assert len(runs["baseline"].rows) > 100
    keys = [m["test_keys"] for phase in runs["stun-dpi"].runs for m in phase.measurements]
    assert all("msgwatch_probe_lag" in k for k in keys)
    replays = [r for k in keys for r in k.get("msgwatch_replays") or []]
    assert replays and all("socket_drops" in r["probe"] for r in replays if r.get("probe"))

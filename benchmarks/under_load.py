"""Benchmark: shipped lab scenarios on an oversubscribed machine (issue 9, item 10).

Starts ``--hogs`` CPU-bound processes (``python -c 'while True: pass'``, killed at the end), runs
each scenario ``--repeat`` times, and prints for each run: its time, the rows that match the
ground truth, every mismatch (the false ones on an uncensored path first), and the probe's own
lag as it measured it (``msgwatch_probe_lag``: the longest stall and the share of the run spent
in stalls, the worst probe of the run) and the replays' own drops. Needs root.

``--steal LO,HI`` replaces the hogs by a machine whose CPUs are taken away, as a busy hypervisor
does (CI's machine stalled the probe for up to 1.9 s): on every CPU, a process that sleeps 0.3 to
1.2 s, then spins for LO to HI seconds at real-time priority (SCHED_FIFO 50; the kernel's
real-time throttling leaves the rest 5 %), at random, for the whole run. Nothing else gets the CPU
meanwhile: the probe, the helpers, the servers and the kernel's own deferred work all stop. The
scenarios may be the call matrix's (``call-matrix-police-1``...). The last line counts the rows:
matched, ``inconclusive`` (the probe saying it cannot tell) and definite verdicts that are wrong,
the figure that must stay 0.

    python benchmarks/under_load.py [--hogs 4] [--repeat 1] baseline stun-dpi az-2017
    python benchmarks/under_load.py --steal 0.4,2.0 --repeat 3 call-matrix-police-1 call-matrix-dpi-relays-1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from msgwatch.lab.matrix import matrix_scenarios, reads_as_documented
from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import Scenario, load_scenario

STEAL = """
import os, random, sys, time
cpu, low, high = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {cpu})
rng = random.Random(cpu)
while True:
    time.sleep(rng.uniform(0.3, 1.2))
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    end = time.monotonic() + rng.uniform(low, high)
    while time.monotonic() < end:
        pass
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
"""
"""One CPU's thief (``--steal``): real-time bursts at random."""


def _scenario(name: str) -> Scenario:
    matrix = {s.name: s for s in matrix_scenarios()}
    return matrix[name] if name in matrix else load_scenario(name)


def _load(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    if not args.steal:
        return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.hogs)]  # fmt: skip
    low, high = args.steal.split(",")
    return [subprocess.Popen([sys.executable, "-c", STEAL, str(cpu), low, high])
            for cpu in sorted(os.sched_getaffinity(0))]  # fmt: skip


def _lag(measurements: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(longest stall, share of the runtime in stalls, datagrams the probe dropped itself)."""
    worst, stalled, runtime, dropped = 0.0, 0.0, 0.0, 0
    for m in measurements:  # every measurement of a run carries the whole run's lag
        keys = m["test_keys"]
        lag = keys.get("msgwatch_probe_lag") or {}
        runtime = max(runtime, float(m.get("test_runtime") or 0))
        worst = max(worst, float(lag.get("max_lag") or 0))
        stalled = max(stalled, float(lag.get("stalled") or 0))
        for r in keys.get("msgwatch_replays") or []:
            probe = r.get("probe") or {}
            dropped += int(probe.get("socket_drops") or 0) + int(probe.get("queue_drops") or 0)
    return worst, stalled / runtime if runtime else 0.0, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--hogs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--steal", default="", help="LO,HI: real-time bursts of LO-HI s instead")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    hogs = _load(args)
    counts = {"rows": 0, "matched": 0, "inconclusive": 0, "wrong": 0}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for name in args.scenarios * args.repeat:
                started = time.monotonic()
                scenario = _scenario(name)
                run = run_scenario(scenario, Path(workdir) / f"{name}-{started}")
                seconds = time.monotonic() - started
                measurements = [m for phase in run.runs for m in phase.measurements]
                worst, share, dropped = _lag(measurements)
                gaps = sum(
                    1 for r in run.rows if not r["match"] and reads_as_documented(scenario, r)
                )
                print(f"{name}: {run.matched}/{len(run.rows)} rows match (and {gaps} documented "
                      f"gaps read as documented) in {seconds:.1f} s; "
                      f"probe lag: longest stall {worst:.2f} s, {share:.0%} of a run in stalls; "
                      f"{dropped} datagrams dropped by the probe itself", flush=True)  # fmt: skip
                bad = sorted((r for r in run.rows if not r["match"] and not reads_as_documented(scenario, r)),
                             key=lambda r: r["expected"] != "ok")  # fmt: skip
                for r in bad:
                    print(f"  {r['isp']} {r['service']} {r['function']}: expected "
                          f"{r['expected']} {r['expected_mechanism']}, got {r['verdict']} "
                          f"{r['mechanism']}")  # fmt: skip
                counts["rows"] += len(run.rows)
                counts["matched"] += run.matched + gaps  # a documented gap reads as documented
                counts["inconclusive"] += sum(1 for r in bad if r["verdict"] == "inconclusive")
                counts["wrong"] += sum(1 for r in bad if r["verdict"] != "inconclusive")
        print(f"all runs: {counts['rows']} rows, {counts['matched']} match the truth, "
              f"{counts['inconclusive']} inconclusive, {counts['wrong']} definite and wrong")  # fmt: skip
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


if __name__ == "__main__":
    main()

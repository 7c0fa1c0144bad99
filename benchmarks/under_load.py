"""Benchmark: shipped lab scenarios on an oversubscribed machine (issue 9, item 10).

Starts ``--hogs`` CPU-bound processes (``python -c 'while True: pass'``, killed at the end), runs
each scenario ``--repeat`` times, and prints for each run: its time, the rows that match the
ground truth, every mismatch (the false ones on an uncensored path first), and the probe's own
lag as it measured it (``msgwatch_probe_lag``: the longest stall and the share of the run spent
in stalls, the worst probe of the run) and the replays' own drops. Needs root.

    python benchmarks/under_load.py [--hogs 4] [--repeat 1] baseline stun-dpi az-2017
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

from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import load_scenario


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
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for name in args.scenarios * args.repeat:
                started = time.monotonic()
                run = run_scenario(load_scenario(name), Path(workdir) / f"{name}-{started}")
                seconds = time.monotonic() - started
                measurements = [m for phase in run.runs for m in phase.measurements]
                worst, share, dropped = _lag(measurements)
                print(f"{name}: {run.matched}/{len(run.rows)} rows match in {seconds:.1f} s; "
                      f"probe lag: longest stall {worst:.2f} s, {share:.0%} of a run in stalls; "
                      f"{dropped} datagrams dropped by the probe itself", flush=True)  # fmt: skip
                bad = sorted((r for r in run.rows if not r["match"]),
                             key=lambda r: r["expected"] != "ok")  # fmt: skip
                for r in bad:
                    print(f"  {r['isp']} {r['service']} {r['function']}: expected "
                          f"{r['expected']} {r['expected_mechanism']}, got {r['verdict']} "
                          f"{r['mechanism']}")  # fmt: skip
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


if __name__ == "__main__":
    main()

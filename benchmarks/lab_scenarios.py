"""Benchmark: ``lab run`` of every shipped scenario, one after the other.

Prints, per scenario, the lab's up and down times, the time of each phase (apply the rules, probe
both ISPs) and the whole run, and matched/total against the ground truth; then the total time
(target: all scenarios under 10 minutes on 2 cores) and the accuracy over all scenarios. Needs root.

    python benchmarks/lab_scenarios.py [SCENARIO ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import list_scenarios, load_scenario


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    os.environ.setdefault(
        "MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
    )
    scenarios = [load_scenario(n) for n in sys.argv[1:]] or list_scenarios()
    matched = total = 0
    started = time.monotonic()
    print(f"{'scenario':18} {'up':>6} {'down':>6} {'total':>7}  matched   phases")
    for scenario in scenarios:
        with tempfile.TemporaryDirectory() as workdir:
            run = run_scenario(scenario, Path(workdir))
        t = run.timings
        phases = ", ".join(f"{k[6:]} {v:.1f}s" for k, v in t.items() if k.startswith("phase:"))
        gap = "  (probe gap: expected failure)" if scenario.probe_gap else ""
        print(f"{scenario.name:18} {t['up']:6.2f} {t['down']:6.2f} {t['total']:7.2f}  "
              f"{run.matched:3}/{len(run.rows):<4}  {phases}{gap}")  # fmt: skip
        matched += run.matched
        total += len(run.rows)
    elapsed = time.monotonic() - started
    print(f"all scenarios: {elapsed:.1f} s (target < 600 s); accuracy {matched}/{total} "
          f"= {matched / total:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

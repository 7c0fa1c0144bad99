"""Benchmark: the lab comes up and goes down cleanly N times in a row (issue 3: 20, nothing left).

Each cycle brings the whole lab up (7 namespaces, 6 veth pairs, the shipped catalogue mapped into
the lab, every server started and answering) and down again, then checks the machine itself: no
namespace ``mw<id>-*``, none of the cycle's processes, no run directory, no interface of the lab in
the host's namespace. Printed: up and down times (median, max) and the phases of up.

Needs root. Only lab addresses are ever configured (198.18.0.0/15, 2001:db8::/32).

    python benchmarks/lab_up_down.py [--cycles 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault(
    "MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
)

from msgwatch.lab import netns, runtime
from msgwatch.lab.topology import Lab


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def leftovers(lab_id: str, pids: list[int]) -> list[str]:
    """What a cycle left on the machine (nothing, we hope)."""
    found = [f"namespace {n}" for n in netns.namespaces() if n.startswith(f"mw{lab_id}-")]
    found += [f"process {p}" for p in pids if not _gone(p)]
    if runtime.entry(lab_id).exists():
        found.append(f"directory {runtime.entry(lab_id)}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"host interface {line.split(':')[1].strip()}" for line in links.splitlines()
              if f"v{lab_id}-" in line]  # fmt: skip
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    problem = netns.unavailable()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    ups: list[float] = []
    downs: list[float] = []
    phases: dict[str, list[float]] = {"files": [], "network": [], "servers": []}
    servers = 0
    for cycle in range(1, args.cycles + 1):
        lab = Lab()
        t0 = time.monotonic()
        with lab:
            t1 = time.monotonic()
            pids = [s.proc.pid for s in lab.servers if s.proc is not None]
            servers = len(pids)
        t2 = time.monotonic()
        ups.append(t1 - t0)
        downs.append(t2 - t1)
        for phase, values in phases.items():
            values.append(lab.timings[phase])
        left = leftovers(lab.lab_id, pids)
        print(f"cycle {cycle:2d}: lab {lab.lab_id} up {ups[-1]:.2f} s, down {downs[-1]:.2f} s, "
              f"{servers} servers, left behind: {', '.join(left) or 'nothing'}")  # fmt: skip
        assert not left, left
    print()
    print(f"{args.cycles} cycles, {servers} servers each, nothing left behind")
    print(f"up:   median {statistics.median(ups):.2f} s, max {max(ups):.2f} s")
    print(f"down: median {statistics.median(downs):.2f} s, max {max(downs):.2f} s")
    print("up phases (median): " + ", ".join(
        f"{phase} {statistics.median(values):.2f} s" for phase, values in phases.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: every circumvention transport of the lab's baseline, in one run and one by one.

Brings up one lab with all circumvention groups (the private Tor network, OpenVPN, WireGuard,
Shadowsocks, the proxies), then, from ISP 1's probe namespace and with no censor rule
(``circumvention-baseline``):

1. one ``msgwatch circumvent`` run with every entry at once: the wall time to all verdicts, and per
   entry its time to a verdict (the measurement's ``test_runtime``: its start to its last stage's
   end) and, for Tor, the bootstrap time;
2. each entry alone, one run per entry: its wall time and time to a verdict;

and prints a table, the sum of the sequential runs against the one run, and the targets: all
transports ≤ 120 s in one run, the private Tor network's bootstrap (vanilla, from the client's
start) ≤ 30 s. Needs root.

    python benchmarks/circumvention.py [--isp isp1] [--no-sequential]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from msgwatch.lab.circumvention import GROUPS
from msgwatch.lab.circumvention_run import CircumventionProbe, probe_circumvention
from msgwatch.lab.run import scenario_catalogue
from msgwatch.lab.scenario import Scenario, load_scenario
from msgwatch.lab.topology import Lab

TARGET_ALL = 120.0
TARGET_TOR = 30.0


def _one(scenario: Scenario, isp: str, entries: list[str]) -> Scenario:
    options = scenario.circumvent.model_copy(update={"isps": [isp], "entries": entries})
    return scenario.model_copy(update={"circumvent": options})


def _by_entry(probe: CircumventionProbe) -> dict[str, dict[str, Any]]:
    """Per entry: its time to a verdict, bootstrap time, failed stage and the judge's verdict."""
    verdicts = {
        v["service"]: v for v in probe.verdicts if v["function"] in ("tunnel", "reachability")
    }
    out = {}
    for m in probe.measurements:
        keys = m.get("test_keys") or {}
        name = str((keys.get("entry") or {}).get("name") or m.get("input"))
        verdict = verdicts.get(name, {})
        out[name] = {
            "runtime": keys.get("test_runtime", m.get("test_runtime")),
            "bootstrap": keys.get("bootstrap_time"),
            "failed_stage": keys.get("failed_stage"),
            "verdict": f"{verdict.get('verdict')} {verdict.get('mechanism') or ''}".strip(),
        }
    return out


def _s(value: Any) -> str:
    return f"{value:7.1f}" if isinstance(value, int | float) else f"{'-':>7}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isp", default="isp1", choices=("isp1", "isp2"))
    parser.add_argument("--no-sequential", action="store_true", help="only the one run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    os.environ.setdefault(
        "MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
    )
    baseline = load_scenario("circumvention-baseline")
    entries = baseline.circumvention_entries()
    started = time.monotonic()
    with Lab(catalogue=scenario_catalogue(baseline), circumvention=GROUPS) as lab:
        up = time.monotonic() - started
        print(f"lab up in {up:.1f} s (servers, the Tor network's consensus included: "
              f"{lab.timings.get('servers', 0.0):.1f} s)")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            t0 = time.monotonic()
            together = probe_circumvention(lab, _one(baseline, args.isp, entries), "all", work)[0]
            wall_all = time.monotonic() - t0
            one_run = _by_entry(together)
            alone: dict[str, tuple[float, dict[str, Any]]] = {}
            if not args.no_sequential:
                for name in entries:
                    t0 = time.monotonic()
                    probe = probe_circumvention(lab, _one(baseline, args.isp, [name]), name, work)[
                        0
                    ]
                    alone[name] = (time.monotonic() - t0, _by_entry(probe).get(name, {}))
    _report(entries, one_run, wall_all, alone)


def _report(
    entries: list[str],
    one_run: dict[str, dict[str, Any]],
    wall_all: float,
    alone: dict[str, tuple[float, dict[str, Any]]],
) -> None:
    print(f"\n{'entry':14} {'verdict (one run)':28} {'t(one)':>7} {'boot':>7} "
          f"{'t(alone)':>8} {'wall':>7}")  # fmt: skip
    for name in entries:
        mine = one_run.get(name, {})
        wall, solo = alone.get(name, (None, {}))
        print(f"{name:14} {mine.get('verdict', 'missing'):28} {_s(mine.get('runtime'))} "
              f"{_s(mine.get('bootstrap'))} {_s(solo.get('runtime')):>8} {_s(wall)}")  # fmt: skip
    print(f"\nall at once: {wall_all:.1f} s (target <= {TARGET_ALL:.0f} s): "
          f"{'met' if wall_all <= TARGET_ALL else 'MISSED'}")  # fmt: skip
    tor = one_run.get("tor", {}).get("bootstrap")
    if isinstance(tor, int | float):
        print(f"Tor bootstrap (vanilla, in the one run): {tor:.1f} s (target <= "
              f"{TARGET_TOR:.0f} s): {'met' if tor <= TARGET_TOR else 'MISSED'}")  # fmt: skip
    if alone:
        walls = sum(w for w, _ in alone.values())
        runtimes = sum(float(s.get("runtime") or 0.0) for _, s in alone.values())
        print(f"one by one: {walls:.1f} s of runs ({runtimes:.1f} s to verdicts); "
              f"one run is {walls / wall_all:.2f}x faster than the sum of the runs, "
              f"{runtimes / wall_all:.2f}x the sum of the times to a verdict")  # fmt: skip


if __name__ == "__main__":
    main()

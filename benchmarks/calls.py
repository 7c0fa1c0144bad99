"""Benchmark: voice and video tests of every service together, in the lab, uncensored.

Target (issue 4): they complete within 2 × one replay's duration plus the step timeout (the
rounds of original and control follow each other, each a slice of the replay's length, and take
2 × the replay together; everything else runs alongside). The probe's deadline is set well past the
bound (``--deadline-factor``), so that the run is not simply cut at the bound: the benchmark checks
that every replay sent its whole schedule. Prints the run's time against the bound, the bytes the
run moved, and the verdicts. Needs root.

    python benchmarks/calls.py [--replay 3] [--step-timeout 2] [--deadline-factor 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from msgwatch.fence import LAB_NETWORKS as FENCE
from msgwatch.lab.servers import BULK_PATH
from msgwatch.lab.topology import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", type=float, default=3.0, help="seconds of each replay")
    parser.add_argument("--step-timeout", type=float, default=2.0)
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="the run's byte budget (default: the probe's own default)")  # fmt: skip
    parser.add_argument("--deadline-factor", type=float, default=2.0,
                        help="the probe's deadline is this times the bound")  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    bound = 2 * args.replay + args.step_timeout
    deadline = bound * args.deadline_factor
    with Lab() as lab, tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "calls.jsonl"
        command = [
            sys.executable, "-m", "msgwatch", "run", "--catalogue", str(lab.catalogue_dir),
            "--functions", "voice,video", "--resolver", lab.resolver("isp1"),
            "--ca-bundle", str(lab.ca_bundle), "--helper", lab.helper_address("abroad"),
            "--domestic-helper", lab.helper_address("domestic"), "--download-path", BULK_PATH,
            "--replay-seconds", str(args.replay), "--timeout", str(deadline), "--yes", "--json",
            "--output", str(output),
        ]  # fmt: skip
        if args.budget_mb is not None:
            command += ["--budget-mb", str(args.budget_mb)]
        started = time.monotonic()
        done = lab.exec("probe1", command, env=dict(os.environ, MSGWATCH_ALLOWED_NETWORKS=FENCE),
                        capture_output=True, text=True, timeout=deadline + 60)  # fmt: skip
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"the probe failed: {done.stderr[-2000:]}")
        data = json.loads(done.stdout)
        measurements = [json.loads(line) for line in output.read_text().splitlines()]
    replays = [r for m in measurements for r in m["test_keys"].get("msgwatch_replays", [])]
    cut = [r for r in replays if r["failure"] == "budget_exceeded" or r["sent_packets"] == 0]
    rounds = {(r["role"], r["round"]) for r in replays if r["round"] is not None}
    counted = sum(1 for r in replays if (r.get("helper") or {}).get("failure", "x") is None)
    runtime = max(m["test_runtime"] for m in measurements)
    verdicts = data["verdicts"]
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    services = len({v["service"] for v in verdicts})
    print(f"voice and video of {services} services ({len(verdicts)} functions), replays of "
          f"{args.replay:g} s, step timeout {args.step_timeout:g} s")  # fmt: skip
    print(f"run time {elapsed:.2f} s (process start included; the probe's own {runtime:.2f} s) "
          f"against the bound 2 x replay + step timeout = {bound:g} s: ratio {elapsed / bound:.3f} "
          f"(deadline {deadline:g} s)")  # fmt: skip
    print(f"replays: {len(replays)} ({len(rounds) // 2} rounds of original and control), "
          f"{len(cut)} cut short; the helper's counts for {counted}")  # fmt: skip
    kinds: dict[str, int] = {}
    for r in replays:
        kind = r["role"].removeprefix("replay_")
        # A downstream replay's sent_bytes are the helper's: the probe only received them.
        own = 0 if r.get("direction") == "down" else r["sent_bytes"]
        kinds[kind] = kinds.get(kind, 0) + own + r["received_bytes"]
    moved = data["bytes"]
    budget = args.budget_mb if args.budget_mb is not None else data.get("budget_mb", 20.0)
    other = moved["sent"] + moved["received"] - sum(kinds.values())
    print(f"bytes: {moved['sent']:,} sent, {moved['received']:,} received "
          f"({(moved['sent'] + moved['received']) / 1e6:.1f} MB; budget {budget:g} MB)")  # fmt: skip
    print("  " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(kinds.items()))
          + f", everything else (steps, the helpers' control API) {other / 1e6:.2f} MB")  # fmt: skip
    why: dict[str, int] = {}
    for r in cut:
        key = f"{r['role'].removeprefix('replay_')}: {r['failure'] or 'nothing sent'}"
        why[key] = why.get(key, 0) + 1
    if why:
        print("  cut short: " + ", ".join(f"{k} x{v}" for k, v in sorted(why.items())))
    confirmed = {
        (m["input"] or m["test_keys"].get("service", "?"), r.get("function", "?"))
        for m in measurements
        for r in m["test_keys"].get("msgwatch_replays", [])
        if r.get("attempt") == 2
    }
    print(
        f"confirmation runs: {len(confirmed)} of {len(verdicts)} functions"
        + (f" ({', '.join(sorted(f'{s}/{f}' for s, f in confirmed))})" if confirmed else "")
    )
    print(f"verdicts: {counts}")


if __name__ == "__main__":
    main()

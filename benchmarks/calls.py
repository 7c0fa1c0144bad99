"""Benchmark: voice and video tests of every service together, in the lab, uncensored.

Target (issue 4): they complete within 2 × one replay's duration plus the step timeout (the
original and its control run one after the other; everything else runs alongside). Prints the
run's time against that bound, the bytes the run moved, and the verdicts. Needs root.

    python benchmarks/calls.py [--replay 3] [--step-timeout 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from msgwatch.lab.run import FENCE
from msgwatch.lab.servers import BULK_PATH
from msgwatch.lab.topology import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", type=float, default=3.0, help="seconds of each replay")
    parser.add_argument("--step-timeout", type=float, default=2.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab makes network namespaces: run this as root")
    bound = 2 * args.replay + args.step_timeout
    with Lab() as lab, tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "calls.jsonl"
        command = [
            sys.executable, "-m", "msgwatch", "run", "--catalogue", str(lab.catalogue_dir),
            "--functions", "voice,video", "--resolver", lab.resolver("isp1"),
            "--ca-bundle", str(lab.ca_bundle), "--helper", lab.helper_address("abroad"),
            "--domestic-helper", lab.helper_address("domestic"), "--download-path", BULK_PATH,
            "--replay-seconds", str(args.replay), "--timeout", str(bound), "--yes", "--json",
            "--output", str(output),
        ]  # fmt: skip
        started = time.monotonic()
        done = lab.exec("probe1", command, env=dict(os.environ, MSGWATCH_ALLOWED_NETWORKS=FENCE),
                        capture_output=True, text=True, timeout=bound + 60)  # fmt: skip
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"the probe failed: {done.stderr[-2000:]}")
        data = json.loads(done.stdout)
    verdicts = data["verdicts"]
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    services = len({v["service"] for v in verdicts})
    print(f"voice and video of {services} services ({len(verdicts)} functions), replays of "
          f"{args.replay:g} s, step timeout {args.step_timeout:g} s")  # fmt: skip
    print(f"run time {elapsed:.2f} s (process start included) against the bound 2 x replay + step "
          f"timeout = {bound:g} s: ratio {elapsed / bound:.3f}")  # fmt: skip
    moved = data["bytes"]
    print(f"bytes: {moved['sent']:,} sent, {moved['received']:,} received "
          f"({(moved['sent'] + moved['received']) / 1e6:.1f} MB; budget 20 MB)")  # fmt: skip
    print(f"verdicts: {counts}")


if __name__ == "__main__":
    main()

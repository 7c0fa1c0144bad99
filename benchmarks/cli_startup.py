"""Benchmark: how long ``msgwatch --help`` takes, and which imports cost the most.

Issue 9, item 19: the command line imports what a command needs inside that command, so that
``--help`` (and shell completion, and every quick command) does not pay for the probe, the lab, the
collector or pydantic. Printed:

- the wall time of ``msgwatch --help`` in a fresh interpreter (best and median of ``--runs``), and
  of a bare ``python -c pass`` for comparison (the interpreter's own start-up);
- the top offenders of ``python -X importtime`` (cumulative microseconds per top-level import).

The check that keeps it so is ``tests/unit/test_cli_startup.py`` (which modules are loaded, not a
timing). Nothing here touches the network.

    python benchmarks/cli_startup.py [--runs 10] [--top 15] [--args "--help"]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _wall(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def _offenders(args: list[str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the slowest imports, from ``-X importtime``."""
    program = f"from msgwatch.cli.main import cli; cli({args!r}, standalone_mode=False)"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", program],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(cumulative), int(own), name))
    rows.sort(reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--args", default="--help", help="The msgwatch arguments to time.")
    options = parser.parse_args()
    args = options.args.split()
    msgwatch = [sys.executable, "-m", "msgwatch", *args]
    bare = _wall([sys.executable, "-c", "pass"], options.runs)
    times = _wall(msgwatch, options.runs)
    print(f"msgwatch {' '.join(args)}: best {min(times):.3f} s, median "
          f"{statistics.median(times):.3f} s over {options.runs} runs")  # fmt: skip
    print(f"python -c pass:  best {min(bare):.3f} s, median {statistics.median(bare):.3f} s")
    print(f"\ntop {options.top} imports (-X importtime, cumulative):")
    print(f"{'cumulative ms':>14} {'self ms':>8}  module")
    for cumulative, own, name in _offenders(args, options.top):
        print(f"{cumulative / 1000:>14.1f} {own / 1000:>8.1f}  {name}")


if __name__ == "__main__":
    main()

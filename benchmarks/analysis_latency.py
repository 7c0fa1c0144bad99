"""Latency of the analysis: from a measurement's acknowledgement to the event it starts being served.

    .venv/bin/python benchmarks/analysis_latency.py          # a pass every 30 s, 10 s buckets, 3 trials
    .venv/bin/python benchmarks/analysis_latency.py --every 60 --bucket 30 --trials 1

A real collector (``msgwatch collector serve`` as a child process on 127.0.0.1, a fresh data
directory) analyses its own archive with ``--analyse-every EVERY --analysis-bucket BUCKET``. Each
trial takes a network of its own (``AS64600`` + trial) and, through the real submit API
(``POST /api/v1/submit``, one measurement per request, a probe tag per network):

1. a background: ``--background`` buckets just before now, ``--per-bucket`` measurements in each,
   where Skype's calls work (the lab's baseline measurement, ``tests/data/lab-measurements.jsonl.gz``,
   with its time and network rewritten): at least the detector's warm-up (60 measurements), or
   the first blocked measurements only teach it the series' background;
2. then, one a second with the current time, measurements where they are blocked (the lab's
   az-2017 measurement on ISP 1), until ``/api/v1/events`` serves a network event of that network.

The latency is from the acknowledgement of the first blocked measurement to the first answer of
``/api/v1/events`` that holds the event. The target (issue 11, "Latency"): at most one analysis
interval plus one minute. The collector's log is kept in the temporary directory and its analysis
lines are printed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.collector.analysis_data import at, lab_measurement  # noqa: E402
from tests.collector.liveserver import Client, ProcessServer  # noqa: E402


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def submit(client: Client, measurement: dict[str, Any], key: str) -> None:
    answer = client.post("/api/v1/submit", {"measurements": [
        {"idempotency_key": key, "measurement": measurement}]})  # fmt: skip
    status = answer.json()["results"][0]["status"] if answer.status == 200 else answer.status
    if status != "stored":
        raise RuntimeError(
            f"the collector did not store {key}: {answer.status} {answer.body[:200]!r}"
        )


def events_of(client: Client, asn: str) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/events?level=network&probe_asn={asn}")
    if answer.status != 200:
        return []
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def trial(client: Client, number: int, args: argparse.Namespace) -> float:
    """One network's background then blocking; the latency in seconds."""
    network = ("AZ", f"AS{64600 + number}")
    tag = f"latency{number}"
    working = lab_measurement("AS64500", "skype")
    failing = lab_measurement("AS64512", "skype")
    start = now() - dt.timedelta(seconds=args.background * args.bucket)
    for index in range(args.background * args.per_bucket):
        offset = index * args.bucket // args.per_bucket
        when = start + dt.timedelta(seconds=offset)
        submit(client, at(working, when, network), f"{tag}.quiet{index}")
    sent = 0
    first_ack: float | None = None
    deadline = time.monotonic() + args.every + 60 + args.timeout
    while time.monotonic() < deadline:
        submit(client, at(failing, now(), network), f"{tag}.blocked{sent}")
        sent += 1
        if first_ack is None:
            first_ack = time.monotonic()
        next_send = time.monotonic() + 1.0
        while time.monotonic() < next_send:
            if events_of(client, network[1]):
                latency = time.monotonic() - first_ack
                print(f"  trial {number}: {network[1]}, event served {latency:.1f} s after the "
                      f"first blocked measurement's acknowledgement ({sent} blocked sent)")  # fmt: skip
                return latency
            time.sleep(0.25)
    raise RuntimeError(f"no event for {network[1]} within {args.every + 60 + args.timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=float, default=30.0, help="--analyse-every (seconds)")
    parser.add_argument("--bucket", type=int, default=10, help="--analysis-bucket (seconds)")
    parser.add_argument("--background", type=int, default=40, help="quiet buckets before")
    parser.add_argument("--per-bucket", type=int, default=2, help="quiet measurements a bucket")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="beyond the target")
    args = parser.parse_args()
    target = args.every + 60
    with tempfile.TemporaryDirectory(prefix="msgwatch-latency-") as tmp:
        base = Path(tmp)
        log = base / "collector.log"
        server = ProcessServer(base / "data", log, "--analysis-dir", str(base / "analysis"),
                               "--analyse-every", str(args.every),
                               "--analysis-bucket", str(args.bucket)).start()  # fmt: skip
        client = server.client()
        try:
            print(f"collector on 127.0.0.1:{server.port}, a pass every {args.every:g} s, "
                  f"{args.bucket} s buckets; target: ≤ {target:g} s")  # fmt: skip
            latencies = [trial(client, n, args) for n in range(args.trials)]
        finally:
            client.close()
            server.terminate()
            passes = [line for line in log.read_text().splitlines() if "analysis" in line]
            print(f"collector's analysis log ({len(passes)} lines), last 3:")
            for line in passes[-3:]:
                print("  " + line[-200:])
    print(f"latency: median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s "
          f"over {len(latencies)} trials (target ≤ {target:g} s: "
          f"{'met' if max(latencies) <= target else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()

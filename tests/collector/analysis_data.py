"""Measurements with a story in time, made from real lab measurements (for the analysis's interfaces).

The lab's az-2017 run (``tests/data/lab-measurements.jsonl.gz``) measured Skype and WhatsApp on
ISP 1 (``AS64512``: voice and video blocked by call-traffic inspection, text working), and its
baseline run measured them on an open network (``AS64500``: everything working). :func:`story`
rewrites copies of the two into one network's timeline: buckets where calls work, then buckets
where they are blocked, each copy at its own second (so each has its own uid, a digest of its
line). Nothing else of them is changed: the analysis judges them as it judges the lab's.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import orjson

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"
NETWORK = ("AZ", "AS64512")


@cache
def _lab() -> tuple[bytes, ...]:
    with gzip.open(LAB) as handle:
        return tuple(handle.read().splitlines())


def lab_measurement(asn: str, service: str) -> dict[str, Any]:
    """A fresh copy of the lab's measurement of ``service`` on ``asn``."""
    for line in _lab():
        found: dict[str, Any] = orjson.loads(line)
        if (found["probe_asn"], found["input"]) == (asn, service):
            return found
    raise LookupError(f"no lab measurement of {service} on {asn}")


def at(measurement: dict[str, Any], when: dt.datetime, network: tuple[str, str]) -> dict[str, Any]:
    """``measurement`` taken at ``when`` (UTC) on ``network`` (country, ASN)."""
    moved = copy.deepcopy(measurement)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    moved.update(measurement_start_time=text, test_start_time=text)
    moved["probe_cc"], moved["probe_asn"] = network
    digest = hashlib.sha256(f"{text} {network}".encode()).hexdigest()[:16]
    moved["report_id"] = f"{when:%Y%m%dT%H%M%SZ}_msgwatch_{network[0]}_{network[1][2:]}_n1_{digest}"
    return moved


def story(
    start: dt.datetime,
    quiet: int,
    blocked: int,
    *,
    bucket: int = 3600,
    per_bucket: int = 1,
    network: tuple[str, str] = NETWORK,
    service: str = "skype",
) -> list[dict[str, Any]]:
    """``service`` on ``network``: ``quiet`` buckets where calls work, then ``blocked`` buckets
    where voice and video are blocked, ``per_bucket`` measurements in each."""
    working = lab_measurement("AS64500", service)
    failing = lab_measurement("AS64512", service)
    out = []
    for index in range(quiet + blocked):
        source = working if index < quiet else failing
        for k in range(per_bucket):
            when = start + dt.timedelta(seconds=index * bucket + k * max(1, bucket // per_bucket))
            out.append(at(source, when, network))
    return out


def write_jsonl(path: Path, measurements: list[dict[str, Any]]) -> Path:
    """``measurements`` as a JSONL file."""
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in measurements))
    return path


def analysed(base: Path, quiet: int = 64, blocked: int = 6) -> Path:
    """A lake of one real pass over :func:`story` (Skype on AS64512 working for ``quiet`` hours
    from 2026-05-20 00:00, then blocked for ``blocked``): its output directory."""
    from msgwatch.analysis.inputs.jsonl import jsonl_sources
    from msgwatch.analysis.passes import PassConfig, run_pass

    base.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(base / "story.jsonl", story(dt.datetime(2026, 5, 20), quiet, blocked))
    run_pass(PassConfig(sources=jsonl_sources([data]), out_dir=base / "analysis", workers=1))
    return base / "analysis"


def ooni_analysed(base: Path, quiet: int = 64, blocked: int = 8) -> Path:
    """A lake of one real pass over OONI's Signal measurements (the collector tests'
    :func:`~tests.collector.liveserver.envelope`), an hour apart: ``quiet`` where Signal works,
    then ``blocked`` where it times out. Its output directory."""
    from msgwatch.analysis.inputs.jsonl import jsonl_sources
    from msgwatch.analysis.passes import PassConfig, run_pass
    from tests.collector.liveserver import envelope

    base.mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2024, 1, 2)
    failing = {
        "signal_backend_status": "blocked",
        "signal_backend_failure": "generic_timeout_error",
    }
    measurements = []
    for n in range(quiet + blocked):
        when = f"{start + dt.timedelta(hours=n):%Y-%m-%d %H:%M:%S}"
        changes: dict[str, Any] = {"test_keys": failing} if n >= quiet else {}
        measurements.append(envelope(measurement_start_time=when, **changes))
    data = write_jsonl(base / "signal.jsonl", measurements)
    run_pass(PassConfig(sources=jsonl_sources([data]), out_dir=base / "analysis", workers=1))
    return base / "analysis"

"""The dashboard's fixture observatory: real lab measurements re-dated into a known story, one
hostile measurement, and the analysis's lake built from them (a real pass, no hand-made rows).

The story (ground truth the page and chart tests count against), country AZ, hourly buckets:

- AS65001: WhatsApp and Skype measured four times an hour for 72 hours from START; their calls
  (the lab's az-2017 ISP-1 measurements, voice and video blocked by DPI, text working) are blocked
  during hours 30–53 (BLOCKED), open before and after (the lab's ISP-2 measurements).
- AS65002: the same services measured the same way, open throughout (the control network).
- AS65003: one measurement (WhatsApp, open) carrying hostile strings (HOSTILE) where the network
  puts them: a DNS name, a failure string, an HTTP URL.

The lab's own 40 measurements (countries and networks of the lab, one day) are read in too.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from msgwatch.analysis.inputs.jsonl import jsonl_sources
from msgwatch.analysis.passes import PassConfig, PassReport, run_pass

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"
START = dt.datetime(2026, 5, 20, 0, 0)
HOURS = 72
BLOCKED = range(30, 54)
PER_HOUR = (5, 20, 35, 50)
SERVICES = ("whatsapp", "skype")
CC = "AZ"
CENSORED, CONTROL, HOSTILE_ASN = "AS65001", "AS65002", "AS65003"
HOSTILE = {
    "script": "<script>window.__pwned=1</script>",
    "url": "javascript:window.__pwned=2",
    "rtl": "\u202egpj.exe\u202c-rtl",
    "long": "a" * 10_240 + ".example",
}


@dataclass(frozen=True)
class Observatory:
    """What the fixture wrote: the measurements' file and the lake's directory."""

    measurements: Path
    lake: Path
    report: PassReport


def _lab(service: str, asn: str) -> dict[str, Any]:
    with gzip.open(LAB) as lines:
        for line in lines:
            measurement: dict[str, Any] = orjson.loads(line)
            if measurement["input"] == service and measurement["probe_asn"] == asn:
                return measurement
    raise LookupError(f"no lab measurement of {service} on {asn}")


def _copy(source: dict[str, Any], asn: str, when: dt.datetime) -> dict[str, Any]:
    # the raw socket events are most of a measurement's bytes and no verdict reads them
    keys = {**source["test_keys"], "network_events": []}
    return {
        **source,
        "test_keys": keys,
        "probe_cc": CC,
        "probe_asn": asn,
        "measurement_start_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "test_start_time": when.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _hostile(source: dict[str, Any], when: dt.datetime) -> dict[str, Any]:
    measurement = _copy(source, HOSTILE_ASN, when)
    keys = dict(measurement["test_keys"])
    queries = [dict(q) for q in keys["queries"]]
    queries[0]["hostname"] = HOSTILE["long"]
    if len(queries) > 1:
        queries[1]["hostname"] = HOSTILE["rtl"]
        queries[1]["failure"] = HOSTILE["script"]
    keys["queries"] = queries
    requests = [dict(r) for r in keys.get("requests") or []]
    if requests:
        requests[0]["request"] = {**requests[0]["request"], "url": HOSTILE["url"]}
        requests[0]["failure"] = HOSTILE["script"]
    keys["requests"] = requests
    measurement["test_keys"] = keys
    return measurement


def write_measurements(path: Path) -> int:
    """The fixture's measurements as JSONL at ``path``; returns how many."""
    blocked = {s: _lab(s, "AS64512") for s in SERVICES}
    open_ = {s: _lab(s, "AS64513") for s in SERVICES}
    count = 0
    with path.open("wb") as out:
        for hour in range(HOURS):
            for minute in PER_HOUR:
                when = START + dt.timedelta(hours=hour, minutes=minute)
                for service in SERVICES:
                    for asn in (CENSORED, CONTROL):
                        censored = asn == CENSORED and hour in BLOCKED
                        source = blocked[service] if censored else open_[service]
                        out.write(orjson.dumps(_copy(source, asn, when)) + b"\n")
                        count += 1
        out.write(orjson.dumps(_hostile(open_["whatsapp"], START + dt.timedelta(hours=40))))
        out.write(b"\n")
        count += 1
        with gzip.open(LAB) as lines:
            for line in lines:
                out.write(line.rstrip(b"\n") + b"\n")
                count += 1
    return count


def build(folder: Path) -> Observatory:
    """Write the measurements and run one analysis pass over them into ``folder / "lake"``."""
    folder.mkdir(parents=True, exist_ok=True)
    measurements = folder / "measurements.jsonl"
    write_measurements(measurements)
    lake = folder / "lake"
    report = run_pass(PassConfig(sources=jsonl_sources([measurements]), out_dir=lake, workers=1))
    return Observatory(measurements=measurements, lake=lake, report=report)

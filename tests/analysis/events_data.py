"""Aggregate rows of synthetic series with known events, for the event tests."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

T0 = dt.datetime(2017, 5, 1)
HOUR = 3600


def at(bucket: int, seconds: int = HOUR) -> str:
    """A bucket's start as row text."""
    return (T0 + dt.timedelta(seconds=bucket * seconds)).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Spec:
    """One series: who, how much noise, and the failing rate per bucket."""

    asn: str = "AS28787"
    cc: str = "AZ"
    service: str = "whatsapp"
    function: str = "voice"
    background: float = 0.05
    per_bucket: int = 6
    mechanism: str = "udp.dpi_call"
    control_ok: bool = True


def rows(
    spec: Spec, buckets: int, blocked: Callable[[int], float], seed: int = 1, seconds: int = HOUR
) -> list[dict[str, Any]]:
    """Aggregate rows: each measurement fails when blocked (share ``blocked(b)``) or by background."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for b in range(buckets):
        share = blocked(b)
        failing = blocking = 0
        for _ in range(spec.per_bucket):
            if rng.random() < share:
                blocking += 1
            elif rng.random() < spec.background:
                failing += 1
        base = {
            "bucket": at(b, seconds), "bucket_seconds": seconds, "probe_cc": spec.cc,
            "probe_asn": spec.asn, "service": spec.service, "function": spec.function, "probes": 1,
        }  # fmt: skip
        ok = spec.per_bucket - failing - blocking
        if ok:
            out.append(
                {**base, "verdict": "ok", "mechanism": "", "measurements": ok, "control_ok": ok}
            )
        if blocking:
            out.append(
                {
                    **base,
                    "verdict": "blocked",
                    "mechanism": spec.mechanism,
                    "measurements": blocking,
                    "control_ok": blocking if spec.control_ok else 0,
                }
            )
        if failing:
            out.append(
                {
                    **base,
                    "verdict": "blocked",
                    "mechanism": "tcp.timeout",
                    "measurements": failing,
                    "control_ok": 0,
                }
            )
        out.append(
            {**base, "verdict": "inconclusive", "mechanism": "", "measurements": 1, "control_ok": 0}
        )
    return out


def step(start: int, end: int, share: float = 1.0) -> Callable[[int], float]:
    """Blocked at ``share`` in [start, end)."""
    return lambda b: share if start <= b < end else 0.0


def episodic(start: int, end: int, on: int, off: int) -> Callable[[int], float]:
    """Blocked ``on`` buckets, working ``off`` buckets, from start to end."""
    return lambda b: 1.0 if start <= b < end and (b - start) % (on + off) < on else 0.0


def network(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The network events."""
    return [e for e in events if e["level"] == "network"]

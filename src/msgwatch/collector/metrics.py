"""The collector's counters and histograms, written in Prometheus' text exposition format (0.0.4).

Written by hand (a few dozen lines) rather than with ``prometheus_client``: the collector needs
counters, one labelled counter and two histograms, all updated from the event loop's single thread,
so plain integers suffice and no dependency is added.

Exposed:

- ``msgwatch_collector_accepted_total``: measurements stored (first time their key was seen);
- ``msgwatch_collector_duplicates_total``: submissions whose key was already stored;
- ``msgwatch_collector_rejected_total{reason}``: refusals by reason code (every code pre-declared);
- ``msgwatch_collector_storage_failures_total``: submissions answered 503 because the store failed;
- ``msgwatch_collector_request_duration_seconds{route}``: time to answer, by route template;
- ``msgwatch_collector_store_group_size``: measurements per ``put_many`` call the HTTP layer made;
- whatever numbers the store's ``health()`` reports (``msgwatch_collector_store_<name>``), e.g. the
  writer's group-commit sizes, as gauges.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from msgwatch.collector.models import REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GROUP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


class Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else _num(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_num(self.total)}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


class Metrics:
    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.storage_failures = 0
        self.rejected: dict[str, int] = dict.fromkeys(sorted(REASONS), 0)
        self.latency: dict[str, Histogram] = {}
        self.group_size = Histogram(GROUP_BUCKETS)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count

    def observe_latency(self, route: str, seconds: float) -> None:
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def render(self, store_health: Mapping[str, Any] | None = None) -> str:
        p = "msgwatch_collector"
        lines = [
            f"# HELP {p}_accepted_total Measurements stored (first submission of their key).",
            f"# TYPE {p}_accepted_total counter",
            f"{p}_accepted_total {self.accepted}",
            f"# HELP {p}_duplicates_total Submissions whose idempotency key was already stored.",
            f"# TYPE {p}_duplicates_total counter",
            f"{p}_duplicates_total {self.duplicates}",
            f"# HELP {p}_rejected_total Refused submissions and requests, by reason code.",
            f"# TYPE {p}_rejected_total counter",
            *(f'{p}_rejected_total{{reason="{_label(r)}"}} {n}' for r, n in self.rejected.items()),
            f"# HELP {p}_storage_failures_total Submissions answered 503: the store could not write.",
            f"# TYPE {p}_storage_failures_total counter",
            f"{p}_storage_failures_total {self.storage_failures}",
            f"# HELP {p}_request_duration_seconds Time to answer a request, by route template.",
            f"# TYPE {p}_request_duration_seconds histogram",
        ]
        for route, histogram in sorted(self.latency.items()):
            lines += histogram.lines(f"{p}_request_duration_seconds", f'route="{_label(route)}"')
        lines += [
            f"# HELP {p}_store_group_size Measurements per call to the store's put_many.",
            f"# TYPE {p}_store_group_size histogram",
            *self.group_size.lines(f"{p}_store_group_size"),
        ]
        for name, value in _flatten(store_health or {}):
            metric = f"{p}_store_{name}"
            lines += [f"# TYPE {metric} gauge", f"{metric} {_num(value)}"]
        return "\n".join(lines) + "\n"


_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The numeric leaves of the store's health, as metric-name-safe ``a_b_c`` names."""
    out: list[tuple[str, float]] = []
    for key, value in values.items():
        name = _NAME.sub("_", f"{prefix}{key}")
        if isinstance(value, bool):
            out.append((name, 1.0 if value else 0.0))
        elif isinstance(value, int | float):
            out.append((name, float(value)))
        elif isinstance(value, Mapping):
            out += _flatten(value, name + "_")
    return out


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))

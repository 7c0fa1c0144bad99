"""Country events: network events of one country that began together, by the same kind of means.

Rules:

- Network events cluster when they share ``probe_cc`` and mechanism family (the mechanism's part
  before the first "."; "" when none) and each starts within ``start_tolerance`` buckets of the
  cluster's first start (events sorted by start, then id). One network event is a cluster too: every
  network event belongs to exactly one country event.
- A country event spans its members: start = the earliest, start_after = the earliest member's,
  end = the latest (None if a member is ongoing); verdict and mechanism are the dominant ones by
  failing measurements; pattern is episodic if a member is; counts are sums, confidence the highest;
  "works" (controls) = the functions of the members' services that worked on their networks meanwhile.
- ``members`` lists the member event ids, networks, services and functions (sorted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from msgwatch.analysis.events.controls import worked_elsewhere
from msgwatch.analysis.events.model import NetworkEvent
from msgwatch.analysis.events.story import StoryFacts, sentence


def family(mechanism: str) -> str:
    """A mechanism's family (``udp.dpi_call`` → ``udp``)."""
    return mechanism.split(".")[0] if mechanism else ""


def dominant(counts: dict[str, int]) -> str:
    """The most frequent name (ties: the smallest name); "" when there is none."""
    if not counts:
        return ""
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def cluster(events: Sequence[NetworkEvent], tolerance: int) -> list[list[NetworkEvent]]:
    """Group network events into country clusters."""
    groups: dict[tuple[str, str], list[NetworkEvent]] = {}
    for ev in sorted(events, key=lambda e: (e.start, e.row["event_id"])):
        groups.setdefault((ev.key[0], family(ev.row["mechanism"] or "")), []).append(ev)
    clusters: list[list[NetworkEvent]] = []
    for _, members in sorted(groups.items()):
        current: list[NetworkEvent] = []
        for ev in members:
            if current and ev.start - current[0].start > tolerance:
                clusters.append(current)
                current = []
            current.append(ev)
        clusters.append(current)
    return clusters


def _sum(dicts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def country_row(members: Sequence[NetworkEvent], versions: dict[str, str]) -> dict[str, Any]:
    """The country event of one cluster."""
    first = members[0]
    cc = first.key[0]
    mechanisms = _sum([m.mechanisms for m in members])
    verdicts = _sum([m.verdicts for m in members])
    ongoing = any(m.end is None for m in members)
    ends = [m.row["end"] for m in members if m.row["end"] is not None]
    networks = sorted({m.key[1] for m in members})
    services = sorted({m.key[2] for m in members})
    functions = sorted({m.key[3] for m in members})
    measurements = sum(int(m.row["measurements"]) for m in members)
    failing = sum(m.failing for m in members)
    mechanism = dominant(mechanisms)
    pattern = "episodic" if any(m.row["pattern"] == "episodic" for m in members) else "continuous"
    works = sorted(set().union(*(m.works for m in members)) - set(functions))
    elsewhere = sorted(
        {asn for m in members for asn in worked_elsewhere(json.loads(m.row["controls"] or "{}"))}
        - set(networks)
    )
    start_row = min(members, key=lambda m: (m.row["start"], m.row["event_id"])).row
    end = None if ongoing else max(ends)
    digest = hashlib.sha256(
        f"country|{cc}|{family(mechanism)}|{start_row['start']}".encode()
    ).hexdigest()
    return {
        "event_id": "cty-" + digest[:20],
        "level": "country",
        "probe_cc": cc,
        "probe_asn": None,
        "service": services[0] if len(services) == 1 else None,
        "function": functions[0] if len(functions) == 1 else None,
        "verdict": dominant(verdicts) or None,
        "mechanism": mechanism or None,
        "pattern": pattern,
        "start": start_row["start"],
        "start_after": start_row["start_after"],
        "end": end,
        "end_before": None
        if ongoing
        else max(m.row["end_before"] for m in members if m.row["end_before"]),
        "ongoing": ongoing,
        "confidence": max(float(m.row["confidence"]) for m in members),
        "failing_share": round(failing / measurements, 4) if measurements else 0.0,
        "measurements": measurements,
        "buckets": max(int(m.row["buckets"]) for m in members),
        "evidence": json.dumps({"events": [m.row["event_id"] for m in members]}),
        "controls": json.dumps({"works": works, "worked_elsewhere": elsewhere}),
        "members": json.dumps(
            {
                "events": sorted(m.row["event_id"] for m in members),
                "networks": networks,
                "services": services,
                "functions": functions,
            }
        ),
        "story": sentence(
            StoryFacts(
                services,
                functions,
                networks,
                dominant(verdicts) or "failing",
                mechanism,
                pattern,
                start_row["start"],
                end,
                works,
                elsewhere,
            )
        ),
        **versions,
    }

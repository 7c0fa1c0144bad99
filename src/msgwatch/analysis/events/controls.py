"""Controls of a network event: did the same thing work elsewhere, or beside it, at the same time?

Rules (from the aggregate rows only, over the event's buckets [start, end)):

- ``other_networks``: per other network of the same country, the same service and function's ok and
  failing measurements; ``other_network_worked`` when one of them is mostly ok (ok ≥ 80 % of ≥ 3).
  That is what turns "it failed here" into "it was blocked here".
- ``same_network``: the same service's other functions on the same network, their ok share (so a
  story can say "text works").
- ``control_ok_share``: of the failing measurements inside, the share whose own control worked (the
  helper reached, the inverted replay went through); None when there are none.
"""

from __future__ import annotations

from typing import Any

from msgwatch.analysis.events.model import SeriesKey
from msgwatch.analysis.events.series import Buckets

WORKED_SHARE = 0.8
WORKED_MIN = 3


class Index:
    """The series of a detection, indexed for the controls."""

    def __init__(self, series: dict[SeriesKey, Buckets]) -> None:
        self.series = series
        self.by_function: dict[tuple[str, str, str], list[SeriesKey]] = {}
        self.by_network: dict[tuple[str, str, str], list[SeriesKey]] = {}
        for key in sorted(series):
            cc, asn, service, function = key
            self.by_function.setdefault((cc, service, function), []).append(key)
            self.by_network.setdefault((cc, asn, service), []).append(key)


def worked(ok: int, failing: int) -> bool:
    """Whether a control's counts say it worked: ok at least 80 % of at least 3 measurements."""
    return ok + failing >= WORKED_MIN and ok >= WORKED_SHARE * (ok + failing)


def worked_elsewhere(controls: dict[str, Any]) -> list[str]:
    """The other networks where the same thing worked meanwhile (a network event's controls)."""
    return [
        o["probe_asn"] for o in controls.get("other_networks", []) if worked(o["ok"], o["failing"])
    ]


def _counts(buckets: Buckets, start: int, end: int | None) -> tuple[int, int]:
    total = failing = 0
    for cell in buckets.window(start, end):
        total += cell[0]
        failing += cell[1]
    return total - failing, failing


def controls(index: Index, key: SeriesKey, start: int, end: int | None) -> dict[str, Any]:
    """The controls JSON of one network event."""
    cc, asn, service, function = key
    others: list[dict[str, Any]] = []
    for other in index.by_function.get((cc, service, function), []):
        if other == key:
            continue
        ok, failing = _counts(index.series[other], start, end)
        if ok + failing:
            others.append({"probe_asn": other[1], "ok": ok, "failing": failing})
    same = {}
    for other in index.by_network.get((cc, asn, service), []):
        if other == key:
            continue
        ok, failing = _counts(index.series[other], start, end)
        if ok + failing:
            same[other[3]] = round(ok / (ok + failing), 4)
    failing_inside = control_ok = 0
    for cell in index.series[key].window(start, end):
        failing_inside += cell[1]
        control_ok += cell[4]
    return {
        "other_networks": others,
        "other_network_worked": any(worked(o["ok"], o["failing"]) for o in others),
        "same_network": same,
        "control_ok_share": round(control_ok / failing_inside, 4) if failing_inside else None,
    }

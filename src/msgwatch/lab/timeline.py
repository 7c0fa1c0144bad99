"""A scenario with time: the analysis over the lab collector's data, against the expected events.

After an observatory scenario's phases, :func:`check` runs the analysis pass
(:func:`msgwatch.analysis.passes.run_pass`) over the collector's data directory
(:class:`msgwatch.collector.store.feed.ArchiveSource`) with the scenario's ``[analysis] bucket``
and ``detector`` knobs, every bucket before the end of the last phase closed, and compares the **network events** it finds
with the scenario's ``[[expect_event]]`` entries. Rules:

- **Exactly those events.** Each expected event must be found once: on the ISP's network
  (``probe_asn`` from the scenario's ``[networks]``), the same service and function, the same
  pattern (``continuous`` or ``episodic``). Every network event no expectation claims is a
  mismatch: an event on ISP 2, on text, or a third event on the calls fails the comparison.
- **Within one run interval.** The event's ``start`` lies within one bucket (the scenario's run
  interval) of the start of its ``start`` phase, and its ``end`` within one bucket of the end of
  its ``end`` phase (the start of the next phase, or the end of the run for the last phase, where
  an ongoing event also matches). Phase starts are wall-clock UTC, recorded as the rules came
  into force (:mod:`msgwatch.lab.run`).
- **One row shape.** :func:`compare` gives one row per expectation and one per unclaimed event:
  ``isp``, ``service``, ``function``, ``expected`` (the pattern, or ``none``), ``expected_start``,
  ``expected_end``, ``pattern``, ``start``, ``end``, ``event_id``, ``match``, ``why``.
- Country events are not compared one by one (they are made of the network events); their
  stories are reported.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.lab.plan import ISP_NETWORKS
from msgwatch.lab.scenario import ExpectEvent, Scenario

Record = dict[str, Any]
Boundaries = Sequence[tuple[str, dt.datetime]]


def _time(value: Any) -> dt.datetime | None:
    """An event's time as naive UTC (the lake gives datetimes or ``YYYY-MM-DD HH:MM:SS`` text)."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _text(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def isp_asn(scenario: Scenario, isp: str) -> str:
    """The ``probe_asn`` the ISP's probe records: the scenario's network, else the plan's."""
    network = scenario.networks.get(isp)  # type: ignore[call-overload]
    return f"AS{network.asn if network else ISP_NETWORKS[isp][0]}"


def phase_window(boundaries: Boundaries, start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
    """From the start of phase ``start`` to the end of phase ``end`` (the next boundary)."""
    names = [name for name, _ in boundaries]
    return boundaries[names.index(start)][1], boundaries[names.index(end) + 1][1]


@dataclass(frozen=True)
class Want:
    """One expected event, placed in time: its phases' window, and how far off it may be."""

    expect: ExpectEvent
    window: tuple[dt.datetime, dt.datetime]
    tolerance: dt.timedelta
    last: bool  # its end phase is the scenario's last: an ongoing event matches too


def _fits(event: Mapping[str, Any], want: Want) -> bool:
    """Pattern, and start and end within ``tolerance`` of the window's edges."""
    window, tolerance = want.window, want.tolerance
    start, end = _time(event.get("start")), _time(event.get("end"))
    if event.get("pattern") != want.expect.pattern or start is None:
        return False
    if abs(start - window[0]) > tolerance:
        return False
    if end is None:
        return want.last and bool(event.get("ongoing"))
    return abs(end - window[1]) <= tolerance


def compare(
    scenario: Scenario, boundaries: Boundaries, events: Sequence[Mapping[str, Any]]
) -> list[Record]:
    """The network events against ``scenario.expect_event`` (see the module's rules)."""
    assert scenario.analysis is not None
    tolerance = dt.timedelta(seconds=scenario.analysis.bucket_seconds)
    network = [e for e in events if e.get("level") == "network"]
    claimed: dict[int, int] = {}  # expectation → the event that fits it
    wants = [
        Want(e, phase_window(boundaries, e.start, e.end), tolerance,
             last=e.end == scenario.phase[-1].name)
        for e in scenario.expect_event
    ]  # fmt: skip
    candidates = []
    for n, want in enumerate(wants):
        key = (isp_asn(scenario, want.expect.isp), want.expect.service, want.expect.function)
        same = [
            i
            for i, e in enumerate(network)
            if (e.get("probe_asn"), e.get("service"), e.get("function")) == key
        ]
        candidates.append(same)
        taken = set(claimed.values())
        fit = next((i for i in same if i not in taken and _fits(network[i], want)), None)
        if fit is not None:
            claimed[n] = fit
    rows: list[Record] = []
    for n, want in enumerate(wants):
        unclaimed = [i for i in candidates[n] if i not in claimed.values()]
        near = claimed.get(n, _nearest(network, unclaimed, want.window[0]))
        expected = {**want.expect.model_dump(include={"isp", "service", "function", "why"}),
                    "expected": want.expect.pattern, "window": want.window}  # fmt: skip
        rows.append(_row(expected, network[near] if near is not None else {}, n in claimed))
    isps = {isp_asn(scenario, isp): isp for isp in ("isp1", "isp2")}
    for i, e in enumerate(network):
        if i not in claimed.values():
            asn = str(e.get("probe_asn"))
            unexpected = {"isp": isps.get(asn, asn), "service": e.get("service"),
                          "function": e.get("function"), "expected": "none", "window": None,
                          "why": "no event was expected here"}  # fmt: skip
            rows.append(_row(unexpected, e, False))
    return rows


def _nearest(
    network: Sequence[Mapping[str, Any]], candidates: list[int], start: dt.datetime
) -> int | None:
    """The candidate starting nearest ``start`` (shown beside a missed expectation)."""
    timed = [(abs((_time(network[i].get("start")) or start) - start), i) for i in candidates]
    return min(timed)[1] if timed else None


def _row(expected: Mapping[str, Any], found: Mapping[str, Any], match: bool) -> Record:
    """One comparison row: ``expected`` holds isp, service, function, expected, window, why."""
    window = expected["window"]
    return {
        "isp": expected["isp"],
        "service": expected["service"],
        "function": expected["function"],
        "expected": expected["expected"],
        "expected_start": _text(window[0]) if window else None,
        "expected_end": _text(window[1]) if window else None,
        "pattern": found.get("pattern"),
        "start": _text(_time(found.get("start"))),
        "end": _text(_time(found.get("end"))),
        "event_id": found.get("event_id"),
        "match": match,
        "why": expected["why"],
    }


def analyse(scenario: Scenario, data_dir: Path, out_dir: Path, closed_until: dt.datetime) -> Record:
    """One analysis pass over the collector's data into ``out_dir``; its report and events (the
    committed pass's events file, named by ``state.json``)."""
    from msgwatch.analysis.events.detect import DetectorParams
    from msgwatch.analysis.passes import PassConfig, run_pass
    from msgwatch.collector.store.feed import ArchiveSource

    assert scenario.analysis is not None
    bucket = scenario.analysis.bucket_seconds
    config = PassConfig(
        sources=[ArchiveSource(data_dir)],
        out_dir=out_dir,
        bucket_seconds=bucket,
        workers=1,
        closed_until=closed_until,
        detector=DetectorParams.clean(bucket) if scenario.analysis.detector == "clean" else None,
    )
    report = run_pass(config)
    state = json.loads((out_dir / "state.json").read_text())
    listing = state.get("files", {}).get("events_json")
    events = json.loads((out_dir / listing).read_text()) if listing else []
    return {"report": report.to_json(), "events": events}


def check(scenario: Scenario, boundaries: Boundaries, data_dir: Path, out_dir: Path) -> Record:
    """Analyse, then compare: the events, the comparison rows, the country events' stories."""
    analysed = analyse(scenario, data_dir, out_dir, closed_until=boundaries[-1][1])
    events = [_jsonable(e) for e in analysed["events"]]
    rows = compare(scenario, boundaries, events)
    return {
        "bucket_seconds": scenario.analysis.bucket_seconds if scenario.analysis else None,
        "phases": [{"phase": name, "start": _text(at)} for name, at in boundaries],
        "rows": rows,
        "matched": sum(1 for r in rows if r["match"]),
        "total": len(rows),
        "events": events,
        "stories": [e["story"] for e in events if e.get("level") == "country" and e.get("story")],
        "analysis_dir": str(out_dir),
        "data_dir": str(data_dir),
        "pass": analysed["report"],
    }


def _jsonable(event: Mapping[str, Any]) -> Record:
    """An event row with its times as text (for ``--json`` and the events file)."""
    return {k: _text(v) if isinstance(v, dt.datetime) else v for k, v in event.items()}

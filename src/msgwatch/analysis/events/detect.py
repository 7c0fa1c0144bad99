"""Blocking events from aggregate rows: the entry point both engines call (docs/method/events.md).

Rules:

- Rows are AGGREGATE_COLUMNS rows in any order; they are grouped per series (probe_cc, probe_asn,
  service, function) and fed to :class:`~msgwatch.analysis.events.detector.Series` oldest first.
  Rows ordered by (probe_cc, service) (``by_scope``, with their newest bucket) are taken one
  country and service at a time, which is all an event's summary and controls read: memory is
  then bounded by the largest of them, not by the lake (the DuckDB pass does so).
- Online: with a ``state``, only buckets at or after its horizon are fed. Buckets before
  ``closed_until`` (whole buckets; default: all but the newest bucket seen) are committed into the
  returned state; later ones are fed to a copy, so an event can start (or end) in an open bucket
  and be revised by the next pass. ``state=None``, or a state of another detector version or
  bucket size, rebuilds from all rows. Feeding a history in pieces gives the same events as once.
- The events returned are all of them: network events then country events, each series' events
  summarised from the rows of its buckets [start, end), ids a hash of series and start.
- Incremental summaries: a network event closed before the new horizon (``end + 1`` < it) is final:
  no bucket it was summarised from can change (data before the horizon rebuilds). The state keeps
  its row and what clustering needs (``summaries``). A detection given the rows from
  :func:`rows_needed` only (``rows_from``: every series from the horizon on, the series of a
  country and service where an event may start earlier from there) takes such an event from the
  state when the detector closed it the same way again, and summarises every other event from the
  rows; one that starts before its rows raises :class:`NeedsAllRows` (the caller detects again
  from all rows). Either way the events are those of a detection from all rows.
- Confidence = (1 - exp(-LLR / threshold)) · (0.5 + 0.5 · min(1, measurements / 10)) · controls,
  controls = 0.7, + 0.15 when another network of the country worked, + 0.15 when the failing
  measurements' own controls mostly (≥ 50 %) worked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from msgwatch.analysis.events import cluster, controls, evidence
from msgwatch.analysis.events.detector import Closed, Series
from msgwatch.analysis.events.model import Detection, NetworkEvent, SeriesKey, VerdictRef
from msgwatch.analysis.events.params import DetectorParams
from msgwatch.analysis.events.series import Buckets, bucket_number, bucket_time, collect, time_text
from msgwatch.analysis.events.story import StoryFacts, sentence

__all__ = ["DETECTOR_VERSION", "DetectorParams", "detect"]

DETECTOR_VERSION: Final = "1.6.0"

Evidence = Callable[[list[tuple[SeriesKey, dt.datetime, dt.datetime]]], Iterable[VerdictRef]]


class NeedsAllRows(Exception):
    """An event to summarise starts before the rows the detection was given."""


@dataclass(frozen=True)
class RowsNeeded:
    """Which aggregate rows an incremental detection needs: every series' from ``horizon`` on,
    and, per (probe_cc, service) in ``scopes``, from an earlier bucket (an event of a series of
    that country and service may start there, and its controls read the other networks' same
    function and the same network's other functions: all series of the scope)."""

    horizon: int
    scopes: dict[tuple[str, str], int]

    def first(self, key: SeriesKey) -> int:
        """The first bucket read for the series ``key``."""
        return self.scopes.get((key[0], key[2]), self.horizon)


def rows_needed(params: DetectorParams, state: dict[str, Any] | None) -> RowsNeeded | None:
    """The aggregate rows the next detection needs, given the committed ``state``; None when it
    needs all of them (no usable state, or one without summaries)."""
    if state is None or not _usable(state, params) or not isinstance(state.get("summaries"), list):
        return None
    horizon, detectors = _load(params, state)
    if horizon is None:
        return None
    scopes: dict[tuple[str, str], int] = {}
    for key, det in detectors.items():
        first = det.needs_from(params, horizon)
        scope = (key[0], key[2])
        if first < scopes.get(scope, horizon):
            scopes[scope] = first
    return RowsNeeded(horizon, scopes)


Summary = tuple[Closed, NetworkEvent]


def _summaries(state: dict[str, Any] | None) -> dict[tuple[SeriesKey, int], Summary]:
    """The final network events of ``state`` by (series, start)."""
    found: dict[tuple[SeriesKey, int], Summary] = {}
    for entry in (state or {}).get("summaries") or []:
        if not (isinstance(entry, list) and len(entry) == 10):
            continue
        cc, asn, service, function, closed, row, mechanisms, verdicts, failing, works = entry
        key: SeriesKey = (cc, asn, service, function)
        event = NetworkEvent(key, closed[0], closed[2], row, mechanisms, verdicts, failing,
                             tuple(works))  # fmt: skip
        found[(key, closed[0])] = (closed, event)
    return found


def _summary_entry(closed: Closed, event: NetworkEvent) -> list[Any]:
    return [*event.key, list(closed), event.row, event.mechanisms, event.verdicts,
            event.failing, list(event.works)]  # fmt: skip


def _usable(state: dict[str, Any] | None, params: DetectorParams) -> bool:
    return (
        isinstance(state, dict)
        and state.get("detector_version") == DETECTOR_VERSION
        and state.get("bucket_seconds") == params.bucket_seconds
        and isinstance(state.get("series"), list)
    )


def _load(
    params: DetectorParams, state: dict[str, Any] | None
) -> tuple[int | None, dict[SeriesKey, Series]]:
    if state is None or not _usable(state, params):
        return None, {}
    detectors: dict[SeriesKey, Series] = {}
    for entry in state["series"]:
        detectors[(entry[0], entry[1], entry[2], entry[3])] = Series.load(params, entry[4])
    horizon = state.get("horizon")
    return (horizon if isinstance(horizon, int) else None), detectors


def _scope(key: SeriesKey) -> tuple[str, str]:
    return key[0], key[2]


def _groups(
    rows: Iterable[Mapping[str, Any]], seconds: int, by_scope: bool
) -> Iterator[dict[SeriesKey, Buckets]]:
    """The series of the rows: all at once, or one (probe_cc, service) after another when the
    rows come ordered by them (``by_scope``)."""
    if not by_scope:
        yield collect(rows, seconds)
        return
    seen: set[tuple[str, str]] = set()
    for scope, scope_rows in itertools.groupby(
        rows, key=lambda r: (str(r["probe_cc"] or ""), str(r["service"] or ""))
    ):
        if scope in seen:  # its series would be fed twice
            raise ValueError(f"aggregate rows not ordered by probe_cc and service: {scope}")
        seen.add(scope)
        yield collect(scope_rows, seconds)


def _feed(
    params: DetectorParams, det: Series, buckets: Buckets, horizon: int | None, limit: int
) -> list[Closed]:
    """Feed one series' buckets (those before ``limit`` into ``det``, the later ones into a copy);
    its events."""
    numbers = [n for n in buckets.ordered() if horizon is None or n >= horizon]
    cells = buckets.by_number
    i = 0
    for i, n in enumerate(numbers):  # noqa: B007
        if n >= limit:
            break
        cell = cells[n]
        det.feed(params, n, cell[0], cell[1])
    else:
        i = len(numbers)
    det.trim(params)
    later = numbers[i:]
    if later:
        det = Series.load(params, det.dump())
        for n in later:
            cell = cells[n]
            det.feed(params, n, cell[0], cell[1])
    return det.events(params)


def detect(
    aggregate_rows: Iterable[Mapping[str, Any]],
    params: DetectorParams,
    state: dict[str, Any] | None,
    closed_until: dt.datetime | None,
    evidence: Evidence | None = None,
    rules_version: str = "",
    rows_from: RowsNeeded | None = None,
    by_scope: bool = False,
    newest: int | None = None,
) -> Detection:
    """Feed the buckets, then assemble network and country events (see the module's rules).

    ``rows_from``: the rows are only those :func:`rows_needed` said. ``by_scope``: the rows come
    ordered by (probe_cc, service), ``newest`` is their newest bucket (None: there are none), and
    one country and service's series are held at a time (memory bounded by the largest of them,
    not the lake); otherwise the rows may come in any order and are all held."""
    seconds = params.bucket_seconds
    groups = _groups(aggregate_rows, seconds, by_scope)
    horizon, detectors = _load(params, state)
    if not by_scope:
        held = next(groups)
        newest = max((max(b.by_number) for b in held.values() if b.by_number), default=None)
        groups = iter([held])
    if closed_until is not None:
        limit = bucket_number(closed_until, seconds)
    else:
        limit = newest if newest is not None else (horizon or 0)
    if horizon is not None:
        limit = max(limit, horizon)
    versions = {"rules_version": rules_version, "detector_version": DETECTOR_VERSION}
    carried = _summaries(state) if rows_from is not None else {}
    waiting: dict[tuple[str, str], list[SeriesKey]] = {}
    for key in sorted(detectors):
        waiting.setdefault(_scope(key), []).append(key)
    per_key: dict[SeriesKey, list[tuple[Closed, NetworkEvent, bool]]] = {}
    last: dict[SeriesKey, int] = {}  # the newest bucket of a series with an open event

    def assemble(series: dict[SeriesKey, Buckets], keys: Iterable[SeriesKey]) -> None:
        index = controls.Index(series)
        for key in sorted(keys):
            det = detectors.get(key) or Series(params)
            detectors[key] = det
            buckets = series.get(key) or Buckets()
            found = _feed(params, det, buckets, horizon, limit)
            out = per_key[key] = []
            for ev in found:
                summary = carried.get((key, ev[0])) if ev[2] is not None else None
                if summary is not None and summary[0] == ev:
                    out.append((ev, summary[1], False))
                    continue
                if rows_from is not None and ev[0] < rows_from.first(key):
                    raise NeedsAllRows(f"an event of {key} starts at {ev[0]}, before its rows")
                out.append((ev, _network_event(params, index, key, ev, versions), True))
                if ev[2] is None:
                    last[key] = max(buckets.by_number, default=ev[0])

    for series in groups:
        scopes = {_scope(key) for key in series}
        keys = set(series).union(*(waiting.pop(scope, []) for scope in scopes))
        assemble(series, keys)
    for rest in waiting.values():  # series of the state with no rows read
        assemble({}, rest)
    new_state = {
        "detector_version": DETECTOR_VERSION,
        "bucket_seconds": seconds,
        "horizon": limit,
        "series": [[*key, detectors[key].dump()] for key in sorted(detectors)],
    }
    ordered = [item for key in sorted(per_key) for item in per_key[key]]
    network = [event for _, event, _ in ordered]
    made = [event for _, event, fresh in ordered if fresh]
    if evidence is not None and made:
        _attach_evidence(params, made, evidence, last)
    new_state["summaries"] = [
        _summary_entry(ev, event)
        for ev, event, _ in ordered
        if ev[2] is not None and ev[2] + 1 < limit
    ]
    rows = [e.row for e in network]
    for members in cluster.cluster(network, params.start_tolerance):
        rows.append(cluster.country_row(members, versions))
    return Detection(events=rows, state=new_state, carried=len(network) - len(made))


def _network_event(
    params: DetectorParams,
    index: controls.Index,
    key: SeriesKey,
    ev: Closed,
    versions: dict[str, str],
) -> NetworkEvent:
    """One detector event as an EVENT_COLUMNS row (summarised from its buckets)."""
    start, start_after, end, end_before, pattern, llr = ev[:6]
    seconds = params.bucket_seconds
    cells = index.series[key].window(start, end) if key in index.series else []
    total = sum(c[0] for c in cells)
    failing = sum(c[1] for c in cells)
    mechanisms: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    for c in cells:
        for k, v in c[2].items():
            mechanisms[k] = mechanisms.get(k, 0) + v
        for k, v in c[3].items():
            verdicts[k] = verdicts.get(k, 0) + v
    ctl = controls.controls(index, key, start, end) if key in index.series else {}
    factor = 0.7 + (0.15 if ctl.get("other_network_worked") else 0.0)
    share = ctl.get("control_ok_share")
    factor += 0.15 if share is not None and share >= 0.5 else 0.0
    confidence = (
        (1.0 - math.exp(-llr / params.threshold)) * (0.5 + 0.5 * min(1.0, total / 10)) * factor
    )
    works = tuple(
        sorted(f for f, ok in ctl.get("same_network", {}).items() if ok >= controls.WORKED_SHARE)
    )
    cc, asn, service, function = key
    start_text = time_text(start, seconds)
    end_text = time_text(end, seconds)
    verdict = cluster.dominant(verdicts)
    mechanism = cluster.dominant(mechanisms)
    digest = hashlib.sha256(
        f"net|{cc}|{asn}|{service}|{function}|{start_text}".encode()
    ).hexdigest()
    row = {
        "event_id": "net-" + digest[:20],
        "level": "network",
        "probe_cc": cc,
        "probe_asn": asn,
        "service": service,
        "function": function,
        "verdict": verdict or None,
        "mechanism": mechanism or None,
        "pattern": pattern,
        "start": start_text,
        "start_after": time_text(start_after if start_after >= 0 else None, seconds),
        "end": end_text,
        "end_before": time_text(end_before if end_before >= 0 else None, seconds),
        "ongoing": end is None,
        "confidence": round(confidence, 4),
        "failing_share": round(failing / total, 4) if total else 0.0,
        "measurements": total,
        "buckets": len(cells),
        "evidence": None,  # filled by _attach_evidence when the engine gives verdicts
        "controls": json.dumps(ctl, sort_keys=True),
        "members": None,
        "story": sentence(
            StoryFacts(
                [service],
                [function],
                [asn],
                verdict or "failing",
                mechanism,
                pattern,
                start_text or "",
                end_text,
                works,
                controls.worked_elsewhere(ctl),
            )
        ),
        **versions,
    }
    return NetworkEvent(key, start, end, row, mechanisms, verdicts, failing, works)


def _attach_evidence(
    params: DetectorParams,
    events: list[NetworkEvent],
    source: Evidence,
    last: dict[SeriesKey, int],
) -> None:
    """Ask the engine for each event's window of verdicts once, then select."""
    seconds = params.bucket_seconds
    windows = []
    for ev in events:
        after = ev.row["start_after"]
        since = dt.datetime.fromisoformat(after) if after else bucket_time(ev.start - 1, seconds)
        final = ev.end if ev.end is not None else last.get(ev.key, ev.start)
        windows.append((ev.key, since, bucket_time(final + 1, seconds)))
    refs: dict[SeriesKey, list[VerdictRef]] = {}
    for ref in source(windows):
        refs.setdefault(ref.key, []).append(ref)
    for ev, (key, since, until) in zip(events, windows, strict=True):
        mine = [r for r in refs.get(key, []) if since <= r.time < until]
        start = bucket_time(ev.start, seconds)
        end = None if ev.end is None else bucket_time(ev.end, seconds)
        ev.row["evidence"] = json.dumps(evidence.select(mine, start, end, params.evidence_inside))

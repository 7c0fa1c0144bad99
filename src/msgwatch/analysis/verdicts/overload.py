"""A timeout the probe caused: its own event loop stalled while the step waited.

A step times out when no answer was *read* before its deadline. When the probe's event loop is
late (the machine is busy with other work, or the probe with its own), an answer that arrived in
time waits unread, and the deadline's timer fires in the same turn of the loop as the read would
have: the step records ``generic_timeout_error`` for a path that answered. That is not evidence of
blocking. The probe measures its loop's lag for the whole run (:mod:`msgwatch.steps.lag`,
``msgwatch_probe_lag``: the stalls as ``[start, seconds]`` since the measurement's start), and the
judge reads a timed-out endpoint as ``inconclusive``, mechanism ``probe.overloaded``, when the loop
stalled for at least :data:`OVERLOAD_SHARE` of the endpoint's chain (from its first event to its
last) and at least :data:`OVERLOAD_MIN` seconds: the probe was not listening for a large part of
the time it waited. A timeout while the loop ran on time stays the network's. The same holds for a throughput
comparison (rule ``throttle.sni``): a "throttled" reading whose downloads overlapped such stalls is
``probe.overloaded`` (:func:`throughput_overloaded`).
"""

from __future__ import annotations

from typing import Any

from msgwatch.analysis.parse import resolved
from msgwatch.analysis.verdicts.rules import Rule

Record = dict[str, Any]
TIMEOUT = "generic_timeout_error"
OVERLOAD_SHARE = 0.25
OVERLOAD_MIN = 0.2
"""Seconds: shorter stalls in all never make a timeout the probe's."""
MAX_STALLS = 10_000

OVERLOADED = Rule(
    id="probe.overloaded",
    verdict="inconclusive",
    mechanism="probe.overloaded",
    confidence=0.3,
    explain="The step timed out while the probe itself was too busy to read its answers (its "
    "event loop stalled for a large part of the wait): not evidence of blocking.",
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stalls(keys: Record) -> list[tuple[float, float]]:
    """The measurement's stalls of the probe's loop, as (start, seconds); [] without a record."""
    record = keys.get("msgwatch_probe_lag")
    raw = record.get("stalls") if isinstance(record, dict) else None
    out: list[tuple[float, float]] = []
    for item in (raw if isinstance(raw, list) else [])[:MAX_STALLS]:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            start, seconds = _number(item[0]), _number(item[1])
            if start is not None and seconds is not None and seconds > 0:
                out.append((start, seconds))
    return out


def stalled(keys: Record, start: float, end: float) -> float:
    """Seconds of the probe's stalls inside ``[start, end]`` (measurement time)."""
    return sum(max(0.0, min(s + d, end) - max(s, start)) for s, d in stalls(keys))


def span(target: Record, keys: Record) -> tuple[float, float] | None:
    """From the first to the last network event of the target's transactions, or None."""
    ids = target.get("transaction_ids")
    txids = {i for i in ids if isinstance(i, int)} if isinstance(ids, list) else set()
    events = resolved(keys, "network_events")
    times: list[float] = []
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and event.get("transaction_id") in txids:
            times += [t for k in ("t0", "t") if (t := _number(event.get(k))) is not None]
    return (min(times), max(times)) if times else None


def overloaded(target: Record, keys: Record) -> bool:
    """Whether the target timed out while the probe's loop stalled (module notes)."""
    if target.get("failure") != TIMEOUT:
        return False
    window = span(target, keys)
    if window is None:
        return False
    lost = stalled(keys, *window)
    return lost >= OVERLOAD_MIN and lost >= OVERLOAD_SHARE * (window[1] - window[0])


UNREAD_SLACK = 0.1
"""Seconds: how far before a timed-out target's last event a stall may end and still count as the
one its deadline fell in (the lag monitor samples every 20 ms and keeps lags over 50 ms)."""


def unread(target: Record, keys: Record) -> bool:
    """Whether the target timed out with the probe's loop stalled at its deadline. Only then can an
    answer have waited unread: one that came before the stall was read, one that came during a
    stall that ended before the deadline was read when the loop came back, but when the deadline
    falls inside the stall, its timer comes due in the same turn of the loop as the read and wins.
    Narrower than :func:`overloaded`, which also counts a long wait spent mostly stalled."""
    if target.get("failure") != TIMEOUT:
        return False
    window = span(target, keys)
    if window is None:
        return False
    end = window[1]
    return any(start <= end and start + seconds >= end - UNREAD_SLACK
               for start, seconds in stalls(keys))  # fmt: skip


def throughput_overloaded(records: list[Record], keys: Record) -> bool:
    """Whether the probe's loop stalled for a large part of a throughput comparison (the real-name
    and benign-name downloads, run at once): the bytes each download got were what the probe found
    time to read, so a ratio between them says nothing about the network. Same share and minimum
    as :func:`overloaded`, over the downloads' window (first ``t0`` to last ``t``)."""
    starts = [t for r in records if (t := _number(r.get("t0"))) is not None]
    ends = [t for r in records if (t := _number(r.get("t"))) is not None]
    if not starts or not ends:
        return False
    start, end = min(starts), max(ends)
    lost = stalled(keys, start, end)
    return lost >= OVERLOAD_MIN and lost >= OVERLOAD_SHARE * max(0.0, end - start)

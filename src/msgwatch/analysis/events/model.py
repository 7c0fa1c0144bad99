"""The detector's input and output types (the contract between the pass, Spark and the detector)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

SeriesKey = tuple[str, str, str, str]
"""(probe_cc, probe_asn, service, function)."""


@dataclass(frozen=True)
class SeriesBucket:
    """One series' counts in one bucket, from the aggregate rows."""

    key: SeriesKey
    start: dt.datetime  # the bucket's start, naive UTC
    total: int  # measurements with a verdict that says something (ok or interference)
    failing: int  # measurements whose verdict is interference (blocked, throttled, degraded)
    mechanisms: dict[str, int] = field(default_factory=dict)  # failing measurements by mechanism
    verdicts: dict[str, int] = field(default_factory=dict)  # failing measurements by verdict
    control_ok: int = 0  # measurements whose own control worked (the helper, the inverted replay)


@dataclass(frozen=True)
class VerdictRef:
    """One verdict row, as much as the evidence needs."""

    measurement_uid: str
    time: dt.datetime
    verdict: str
    key: SeriesKey


@dataclass
class Detection:
    """What :func:`~msgwatch.analysis.events.detect.detect` returns."""

    events: list[dict[str, Any]]  # rows of EVENT_COLUMNS, network events then country events
    state: dict[str, Any]  # the detector's JSON-able state (closed buckets only)
    carried: int = 0  # network events taken from the state's summaries, not summarised again


@dataclass
class NetworkEvent:
    """A network event while it is being assembled (the row, plus what clustering needs)."""

    key: SeriesKey
    start: int  # bucket number
    end: int | None  # bucket number, None while ongoing
    row: dict[str, Any]  # the EVENT_COLUMNS row
    mechanisms: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    failing: int = 0
    works: tuple[str, ...] = ()  # other functions of the service that worked meanwhile

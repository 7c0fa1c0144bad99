"""What the dashboard's views show: plain, typed, immutable values, built by :mod:`.data` from the
analysis's lake and rendered by the charts, the pages, the exports, the feeds and the report.

Rules:

- Every value here came from the lake (or a stored measurement) and is hostile text: the renderers
  escape it; nothing here is ever markup.
- Times are UTC text ``YYYY-MM-DD HH:MM:SS`` as the lake writes them; shares are 0..1 or None
  (no measurement); counts are ints.
- ``failing`` counts the verdicts ``blocked``, ``throttled`` and ``degraded``; ``ok`` counts ``ok``;
  ``inconclusive`` and ``not_measured`` count in ``measurements`` only. ``share`` is
  failing / (ok + failing), None when both are 0 (the analysis's ``failing_share``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAILING = ("blocked", "throttled", "degraded")
STATES = ("blocked", "throttled", "degraded", "inconclusive", "ok", "no_data")
"""A cell's state, worst first (the order the overview sorts and colours by)."""


@dataclass(frozen=True)
class Counts:
    """Verdict rows of one group: all of them, the failing, the ok, and distinct probes."""

    measurements: int = 0
    failing: int = 0
    ok: int = 0
    probes: int = 0
    control_ok: int = 0

    @property
    def share(self) -> float | None:
        judged = self.failing + self.ok
        return None if judged == 0 else self.failing / judged


@dataclass(frozen=True)
class Cell:
    """One country × service × function in the overview, as of the view's end."""

    probe_cc: str
    service: str
    function: str
    state: str  # one of STATES: the state of the latest measured window
    mechanism: str | None  # the mechanism most failing rows show, None when none fail
    pattern: str | None  # "continuous" | "episodic" of an ongoing event, else None
    counts: Counts  # over the view's window
    networks: int  # networks measured
    networks_failing: int  # networks whose state is failing
    last_measured: str | None
    events: tuple[str, ...] = ()  # ids of the ongoing events of this cell


@dataclass(frozen=True)
class Overview:
    since: str
    until: str
    cells: tuple[Cell, ...]  # sorted by probe_cc, service, function
    countries: tuple[str, ...]
    services: tuple[str, ...]
    functions: tuple[str, ...]
    events: tuple[EventRow, ...]  # the newest events in the window (at most 20)


@dataclass(frozen=True)
class Point:
    """One time bucket of one series."""

    bucket: str
    counts: Counts
    by_verdict: dict[str, int] = field(default_factory=dict)
    mechanism: str | None = None  # the most frequent failing mechanism in the bucket


@dataclass(frozen=True)
class Series:
    """The share of failing verdicts over time of one (cc, asn or None, service, function)."""

    probe_cc: str
    probe_asn: str | None  # None: the whole country
    service: str
    function: str
    grain_seconds: int
    points: tuple[Point, ...]  # ascending by bucket, only buckets with measurements


@dataclass(frozen=True)
class Comparison:
    """A series against its controls over the same buckets: what makes "failed" read "blocked"."""

    subject: Series
    other_networks: tuple[Series, ...]  # the same service/function on the country's other networks
    control_ok: tuple[tuple[str, float | None], ...]  # per bucket: share of the subject's rows
    # whose own control (the domestic helper, the bit-inverted replay) worked


@dataclass(frozen=True)
class HeatCell:
    bucket: str
    state: str  # one of STATES
    counts: Counts


@dataclass(frozen=True)
class HeatRow:
    service: str
    function: str
    cells: tuple[HeatCell, ...]  # one per bucket of NetworkView.buckets, "no_data" where none


@dataclass(frozen=True)
class EventRow:
    """One row of the analysis's events table, JSON columns decoded."""

    event_id: str
    level: str
    probe_cc: str
    probe_asn: str | None
    service: str | None
    function: str | None
    verdict: str
    mechanism: str | None
    pattern: str
    start: str
    start_after: str | None
    end: str | None
    end_before: str | None
    ongoing: bool
    confidence: float
    failing_share: float | None
    measurements: int
    buckets: int
    evidence: dict[str, Any]
    controls: dict[str, Any]
    members: dict[str, Any] | None
    story: str
    rules_version: str
    detector_version: str


@dataclass(frozen=True)
class NetworkView:
    probe_cc: str
    probe_asn: str
    since: str
    until: str
    grain_seconds: int
    buckets: tuple[str, ...]  # the heatmap's columns, ascending
    rows: tuple[HeatRow, ...]  # sorted by service, function
    events: tuple[EventRow, ...]  # the network's events overlapping the window


@dataclass(frozen=True)
class EventView:
    event: EventRow
    network_events: tuple[EventRow, ...]  # a country event's members; () for a network event
    # per affected series, from before the start to after the end
    comparisons: tuple[Comparison, ...]
    verdicts: tuple[dict[str, Any], ...]  # the verdict rows behind it, ≤ 500


@dataclass(frozen=True)
class Step:
    """One observation of a measurement, as a human reads the trace."""

    kind: str  # dns tcp tls http stun turn app replay throughput bootstrap
    target: str | None
    role: str | None
    what: str  # e.g. "DNS A web.whatsapp.com", "TCP 198.18.3.5:443", "TLS SNI g.whatsapp.net"
    failure: str | None
    t: float | None
    figures: dict[str, Any]  # loss, throughput_kbps, bytes, packets, status_code, answers


@dataclass(frozen=True)
class Interval:
    t: float
    tx_packets: int
    rx_packets: int


@dataclass(frozen=True)
class Replay:
    """One call replay pair: the original call traffic against its bit-inverted control."""

    service: str
    function: str
    target: str
    original: tuple[Interval, ...]
    control: tuple[Interval, ...]
    original_loss: float | None
    control_loss: float | None


@dataclass(frozen=True)
class MeasurementView:
    measurement_uid: str
    measurement_start_time: str
    probe_cc: str
    probe_asn: str
    test_name: str
    source: str
    steps: tuple[Step, ...]
    verdicts: tuple[dict[str, Any], ...]
    replays: tuple[Replay, ...]
    raw: dict[str, Any] | None  # the stored measurement, when a measurement source has it

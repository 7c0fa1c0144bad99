"""Series over time from the aggregates: a network's heatmap and a series against its controls.

Rules:

- A series' points are the grain's buckets (``time_bucket`` from the epoch) that hold
  measurements, ascending; a point's mechanism is the one most of its failing rows show.
- The heatmap has one column per grain bucket of the window, at most :data:`MAX_COLUMNS`: a grain
  that would give more is coarsened along :data:`LADDER`. Its rows are the service-functions the
  network measured in the window (those of the filters' service and function); a bucket without
  rows is ``no_data``.
- A comparison's other networks are the country's networks, other than the subject's, that
  measured the same service and function in the window, the most measured first (at most
  :data:`MAX_OTHERS`). ``control_ok`` per subject bucket is control_ok / measurements.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from msgwatch.dashboard import data_eventrows, data_rollup
from msgwatch.dashboard.data_sql import (
    COUNTS_SQL,
    STATE_SQL,
    TIME_FORMAT,
    Reader,
    Where,
    filters,
    parse_time,
)
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import (
    FAILING,
    Comparison,
    Counts,
    HeatCell,
    HeatRow,
    NetworkView,
    Point,
    Series,
)

MAX_COLUMNS: Final = 240
MAX_OTHERS: Final = 5
LADDER: Final = (3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000)
_EPOCH: Final = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class SeriesKey:
    """Which series: a network's, or the whole country's (``asn`` None)."""

    cc: str
    asn: str | None
    service: str
    function: str


def bucket_sql(grain: int) -> str:
    """The grain bucket of an aggregate row, as SQL."""
    return f"time_bucket(INTERVAL {int(grain)} SECOND, bucket, TIMESTAMP '1970-01-01')"


def columns(window: tuple[str, str], grain: int) -> list[str]:
    """The grain buckets overlapping the window, ascending."""
    since, until = (parse_time(t) for t in window)
    first = int((since - _EPOCH).total_seconds()) // grain * grain
    end = (until - _EPOCH).total_seconds()
    return [
        (_EPOCH + dt.timedelta(seconds=s)).strftime(TIME_FORMAT)
        for s in range(first, int(end), grain)
        if s < end
    ]


def heat_grain(window: tuple[str, str], grain: int) -> int:
    """``grain``, coarsened until the window has at most :data:`MAX_COLUMNS` columns."""
    since, until = (parse_time(t) for t in window)
    length = (until - since).total_seconds()
    for step in (grain, *(s for s in LADDER if s > grain)):
        if length / step <= MAX_COLUMNS - 1:
            return step
    return LADDER[-1]


def network(
    reader: Reader, cc: str, asn: str, window: tuple[str, str], grain: int, f: ViewFilters
) -> NetworkView:
    """A network's heatmap (the service-functions the filters keep) and its network events
    overlapping the window."""
    step = heat_grain(window, grain)
    buckets = columns(window, step)
    keep = filters(f, ("service", "function"))
    where = Where(f"probe_cc = ? AND probe_asn = ? AND {keep.sql}", (cc, asn, *keep.params))

    def build(r: Reader) -> str | None:
        source = data_rollup.relation(r, window, step)
        if source is None:
            return None
        return (
            f"SELECT service, function, b, m, f, o, p, c, {STATE_SQL} FROM ("
            f"SELECT service, function, {bucket_sql(step)} AS b, {COUNTS_SQL} FROM {source} "
            f"WHERE {where.sql} GROUP BY ALL) ORDER BY service, function, b"
        )

    found: dict[tuple[str, str], dict[str, HeatCell]] = {}
    for service, function, b, *figures, state in reader.query(build, where.params):
        counts = Counts(*(int(x) for x in figures))
        found.setdefault((service, function), {})[b] = HeatCell(b, state, counts)
    rows = tuple(
        HeatRow(s, fn, tuple(cells.get(b) or HeatCell(b, "no_data", Counts()) for b in buckets))
        for (s, fn), cells in sorted(found.items())
    )
    kept = ViewFilters(cc=cc, asn=asn, service=f.service, function=f.function)
    events = data_eventrows.overlapping(*window, kept)
    return NetworkView(
        probe_cc=cc,
        probe_asn=asn,
        since=window[0],
        until=window[1],
        grain_seconds=step,
        buckets=tuple(buckets),
        rows=rows,
        events=tuple(data_eventrows.select(reader, events, 1000)),
    )


def comparison(
    reader: Reader, subject: SeriesKey, window: tuple[str, str], grain: int
) -> Comparison:
    """The subject's series, the same service/function on other networks, and control_ok."""
    found = _series(reader, subject, window, grain)
    empty = Series(subject.cc, subject.asn, subject.service, subject.function, grain, ())
    main = found.pop(0, empty)
    control = tuple(
        (
            p.bucket,
            None if p.counts.measurements == 0 else p.counts.control_ok / p.counts.measurements,
        )
        for p in main.points
    )
    return Comparison(main, tuple(found[r] for r in sorted(found)), control)


def _sql(source: str, grain: int, country: bool) -> str:
    """One query of the subject's series (rank 0) and its top other networks' (rank 1..)."""
    subject = "CAST(NULL AS VARCHAR)" if country else "probe_asn"
    return f"""
WITH a AS (SELECT probe_asn, {bucket_sql(grain)} AS b, verdict, mechanism, measurements,
           probes, control_ok FROM {source}
           WHERE probe_cc = ? AND service = ? AND function = ?),
top AS (SELECT probe_asn, row_number() OVER (ORDER BY sum(measurements) DESC, probe_asn) AS r
        FROM a WHERE probe_asn IS DISTINCT FROM ? AND probe_asn IS NOT NULL
        GROUP BY probe_asn ORDER BY r LIMIT {MAX_OTHERS}),
own AS (SELECT {subject} AS asn, 0 AS r, b, verdict, mechanism, sum(measurements) AS n,
        max(probes) AS p, sum(control_ok) AS c FROM a
        WHERE {"true" if country else "probe_asn = ?"} GROUP BY ALL),
others AS (SELECT probe_asn AS asn, top.r, b, verdict, mechanism, sum(measurements) AS n,
           max(probes) AS p, sum(control_ok) AS c FROM a JOIN top USING (probe_asn)
           GROUP BY ALL)
SELECT * FROM own UNION ALL SELECT * FROM others ORDER BY r, b"""


def _series(
    reader: Reader, subject: SeriesKey, window: tuple[str, str], grain: int
) -> dict[int, Series]:
    """The subject's series (rank 0) and the other networks' (ranks 1.., most measured first)."""
    country = subject.asn is None
    params: tuple[Any, ...] = (subject.cc, subject.service, subject.function, subject.asn or "")
    if not country:
        params += (subject.asn,)

    def build(r: Reader) -> str | None:
        source = data_rollup.relation(r, window, grain)
        return None if source is None else _sql(source, grain, country)

    points: dict[int, tuple[str | None, dict[str, list[tuple[Any, ...]]]]] = {}
    for asn, rank, b, *rest in reader.query(build, params):
        points.setdefault(int(rank), (asn, {}))[1].setdefault(b, []).append(tuple(rest))
    return {
        rank: Series(
            subject.cc,
            asn,
            subject.service,
            subject.function,
            grain,
            tuple(point(b, rows) for b, rows in sorted(by_bucket.items())),
        )
        for rank, (asn, by_bucket) in points.items()
    }


def point(bucket: str, rows: list[tuple[Any, ...]]) -> Point:
    """One point from its (verdict, mechanism, measurements, probes, control_ok) rows."""
    by_verdict: dict[str, int] = {}
    mechanisms: dict[str, int] = {}
    probes = control_ok = 0
    for verdict, mechanism, n, p, c in rows:
        by_verdict[verdict] = by_verdict.get(verdict, 0) + int(n)
        probes, control_ok = max(probes, int(p or 0)), control_ok + int(c or 0)
        if verdict in FAILING and mechanism:
            mechanisms[mechanism] = mechanisms.get(mechanism, 0) + int(n)
    counts = Counts(
        measurements=sum(by_verdict.values()),
        failing=sum(by_verdict.get(v, 0) for v in FAILING),
        ok=by_verdict.get("ok", 0),
        probes=probes,
        control_ok=control_ok,
    )
    top = min(mechanisms.items(), key=lambda kv: (-kv[1], kv[0]))[0] if mechanisms else None
    return Point(bucket, counts, dict(sorted(by_verdict.items())), top)

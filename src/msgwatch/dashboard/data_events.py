"""The events list (keyset-paged) and one event's finding.

Rules:

- The list holds the events overlapping the window that pass the filters, newest start first,
  then by id; the cursor is the opaque key (start, id) of a page's last event
  (:func:`msgwatch.analysis.query.encode_cursor`); one that does not decode is a
  :class:`~msgwatch.dashboard.filters.BadQuery`. ``limit`` is 1..:data:`MAX_LIMIT`.
- A finding: the event; a country event's network events (its ``members.events``); one comparison
  per affected series (a network event's own; a country event's members'), from the start minus
  the event's length (at least a day) to the end plus the same (an ongoing event ends at the
  lake's last bucket); the verdict rows of those series inside the event, oldest first, at most
  :data:`MAX_VERDICTS`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from msgwatch.analysis.query import decode_cursor, encode_cursor
from msgwatch.dashboard import data_eventrows, data_series
from msgwatch.dashboard.data_sql import TIME_FORMAT, Reader, Where, grain, parse_time
from msgwatch.dashboard.filters import BadQuery, ViewFilters
from msgwatch.dashboard.model import EventRow, EventView

MAX_LIMIT: Final = 1000
MAX_VERDICTS: Final = 500
MAX_SERIES: Final = 24
VERDICT_FIELDS: Final = (
    "measurement_uid", "measurement_start_time", "verdict", "mechanism", "probe_asn", "service",
    "function",
)  # fmt: skip


def events(
    reader: Reader, f: ViewFilters, window: tuple[str, str], limit: int, cursor: str | None
) -> tuple[list[EventRow], str | None]:
    """One page of the events overlapping the window, and the next page's cursor."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be 1..{MAX_LIMIT}")
    clause = data_eventrows.overlapping(*window, f)
    if cursor is not None:
        try:
            start, event_id = decode_cursor(cursor, 2)
        except ValueError as exc:
            raise BadQuery("cursor: not a cursor of this list") from exc
        if not isinstance(start, str) or not isinstance(event_id, str) or not _is_time(start):
            raise BadQuery("cursor: not a cursor of this list")
        clause = Where(
            f'{clause.sql} AND ("start" < CAST(? AS TIMESTAMP) OR '
            '("start" = CAST(? AS TIMESTAMP) AND event_id > ?))',
            (*clause.params, start, start, event_id),
        )
    rows = data_eventrows.select(reader, clause, limit + 1)
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor([last.start, last.event_id])


def _is_time(value: str) -> bool:
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def event_view(reader: Reader, event_id: str, lake_end: str | None) -> EventView | None:
    """One event's finding; None when there is no such event."""
    found = data_eventrows.by_ids(reader, [event_id], 1)
    if not found:
        return None
    event = found[0]
    members: list[EventRow] = []
    if event.level == "country":
        ids = (event.members or {}).get("events") or event.evidence.get("events") or []
        members = data_eventrows.by_ids(reader, ids if isinstance(ids, list) else [])
    window = _around(event, lake_end, reader.bucket_seconds)
    step = grain(reader.bucket_seconds, window, "auto")
    keys = _keys(event, members)
    comparisons = tuple(data_series.comparison(reader, k, window, step) for k in keys)
    return EventView(
        event=event,
        network_events=tuple(sorted(members, key=lambda e: (e.probe_asn or "", e.event_id))),
        comparisons=comparisons,
        verdicts=tuple(_verdicts(reader, event, keys, lake_end)),
    )


def _end(event: EventRow, lake_end: str | None, bucket: int) -> dt.datetime:
    if event.end:
        return parse_time(event.end)
    last = parse_time(lake_end) if lake_end else parse_time(event.start)
    return max(last, parse_time(event.start)) + dt.timedelta(seconds=bucket)


def _around(event: EventRow, lake_end: str | None, bucket: int) -> tuple[str, str]:
    start, end = parse_time(event.start), _end(event, lake_end, bucket)
    margin = max(end - start, dt.timedelta(days=1))
    return (start - margin).strftime(TIME_FORMAT), (end + margin).strftime(TIME_FORMAT)


def _keys(event: EventRow, members: list[EventRow]) -> list[data_series.SeriesKey]:
    """The affected series: the event's own, or its members' (at most :data:`MAX_SERIES`)."""
    keys: list[data_series.SeriesKey] = []
    for e in members or [event]:
        if e.service and e.function:
            key = data_series.SeriesKey(e.probe_cc, e.probe_asn, e.service, e.function)
            if key not in keys:
                keys.append(key)
    return sorted(keys, key=lambda k: (k.asn or "", k.service, k.function))[:MAX_SERIES]


def _verdicts(
    reader: Reader, event: EventRow, keys: list[data_series.SeriesKey], lake_end: str | None
) -> list[dict[str, Any]]:
    """The verdict rows of the affected series inside the event, oldest first."""
    if not keys:
        return []
    since = event.start
    until = _end(event, lake_end, reader.bucket_seconds).strftime(TIME_FORMAT)
    series = " OR ".join(
        "(probe_cc = ? AND probe_asn IS NOT DISTINCT FROM ? AND service = ? AND function = ?)"
        for _ in keys
    )
    params: list[Any] = [since, until]
    for k in keys:
        params += [k.cc, k.asn, k.service, k.function]
    names = ", ".join(f'"{n}"' for n in VERDICT_FIELDS)

    def build(r: Reader) -> str | None:
        source = r.source("verdicts", since, until)
        if source is None:
            return None
        return (
            f"SELECT {names} FROM {source} WHERE measurement_start_time >= CAST(? AS TIMESTAMP) "
            f"AND measurement_start_time < CAST(? AS TIMESTAMP) AND ({series}) "
            f"ORDER BY measurement_start_time, measurement_uid, service, function "
            f"LIMIT {MAX_VERDICTS}"
        )

    rows = reader.query(build, params)
    return [dict(zip(VERDICT_FIELDS, row, strict=True)) for row in rows]

"""The lake's events as :class:`~msgwatch.dashboard.model.EventRow` values.

Rules:

- An event overlaps a window [since, until) when it starts before until and has not ended by
  since (its ``end`` is the first bucket that worked again, null while ongoing).
- Filters: ``cc`` the event's country; ``asn`` its network (country events have none, so they go);
  ``service``/``function`` the event's, or for a country event spanning several, one its members
  list; ``verdict`` the event's.
- The JSON columns are decoded bounded (:data:`MAX_JSON_CHARS`); one that is too long, not JSON or
  not an object reads as ``{}`` (``members`` of a network event stays None).
- Rows are sorted newest start first, then by event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from msgwatch.dashboard.data_sql import Reader, Where
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import EventRow

MAX_JSON_CHARS: Final = 256 * 1024
COLUMNS: Final = (
    "event_id", "level", "probe_cc", "probe_asn", "service", "function", "verdict", "mechanism",
    "pattern", "start", "start_after", "end", "end_before", "ongoing", "confidence",
    "failing_share", "measurements", "buckets", "evidence", "controls", "members", "story",
    "rules_version", "detector_version",
)  # fmt: skip
_JSON: Final = ("evidence", "controls", "members")
_MEMBER: Final = "try(list_contains(CAST(json_extract(members, '$.{0}') AS VARCHAR[]), ?)) IS TRUE"


def overlapping(since: str, until: str, f: ViewFilters) -> Where:
    """Events overlapping [since, until) that pass the filters."""
    clauses = ['"start" < CAST(? AS TIMESTAMP)', '("end" IS NULL OR "end" > CAST(? AS TIMESTAMP))']
    params: list[Any] = [until, since]
    if f.cc is not None:
        clauses.append("probe_cc = ?")
        params.append(f.cc)
    if f.asn is not None:
        clauses.append("probe_asn = ?")
        params.append(f.asn)
    for name, plural in (("service", "services"), ("function", "functions")):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f'("{name}" = ? OR ("{name}" IS NULL AND {_MEMBER.format(plural)}))')
            params += [value, value]
    if f.verdict is not None:
        clauses.append("verdict = ?")
        params.append(f.verdict)
    return Where(" AND ".join(clauses), tuple(params))


def select(reader: Reader, where: Where, limit: int) -> list[EventRow]:
    """The events matching ``where``, newest start first, at most ``limit``."""
    names = ", ".join(f'"{c}"' for c in COLUMNS)

    def build(r: Reader) -> str | None:
        source = r.source("events")
        if source is None:
            return None
        return (
            f"SELECT {names} FROM {source} WHERE {where.sql} "
            f'ORDER BY "start" DESC, event_id LIMIT {int(limit)}'
        )

    return [to_event(row) for row in reader.query(build, where.params)]


def by_ids(reader: Reader, ids: Sequence[str], limit: int = 1000) -> list[EventRow]:
    """The events with these ids."""
    wanted = [i for i in ids if isinstance(i, str)][:limit]
    if not wanted:
        return []
    marks = ", ".join("?" for _ in wanted)
    return select(reader, Where(f"event_id IN ({marks})", tuple(wanted)), limit)


def to_event(row: Sequence[Any]) -> EventRow:
    """An EventRow of a row of :data:`COLUMNS` (times as text)."""
    values = dict(zip(COLUMNS, row, strict=True))
    for name in _JSON:
        values[name] = decode(values[name])
    if values["members"] == {} and values["level"] != "country":
        values["members"] = None
    values["ongoing"] = bool(values["ongoing"])
    values["confidence"] = float(values["confidence"] or 0.0)
    values["measurements"] = int(values["measurements"] or 0)
    values["buckets"] = int(values["buckets"] or 0)
    values["story"] = values["story"] or ""
    return EventRow(**values)


def decode(value: Any) -> dict[str, Any]:
    """A JSON object column, bounded; ``{}`` when it is not one."""
    if not isinstance(value, str) or len(value) > MAX_JSON_CHARS:
        return {}
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}

"""Where a measurement's rows are: its day partitions, from a time hint or a uid → day index.

Rules:

- A time hint (a page link's ``t``: ``YYYY-MM-DD``, optionally with `` HH:MM[:SS]`` or
  ``THH:MM[:SS]`` and a ``Z``, UTC) names the measurement's day; any other text is a
  :class:`~msgwatch.dashboard.filters.BadQuery`.
- The index is one query over the committed verdicts' and observations' uid and ``day`` columns:
  each uid's first and last day partition. The caller keeps it per committed state
  (:mod:`.data_cache`). A lake of more than :data:`MAX_UIDS` measurements has no index (None),
  so memory stays bounded; its lookups read every day.
- Days are given as a pair of times whose day parts bound the partitions to read (both inclusive,
  as :meth:`.Reader.files` reads them).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from msgwatch.dashboard.data_sql import Reader
from msgwatch.dashboard.filters import BadQuery

MAX_UIDS: Final = 500_000
MAX_HINT_CHARS: Final = 64
_HINT: Final = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2})?)?Z?")

Days = tuple[str, str]
UidIndex = dict[str, Days]


def day_range(first: str, last: str) -> Days:
    """The partitions from day ``first`` to day ``last`` (``YYYY-MM-DD`` texts)."""
    return f"{first[:10]} 00:00:00", f"{last[:10]} 00:00:00"


def hint_days(time: str | None) -> Days | None:
    """The day of a time hint; None without one. Raises BadQuery for a malformed one."""
    if time is None:
        return None
    match = _HINT.fullmatch(time) if len(time) <= MAX_HINT_CHARS else None
    if match is None:
        raise BadQuery("t: expected a time as YYYY-MM-DD HH:MM:SS (UTC)")
    try:
        dt.date.fromisoformat(match.group(1))
    except ValueError as exc:
        raise BadQuery("t: not a date") from exc
    return day_range(match.group(1), match.group(1))


def build_index(reader: Reader) -> UidIndex | None:
    """Every uid's day partitions in the committed lake; None when there are too many uids."""

    def build(r: Reader) -> str | None:
        parts = [
            f"SELECT measurement_uid AS u, day AS d FROM {source}"
            for source in (r.source("verdicts"), r.source("observations"))
            if source is not None
        ]
        if not parts:
            return None
        return (
            f"SELECT u, min(d), max(d) FROM ({' UNION ALL '.join(parts)}) "
            f"WHERE u IS NOT NULL AND d IS NOT NULL GROUP BY u LIMIT {MAX_UIDS + 1}"
        )

    rows = reader.query(build)
    if len(rows) > MAX_UIDS:
        return None
    shared: dict[str, str] = {}
    index: UidIndex = {}
    for uid, first, last in rows:
        pair = day_range(str(first), str(last))
        index[str(uid)] = (shared.setdefault(pair[0], pair[0]), shared.setdefault(pair[1], pair[1]))
    return index

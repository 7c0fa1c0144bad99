"""Read-only queries over the lake's committed pass: events, aggregates, observations, verdicts.

:class:`Lake` is what the collector's API and the command line read. Rules:

- Only files the committed ``state.json`` lists are read, so a pass being written is invisible;
  each call opens its own in-memory DuckDB connection (threads and memory bounded) and closes it.
  A pass that removes a listed file while a call reads it makes the call re-read the state once.
- Filters are all optional and combine with AND; ``since``/``until`` bound the row's time (an
  aggregate's ``bucket``, a row's ``measurement_start_time``): since ≤ t < until. An event is a
  span: ``since`` keeps the events going on at or after it (ongoing, or ``end``, the first bucket
  that worked again, after it), ``until`` those that started before it.
- An event filter on ``probe_asn``, ``service`` or ``function`` also keeps the country events whose
  members list that network, service or function (a country event has no network of its own, and
  no service or function when it spans several).
- Paging is by keyset: rows are sorted by their time, descending (events: ``start``; aggregates:
  ``bucket``; observations and verdicts: ``measurement_start_time``), then ascending by the
  table's identifying columns and, last, the row's place in its committed file (file, row number),
  which makes the key unique. The cursor is the opaque (base64 JSON) key of the page's last row;
  it stays valid until a rebuild replaces the files. A cursor that does not decode
  to a key of that table raises ``ValueError``. ``limit`` is 1..1000.
- Rows come back as JSON-typed dicts (times as ``YYYY-MM-DD HH:MM:SS`` text, days as
  ``YYYY-MM-DD``), as the pass wrote them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

from msgwatch.analysis import lake
from msgwatch.analysis.schema import (
    AGGREGATE_COLUMNS,
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    VERDICT_COLUMNS,
    Columns,
)

MAX_LIMIT: Final = 1000
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


class LakeMissing(FileNotFoundError):
    """The output directory has no committed pass (no ``state.json``)."""


@dataclass(frozen=True)
class Filters:
    """What rows to return (every field optional)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    probe_cc: str | None = None
    probe_asn: str | None = None
    service: str | None = None
    function: str | None = None
    verdict: str | None = None
    level: str | None = None  # events only: "network" | "country"
    measurement_uid: str | None = None  # observations and verdicts only


@dataclass(frozen=True)
class Page:
    """One page of rows and the cursor of the next (None: this was the last)."""

    results: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class _Table:
    """How one table is read: its files' state key, columns, time column and sort key."""

    files: str
    columns: Columns
    time: str
    order: tuple[str, ...]  # the first is the time, sorted descending; the rest ascending
    filters: tuple[str, ...]


_PLACE: Final = ("_file", "_row")
_MEMBERS: Final = {"probe_asn": "networks", "service": "services", "function": "functions"}
"""The event filters a country event matches by its members (the key of ``members``)."""
_PLACE_KINDS: Final = {"_file": "VARCHAR", "_row": "BIGINT"}

_TABLES: Final = {
    "events": _Table(
        "events",
        EVENT_COLUMNS,
        "start",
        ("start", "event_id", *_PLACE),
        ("probe_cc", "probe_asn", "service", "function", "verdict", "level"),
    ),
    "aggregates": _Table(
        "aggregates",
        AGGREGATE_COLUMNS,
        "bucket",
        ("bucket", "probe_cc", "probe_asn", "service", "function", "verdict", *_PLACE),
        ("probe_cc", "probe_asn", "service", "function", "verdict"),
    ),
    "observations": _Table(
        "observations",
        OBSERVATION_COLUMNS,
        "measurement_start_time",
        ("measurement_start_time", "measurement_uid", *_PLACE),
        ("probe_cc", "probe_asn", "service", "function", "measurement_uid"),
    ),
    "verdicts": _Table(
        "verdicts",
        VERDICT_COLUMNS,
        "measurement_start_time",
        ("measurement_start_time", "measurement_uid", *_PLACE),
        ("probe_cc", "probe_asn", "service", "function", "verdict", "measurement_uid"),
    ),
}


def json_value(value: Any) -> Any:
    """A DuckDB value in the lake's JSON text form (times ``YYYY-MM-DD HH:MM:SS``, days ISO)."""
    if isinstance(value, dt.datetime):
        return value.strftime(TIME_FORMAT)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def encode_cursor(key: list[Any]) -> str:
    """The opaque cursor of a sort key."""
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    """The sort key of a cursor (``ValueError`` when it is not one of ``width`` values)."""
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(data)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError("bad cursor") from exc
    if not isinstance(key, list) or len(key) != width:
        raise ValueError("bad cursor")
    if not all(v is None or isinstance(v, str | int | float) for v in key):
        raise ValueError("bad cursor")
    return key


class Lake:
    """A read-only view of an output directory at its committed pass."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.state: dict[str, Any] = self._read_state()

    def _read_state(self) -> dict[str, Any]:
        state = lake.read_state(self.out_dir)
        if state is None:
            raise LakeMissing(f"no committed analysis in {self.out_dir}")
        return state

    def events(self, filters: Filters, limit: int = 100, cursor: str | None = None) -> Page:
        """Events, newest start first."""
        return self._page("events", filters, limit, cursor)

    def aggregates(self, filters: Filters, limit: int = 100, cursor: str | None = None) -> Page:
        """Aggregate rows, newest bucket first."""
        return self._page("aggregates", filters, limit, cursor)

    def observations(self, filters: Filters, limit: int = 100, cursor: str | None = None) -> Page:
        """Observation rows, newest measurement first."""
        return self._page("observations", filters, limit, cursor)

    def verdicts(self, filters: Filters, limit: int = 100, cursor: str | None = None) -> Page:
        """Verdict rows, newest measurement first."""
        return self._page("verdicts", filters, limit, cursor)

    def _files(self, table: _Table) -> list[str]:
        value = self.state.get("files", {}).get(table.files)
        listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return lake.absolute(self.out_dir, [v for v in listed if isinstance(v, str)])

    def _page(self, name: str, filters: Filters, limit: int, cursor: str | None) -> Page:
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        table = _TABLES[name]
        key = None if cursor is None else decode_cursor(cursor, len(table.order))
        try:
            return self._query(table, filters, limit, key)
        except duckdb.IOException:
            self.state = self._read_state()  # a newer pass removed a file: read its state
            return self._query(table, filters, limit, key)

    def _query(self, table: _Table, filters: Filters, limit: int, key: list[Any] | None) -> Page:
        files = self._files(table)
        if not files:
            return Page([], None)
        where, params = _where(table, filters, key)
        order = ", ".join(
            f'"{c}" DESC NULLS LAST' if i == 0 else f'"{c}" ASC NULLS FIRST'
            for i, c in enumerate(table.order)
        )
        listed = ", ".join(lake.sql_text(f) for f in files)
        names = ", ".join(f'"{name}"' for name, _ in table.columns)
        source = (
            f"(SELECT {names}, regexp_extract(filename, '[^/]+/[^/]+$') AS _file, "
            f"file_row_number AS _row FROM read_parquet([{listed}], hive_partitioning=false, "
            "union_by_name=true, filename=true, file_row_number=true))"
        )
        sql = f"SELECT * FROM {source} WHERE {where} ORDER BY {order} LIMIT {limit + 1}"
        with lake.connect() as connection:
            cursor = connection.execute(sql, params)
            columns = [d[0] for d in cursor.description]
            rows = [
                {n: json_value(v) for n, v in zip(columns, row, strict=True)}
                for row in cursor.fetchall()
            ]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1][c] for c in table.order]) if more else None
        for row in rows:
            for hidden in _PLACE:
                del row[hidden]
        return Page(rows, next_cursor)


def _where(table: _Table, filters: Filters, key: list[Any] | None) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters."""
    clauses = ["true"]
    params: list[Any] = []
    time = f'"{table.time}"'
    if filters.since is not None and table.files == "events":
        clauses.append('("end" IS NULL OR "end" > CAST(? AS TIMESTAMP))')
        params.append(filters.since.strftime(TIME_FORMAT))
    elif filters.since is not None:
        clauses.append(f"{time} >= CAST(? AS TIMESTAMP)")
        params.append(filters.since.strftime(TIME_FORMAT))
    if filters.until is not None:
        clauses.append(f"{time} < CAST(? AS TIMESTAMP)")
        params.append(filters.until.strftime(TIME_FORMAT))
    for name in table.filters:
        value = getattr(filters, name)
        if value is not None and table.files == "events" and name in _MEMBERS:
            members = f"CAST(json_extract(members, '$.{_MEMBERS[name]}') AS VARCHAR[])"
            # try(): a members value that is not a JSON list of names matches nothing, never
            # fails the query
            clauses.append(f'("{name}" = ? OR try(list_contains({members}, ?)) IS TRUE)')
            params += [value, value]
        elif value is not None:
            clauses.append(f'"{name}" = ?')
            params.append(value)
    if key is not None:
        clauses.append(_after(table, key, params))
    return " AND ".join(clauses), params


def _after(table: _Table, key: list[Any], params: list[Any]) -> str:
    """Rows after ``key`` in the table's order (first column descending, the rest ascending;
    NULLs last in the first, first in the others), as one OR of prefix-equal comparisons."""
    ors = []
    for i in range(len(table.order)):
        parts = []
        for j in range(i):
            parts.append(f'"{table.order[j]}" IS NOT DISTINCT FROM CAST(? AS {_kind(table, j)})')
            params.append(key[j])
        parts.append(_beyond(table, i, key[i], params))
        ors.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(ors) + ")"


def _beyond(table: _Table, i: int, value: Any, params: list[Any]) -> str:
    column = f'"{table.order[i]}"'
    cast = f"CAST(? AS {_kind(table, i)})"
    if i == 0:  # descending, NULLs last
        if value is None:
            return "false"
        params.append(value)
        return f"({column} < {cast} OR {column} IS NULL)"
    if value is None:  # ascending, NULLs first: everything not NULL is after
        return f"{column} IS NOT NULL"
    params.append(value)
    return f"{column} > {cast}"


def _kind(table: _Table, i: int) -> str:
    name = table.order[i]
    return _PLACE_KINDS.get(name) or dict(table.columns)[name]

"""The dashboard's reads of the lake: its committed files, its span and bucket, and SQL over them.

Rules:

- Only files the committed ``state.json`` lists are read (a pass being written is invisible). The
  state is read once per :class:`Reader`; a query that finds a listed file gone (a newer pass
  removed it) re-reads the state once and runs again.
- A :class:`Reader` serves one view call: its queries share one in-memory DuckDB connection with
  the lake's limits (:func:`msgwatch.analysis.lake.connect`), opened at the first and closed with
  the reader (``with Reader(...)``; opening one costs tens of milliseconds). Rows come back as
  tuples, times as ``YYYY-MM-DD HH:MM:SS`` text. Values reach SQL only as parameters; the only text put into SQL
  is the lake's own file names and the window's times (quoted; the times formatted here from
  datetimes), integers, and column names written here.
- Observations and verdicts are read only from the day partitions that overlap the window;
  aggregates and events are one file each and are filtered by their time column.
- A bucket's state (:data:`STATE_SQL`) is the majority rule: failing when the failing verdicts are
  at least half of the judged (ok + failing) rows, as the most frequent failing verdict (ties: the
  worse); else ok; with no judged row inconclusive when any row is, else ``no_data``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from msgwatch.analysis import lake
from msgwatch.analysis.query import LakeMissing, json_value
from msgwatch.dashboard.filters import ViewFilters

TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
HOUR: Final = 3600
DAY: Final = 86400
FAILING_SQL: Final = "('blocked', 'throttled', 'degraded')"

_CONNECTION: ContextVar[duckdb.DuckDBPyConnection | None] = ContextVar("_CONNECTION", default=None)
"""The connection of the :class:`Reader` whose query runs (see :meth:`Reader.query`)."""

COUNTS_SQL: Final = (
    "sum(measurements) AS m, "
    f"coalesce(sum(measurements) FILTER (WHERE verdict IN {FAILING_SQL}), 0) AS f, "
    "coalesce(sum(measurements) FILTER (WHERE verdict = 'ok'), 0) AS o, "
    "coalesce(max(probes), 0) AS p, coalesce(sum(control_ok), 0) AS c, "
    "coalesce(sum(measurements) FILTER (WHERE verdict = 'blocked'), 0) AS nb, "
    "coalesce(sum(measurements) FILTER (WHERE verdict = 'throttled'), 0) AS nt, "
    "coalesce(sum(measurements) FILTER (WHERE verdict = 'degraded'), 0) AS nd, "
    "coalesce(sum(measurements) FILTER (WHERE verdict = 'inconclusive'), 0) AS ni"
)
"""Per group: rows (m), failing (f), ok (o), probes (p: the most any aggregate row counted, a
lower bound of the distinct probes), control_ok (c) and the rows per failing verdict."""

STATE_SQL: Final = (
    "CASE WHEN f + o = 0 THEN (CASE WHEN ni > 0 THEN 'inconclusive' ELSE 'no_data' END) "
    "WHEN 2 * f >= f + o THEN (CASE WHEN nb >= nt AND nb >= nd THEN 'blocked' "
    "WHEN nt >= nd THEN 'throttled' ELSE 'degraded' END) ELSE 'ok' END"
)
"""The state of a group with :data:`COUNTS_SQL`'s columns."""


def parse_time(value: str) -> dt.datetime:
    """A ``YYYY-MM-DD HH:MM:SS`` text as a naive UTC datetime."""
    return dt.datetime.strptime(value, TIME_FORMAT)


def grain(own: int, window: tuple[str, str], choice: str) -> int:
    """The seconds of a view's time step: ``bucket`` the lake's own, ``hour``, ``day``; ``auto``
    the lake's for ranges ≤ 2 days, hour for ≤ 31 days, else day; never finer than ``own``."""
    length = (parse_time(window[1]) - parse_time(window[0])).total_seconds()
    chosen = {"bucket": own, "hour": HOUR, "day": DAY}.get(choice)
    if chosen is None:
        chosen = own if length <= 2 * DAY else HOUR if length <= 31 * DAY else DAY
    return max(chosen, own)


@dataclass(frozen=True)
class Where:
    """A WHERE clause and its parameters."""

    sql: str
    params: tuple[Any, ...]


def filters(f: ViewFilters, columns: Sequence[str]) -> Where:
    """The filters of ``columns`` (of cc, asn, service, function, verdict) that ``f`` sets."""
    names = {"cc": "probe_cc", "asn": "probe_asn"}
    clauses = ["true"]
    params: list[Any] = []
    for name in columns:
        value = getattr(f, name)
        if value is not None:
            clauses.append(f'"{names.get(name, name)}" = ?')
            params.append(value)
    return Where(" AND ".join(clauses), tuple(params))


class Reader:
    """The committed lake of an output directory: its files, span and bucket, and queries."""

    def __init__(self, lake_dir: Path) -> None:
        self.lake_dir = Path(lake_dir)
        self.state = self._read_state()
        self._connection: duckdb.DuckDBPyConnection | None = None

    def _read_state(self) -> dict[str, Any]:
        state = lake.read_state(self.lake_dir)
        if state is None:
            raise LakeMissing(f"no committed analysis in {self.lake_dir}")
        return state

    @property
    def bucket_seconds(self) -> int:
        """The lake's own bucket (3600 when the state does not say)."""
        value = self.state.get("bucket_seconds")
        return value if isinstance(value, int) and value > 0 else 3600

    def files(self, table: str, since: str | None = None, until: str | None = None) -> list[str]:
        """The committed files of a table (absolute); of observations and verdicts only the days
        overlapping [since, until)."""
        value = self.state.get("files", {}).get(table)
        listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        names = [v for v in listed if isinstance(v, str)]
        if since is not None and until is not None and table in lake.TABLE_DIRS:
            first, last = since[:10], until[:10]
            names = [n for n in names if first <= _day(n) <= last]
        return lake.absolute(self.lake_dir, names)

    def source(self, table: str, since: str | None = None, until: str | None = None) -> str | None:
        """``read_parquet([...])`` of the table's files (None when there are none)."""
        files = self.files(table, since, until)
        return lake.read_parquet_sql(files) if files else None

    def query(
        self, build: Callable[[Reader], str | None], params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """``build(self)`` (an SQL text, or None for no rows) run with ``params``; once more with
        the newest state when a listed file went missing."""
        for attempt in (1, 2):
            sql = build(self)
            if sql is None:
                return []
            token = _CONNECTION.set(self._connect())
            try:
                return self._run(sql, params)
            except duckdb.IOException:
                if attempt == 2:
                    raise
                self.state = self._read_state()
            finally:
                _CONNECTION.reset(token)
        return []

    @staticmethod
    def _run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        connection = _CONNECTION.get()
        if connection is not None:
            found = connection.execute(sql, list(params)).fetchall()
        else:
            with lake.connect() as own:
                found = own.execute(sql, list(params)).fetchall()
        return [tuple(json_value(v) for v in row) for row in found]

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            self._connection = lake.connect()
        return self._connection

    def close(self) -> None:
        """Close the reader's connection (if it opened one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _day(name: str) -> str:
    """The day of a partitioned file's relative name (``table/day=YYYY-MM-DD/...``)."""
    parts = name.split("/")
    return parts[1].removeprefix("day=") if len(parts) > 2 else ""

"""The aggregates: verdicts counted per time bucket, network, service, function, verdict, mechanism.

:data:`AGGREGATE_SQL` is the one definition; the Spark engine mirrors it clause by clause:

1. **Dedup.** Of the verdict rows of one ``(measurement_uid, service, function)`` within one
   *period* one is kept (a measurement read twice counts once: its copies have the same time, so
   the same period): the first by ``measurement_start_time``, ``verdict``, ``mechanism`` (NULL
   first), ``probe_tag`` (NULL first), ``control_ok`` (NULL first, then false), ``probe_cc``,
   ``probe_asn``. A period is ``P = S · ⌈86400 / S⌉`` seconds from the epoch on
   (:func:`period_seconds`: whole buckets making at least a day; the UTC day when ``S`` divides
   one), so periods are unions of buckets and each can be counted alone.
2. **Bucket.** ``bucket = floor(epoch(measurement_start_time) / S) * S`` seconds after the epoch, as
   a naive UTC timestamp; ``S`` is the pass's ``bucket_seconds`` (≥ 1).
3. **Group** by bucket × ``probe_cc`` × ``probe_asn`` × service × function × verdict ×
   ``coalesce(mechanism, '')``: ``measurements`` = rows (after the dedup a uid is one row of a
   group, whose service and function are its own: the distinct uids), ``probes`` = distinct
   non-NULL ``probe_tag`` s, ``control_ok`` = rows whose ``control_ok`` is true.
4. **Order** by the group's columns, ascending (so both engines write rows in the same order).

Rows whose ``measurement_start_time`` is NULL have no bucket and are left out.

A pass counts a run of consecutive periods at a time (:func:`write_aggregates`: up to
:data:`PERIOD_BATCH_ROWS` verdicts, or one period), from the verdict parts of the run's days, so
the memory the count needs is a run's, not the lake's. An incremental pass
does not recount history: with ``C`` the start of the period of its earliest new verdict, every
new verdict lies in a period from ``C`` on, so the committed rows before ``C`` stand and the
periods from ``C`` on are recounted.

The rows are stored one file per month of buckets: a pass rewrites the months from ``C``'s on
(the committed rows of ``C``'s month before ``C`` carried over) and keeps the committed files of
the months before, so what it writes grows with its new periods, not with the lake's history.

:data:`EVIDENCE_SQL` and :func:`evidence_source` answer the detector's evidence windows from the
same ``verdicts`` relation.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from msgwatch.analysis.events.detect import RowsNeeded
from msgwatch.analysis.events.model import SeriesKey, VerdictRef
from msgwatch.analysis.events.series import bucket_number, bucket_time
from msgwatch.analysis.lake import (
    DUCKDB_THREADS,
    WORK,
    aggregate_part,
    copy_to_parquet,
    empty_select,
    read_parquet_sql,
    sql_text,
    staged_table,
)
from msgwatch.analysis.schema import (
    AGGREGATE_COLUMNS,
    VERDICT_COLUMNS,
    checked_bucket_seconds,
    names,
)

TIME: Final = "%Y-%m-%d %H:%M:%S"
Evidence = Callable[[list[tuple[SeriesKey, dt.datetime, dt.datetime]]], Iterable[VerdictRef]]

ORDER: Final = "ORDER BY bucket, probe_cc, probe_asn, service, function, verdict, mechanism"
"""The aggregates' row order (:data:`AGGREGATE_SQL`'s last clause, and each monthly file's)."""

AGGREGATE_SQL: Final = (
    """
WITH ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY CAST(floor(epoch(measurement_start_time) / {period_seconds}) AS BIGINT),
                     measurement_uid, service, function
        ORDER BY measurement_start_time, verdict, mechanism NULLS FIRST,
                 probe_tag NULLS FIRST, control_ok NULLS FIRST, probe_cc, probe_asn
    ) AS copy_number
    FROM {relation}
    WHERE measurement_start_time IS NOT NULL
),
unique_verdicts AS (
    SELECT * FROM ranked WHERE copy_number = 1
)
SELECT
    make_timestamp(
        CAST(floor(epoch(measurement_start_time) / {bucket_seconds}) AS BIGINT)
        * {bucket_seconds} * 1000000
    ) AS bucket,
    CAST({bucket_seconds} AS INTEGER) AS bucket_seconds,
    probe_cc,
    probe_asn,
    service,
    function,
    verdict,
    coalesce(mechanism, '') AS mechanism,
    CAST(count(measurement_uid) AS BIGINT) AS measurements,
    CAST(count(DISTINCT probe_tag) AS BIGINT) AS probes,
    CAST(count(*) FILTER (WHERE control_ok) AS BIGINT) AS control_ok
FROM unique_verdicts
GROUP BY ALL
"""
    + ORDER
    + "\n"
)


DAY_SECONDS: Final = 86_400


def period_seconds(bucket_seconds: int) -> int:
    """``P``, the dedup's period for a bucket size: whole buckets making at least a day (the
    module's rule 1)."""
    seconds = checked_bucket_seconds(bucket_seconds)
    return seconds * -(-DAY_SECONDS // seconds)


def aggregate_sql(bucket_seconds: int, relation: str = "verdicts") -> str:
    """:data:`AGGREGATE_SQL` for a bucket size, over a relation named ``relation``."""
    return AGGREGATE_SQL.format(
        bucket_seconds=checked_bucket_seconds(bucket_seconds),
        period_seconds=period_seconds(bucket_seconds),
        relation=relation,
    )


def period_start(time: str, bucket_seconds: int) -> dt.datetime:
    """The start of the period of ``time`` (``YYYY-MM-DD HH:MM:SS``, naive UTC)."""
    seconds = period_seconds(bucket_seconds)
    return bucket_time(bucket_number(dt.datetime.fromisoformat(time), seconds), seconds)


_Key = TypeVar("_Key")

PERIOD_BATCH_ROWS: Final = 100_000
"""The verdict rows one count reads at most (unless one period has more): consecutive periods
are counted together up to it (the dedup partitions by period, so any whole periods can be)."""


def _runs(
    connection: duckdb.DuckDBPyConnection, files: list[str], seconds: int, since: str | None
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The start and end of each run of consecutive periods (``seconds`` long) that the verdicts
    of ``files`` from ``since`` (an SQL timestamp text) on fall in: at most
    :data:`PERIOD_BATCH_ROWS` rows together (one period with more is a run alone), in order."""
    if not files:
        return []
    where = "measurement_start_time IS NOT NULL"
    if since is not None:
        where += f" AND measurement_start_time >= TIMESTAMP {since}"
    found = connection.execute(
        f"SELECT CAST(floor(epoch(measurement_start_time) / {seconds}) AS BIGINT) AS n, count(*) "
        f"FROM {read_parquet_sql(files)} WHERE {where} GROUP BY n ORDER BY n"
    ).fetchall()
    return [
        (bucket_time(first, seconds), bucket_time(last + 1, seconds))
        for first, last in _packed([(int(n), count) for n, count in found], PERIOD_BATCH_ROWS)
    ]


def _packed(counted: list[tuple[_Key, int]], limit: int) -> list[tuple[_Key, _Key]]:
    """The first and last key of each run of consecutive ``counted`` keys (in their order) whose
    rows together are at most ``limit`` (a key with more is a run alone)."""
    runs: list[tuple[_Key, _Key]] = []
    rows = 0
    for key, count in counted:
        if runs and rows + count <= limit:
            runs[-1] = (runs[-1][0], key)
            rows += count
        else:
            runs.append((key, key))
            rows = count
    return runs


def write_aggregates(
    connection: duckdb.DuckDBPyConnection,
    parts: list[tuple[str, str]],
    bucket_seconds: int,
    out_dir: Path,
    number: int,
    since: dt.datetime | None = None,
    carried: list[str] | None = None,
) -> list[str]:
    """Count the verdicts of ``parts`` (``(day, absolute path)`` of each verdict part; a day that
    is not a date is read for every run) a run of periods at a time (:func:`_runs`), from
    ``since`` (a period's start) on, and write the rows, with the rows of ``carried`` (committed aggregates files)
    before ``since``, as one file per month of buckets (:func:`~msgwatch.analysis.lake.aggregate_part`,
    pass ``number``); returns the relative paths, oldest month first."""
    seconds = period_seconds(bucket_seconds)
    at = None if since is None else sql_text(since.strftime(TIME))
    from_day = "" if since is None else since.strftime("%Y-%m-%d")
    recent = [(day, path) for day, path in parts if day >= from_day]  # not a date: after all
    with _Pieces(connection, out_dir) as pieces:
        if carried and at is not None:
            pieces.add(f"SELECT * FROM {read_parquet_sql(carried)} WHERE bucket < TIMESTAMP {at}")
        for start, end in _runs(connection, [path for _, path in recent], seconds, at):
            first, last = (
                start.strftime("%Y-%m-%d"),
                (end - dt.timedelta(seconds=1)).strftime("%Y-%m-%d"),
            )
            files = [
                path
                for day, path in recent
                if first <= day <= last or not _DATE.fullmatch(day)  # a day of the run, or none
            ]
            window = (
                f"(SELECT * FROM {read_parquet_sql(files)} "
                f"WHERE measurement_start_time >= TIMESTAMP {sql_text(start.strftime(TIME))} "
                f"AND measurement_start_time < TIMESTAMP {sql_text(end.strftime(TIME))})"
            )
            pieces.add(aggregate_sql(bucket_seconds, window))
        return pieces.write_months(number)


def write_months(
    connection: duckdb.DuckDBPyConnection, select: str, out_dir: Path, number: int
) -> list[str]:
    """Write aggregate rows made elsewhere (``select``) as :func:`write_aggregates` writes its
    own: one file per month, in :data:`ORDER`; the relative paths, oldest month first."""
    with _Pieces(connection, out_dir) as pieces:
        pieces.add(select)
        return pieces.write_months(number)


_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class _Pieces:
    """Aggregate rows written piece by piece into the work folder, each piece sorted in
    :data:`ORDER` and after the previous one's buckets, then joined into monthly files: a month's
    file reads its pieces in order (DuckDB keeps a list's files and rows in order when a query
    does not reorder them), so no step holds or sorts more than one piece."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, out_dir: Path) -> None:
        self.connection, self.out_dir = connection, out_dir
        self.folder = out_dir / WORK / "aggregate-pieces"
        self.pieces: list[tuple[str, list[str]]] = []  # path, the months of its buckets

    def __enter__(self) -> _Pieces:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, select: str) -> None:
        """One piece: the rows of ``select``, all after those of the pieces added before."""
        path = os.fspath(self.folder / f"{len(self.pieces):06d}.parquet")
        self.connection.execute(
            f"COPY (SELECT * FROM ({select}) {ORDER}) TO {sql_text(path)} (FORMAT PARQUET)"
        )
        months = self.connection.execute(
            f"SELECT DISTINCT strftime(bucket, '%Y-%m') AS m FROM {read_parquet_sql([path])} "
            "ORDER BY m"
        ).fetchall()
        if months:
            self.pieces.append((path, [m for (m,) in months]))

    def write_months(self, number: int) -> list[str]:
        """One file per month of the pieces' buckets; the relative paths, oldest first. Written
        on one thread in row groups of :data:`MONTH_ROW_GROUP` rows: a parallel write that keeps
        the order buffers the row groups of each thread (on the 864,221 rows of the throughput
        benchmark's month: 190 MB at two threads and DuckDB's default row group, 30 MB so, in
        the same 0.4 s)."""
        written = []
        self.connection.execute("SET threads=1")
        try:
            for month in sorted({m for _, months in self.pieces for m in months}):
                listed = [path for path, months in self.pieces if month in months]
                relative = aggregate_part(number, month)
                copy_to_parquet(
                    self.connection,
                    f"SELECT * FROM {read_parquet_sql(listed)} "
                    f"WHERE strftime(bucket, '%Y-%m') = {sql_text(month)}",
                    self.out_dir / relative,
                    MONTH_ROW_GROUP,
                )
                written.append(relative)
        finally:
            self.connection.execute(f"SET threads={DUCKDB_THREADS}")
        return written


MONTH_ROW_GROUP: Final = 20_480

EMPTY_VERDICTS: Final = empty_select(VERDICT_COLUMNS)

EVIDENCE_SQL: Final = """
SELECT w.window_number, v.measurement_uid, v.measurement_start_time, v.verdict
FROM verdicts AS v
JOIN windows AS w
  ON v.probe_cc = w.probe_cc AND v.probe_asn = w.probe_asn
 AND v.service = w.service AND v.function = w.function
 AND v.measurement_start_time >= w.window_from AND v.measurement_start_time <= w.window_until
GROUP BY ALL
ORDER BY w.window_number, v.measurement_start_time, v.measurement_uid, v.verdict
"""
"""The verdicts of each window (``windows``: number, series key, from, until; both ends
included), one row per (window, uid, time, verdict)."""


AGGREGATE_BATCH: Final = 10_000


def needed_sql(needed: RowsNeeded, seconds: int) -> str:
    """An SQL condition on aggregate rows that keeps exactly those ``needed``: every series'
    from the horizon on, a country and service's from its own first bucket."""

    def since(number: int) -> str:
        return f"bucket >= TIMESTAMP {sql_text(bucket_time(number, seconds).strftime(TIME))}"

    terms = [since(needed.horizon)]
    for (cc, service), number in sorted(needed.scopes.items()):
        terms.append(
            f"(probe_cc = {sql_text(cc)} AND service = {sql_text(service)} AND {since(number)})"
        )
    return " OR ".join(terms)


def _select(what: str, files: list[str], where: str | None) -> str:
    """``SELECT what`` from aggregates files (none: no rows), with ``where`` when given."""
    source = read_parquet_sql(files) if files else f"({empty_select(AGGREGATE_COLUMNS)})"
    query = f"SELECT {what} FROM {source}"
    return query if where is None else f"{query} WHERE {where}"


SCOPE: Final = "coalesce(probe_cc, ''), coalesce(service, '')"
"""The detector's key of a row: its country and service (NULL as '')."""

SCOPE_BATCH_ROWS: Final = 200_000
"""The rows one sorted read holds at most (unless one country and service has more)."""


def aggregate_rows(
    connection: duckdb.DuckDBPyConnection,
    files: list[str],
    where: str | None = None,
    by_scope: bool = False,
) -> Iterator[dict[str, Any]]:
    """The rows of aggregates files (absolute paths) as dicts (times as naive datetimes), read
    in batches on a cursor of their own, so the reader never holds them all (they grow with the
    archive); with ``where`` (an SQL condition), only the rows it keeps.

    ``by_scope``: ordered by probe_cc and service (the detector then holds one country and
    service at a time), read in runs of consecutive countries and services of at most
    :data:`SCOPE_BATCH_ROWS` rows each (:func:`scope_runs`), each sorted alone: the sort holds a
    run, not the lake."""
    if not by_scope:
        yield from _rows(connection, _select("*", files, where))
        return
    for first, last in scope_runs(connection, files, where):
        run = (
            f"({SCOPE}) >= ({sql_text(first[0])}, {sql_text(first[1])}) "
            f"AND ({SCOPE}) <= ({sql_text(last[0])}, {sql_text(last[1])})"
        )
        condition = run if where is None else f"({where}) AND {run}"
        yield from _rows(connection, _select("*", files, condition) + f" ORDER BY {SCOPE}")


def scope_runs(
    connection: duckdb.DuckDBPyConnection, files: list[str], where: str | None = None
) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The first and last (probe_cc, service) of each run: consecutive ones, in order, of at most
    :data:`SCOPE_BATCH_ROWS` rows together (one with more is a run alone)."""
    counts = connection.execute(
        _select(f"{SCOPE}, count(*)", files, where) + f" GROUP BY ALL ORDER BY {SCOPE}"
    ).fetchall()
    return _packed([((str(cc), str(service)), n) for cc, service, n in counts], SCOPE_BATCH_ROWS)


def _rows(connection: duckdb.DuckDBPyConnection, query: str) -> Iterator[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(query)
        names = [column[0] for column in cursor.description]
        while batch := cursor.fetchmany(AGGREGATE_BATCH):
            for row in batch:
                yield dict(zip(names, row, strict=True))


def newest_bucket(
    connection: duckdb.DuckDBPyConnection, files: list[str], where: str | None = None
) -> dt.datetime | None:
    """The newest bucket of the aggregates files' rows (those ``where`` keeps), None when none."""
    found = connection.execute(_select("max(bucket)", files, where)).fetchone()
    return None if found is None else found[0]


WINDOW_COLUMNS: Final = (
    ("window_number", "INTEGER"),
    ("probe_cc", "VARCHAR"),
    ("probe_asn", "VARCHAR"),
    ("service", "VARCHAR"),
    ("function", "VARCHAR"),
    ("window_from", "TIMESTAMP"),
    ("window_until", "TIMESTAMP"),
)


def evidence_source(connection: duckdb.DuckDBPyConnection, staging: Path) -> Evidence:
    """The detector's evidence callable over the connection's ``verdicts`` relation (the windows
    asked are staged as NDJSON at ``staging``)."""

    def windows(asked: list[tuple[SeriesKey, dt.datetime, dt.datetime]]) -> Iterator[VerdictRef]:
        if not asked:
            return
        rows = [
            dict(
                zip(
                    names(WINDOW_COLUMNS),
                    (n, *key, since.strftime(TIME), until.strftime(TIME)),
                    strict=True,
                )
            )
            for n, (key, since, until) in enumerate(asked)
        ]
        table = staged_table(staging, rows, WINDOW_COLUMNS)
        connection.execute(f"CREATE OR REPLACE TEMP TABLE windows AS {table}")
        cursor = connection.execute(EVIDENCE_SQL)
        while batch := cursor.fetchmany(10_000):
            for number, uid, time, verdict in batch:
                yield VerdictRef(uid, time, verdict, asked[number][0])

    return windows

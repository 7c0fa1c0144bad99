"""The aggregates: verdicts counted per time bucket, network, service, function, verdict, mechanism.

:data:`AGGREGATE_SQL` is the one definition; the Spark engine mirrors it clause by clause:

1. **Dedup.** Of the verdict rows of one ``(measurement_uid, service, function)`` one is kept (a
   measurement read twice counts once): the first by ``measurement_start_time``, ``verdict``,
   ``mechanism`` (NULL first), ``probe_tag`` (NULL first), ``control_ok`` (NULL first, then false),
   ``probe_cc``, ``probe_asn``.
2. **Bucket.** ``bucket = floor(epoch(measurement_start_time) / S) * S`` seconds after the epoch, as
   a naive UTC timestamp; ``S`` is the pass's ``bucket_seconds`` (≥ 1).
3. **Group** by bucket × ``probe_cc`` × ``probe_asn`` × service × function × verdict ×
   ``coalesce(mechanism, '')``: ``measurements`` = distinct uids, ``probes`` = distinct non-NULL
   ``probe_tag`` s, ``control_ok`` = rows whose ``control_ok`` is true.
4. **Order** by the group's columns, ascending (so both engines write rows in the same order).

Rows whose ``measurement_start_time`` is NULL have no bucket and are left out.

An incremental pass does not recount history (:func:`incremental_sql`): with ``C`` the start of the
bucket of the pass's earliest new verdict, every new verdict lies in a bucket from ``C`` on, so the
committed aggregates' rows before ``C`` stand, and the buckets from ``C`` on are recounted from the
verdicts of those buckets (the day partitions from ``C``'s day). Dedup stays exact: a
``(measurement_uid, service, function)`` with a copy before ``C`` was counted there, by the
committed aggregates (its first copy is before ``C``, and no new copy can be earlier), so its
copies from ``C`` on are left out of the recount.

The rows are stored one file per month of buckets (:func:`write_months`): a pass rewrites the
months from ``C``'s on and keeps the committed files of the months before, so what it writes grows
with its new buckets, not with the lake's history.

:data:`EVIDENCE_SQL` and :func:`evidence_source` answer the detector's evidence windows from the
same ``verdicts`` relation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import duckdb

from msgwatch.analysis.events.detect import RowsNeeded
from msgwatch.analysis.events.model import SeriesKey, VerdictRef
from msgwatch.analysis.events.series import bucket_number, bucket_time
from msgwatch.analysis.lake import (
    aggregate_part,
    copy_to_parquet,
    empty_select,
    read_parquet_sql,
    sql_text,
    staged_table,
)
from msgwatch.analysis.schema import AGGREGATE_COLUMNS, VERDICT_COLUMNS, names

TIME: Final = "%Y-%m-%d %H:%M:%S"
Evidence = Callable[[list[tuple[SeriesKey, dt.datetime, dt.datetime]]], Iterable[VerdictRef]]

ORDER: Final = "ORDER BY bucket, probe_cc, probe_asn, service, function, verdict, mechanism"
"""The aggregates' row order (:data:`AGGREGATE_SQL`'s last clause, and each monthly file's)."""

AGGREGATE_SQL: Final = (
    """
WITH ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY measurement_uid, service, function
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
    CAST(count(DISTINCT measurement_uid) AS BIGINT) AS measurements,
    CAST(count(DISTINCT probe_tag) AS BIGINT) AS probes,
    CAST(count(*) FILTER (WHERE control_ok) AS BIGINT) AS control_ok
FROM unique_verdicts
GROUP BY ALL
"""
    + ORDER
    + "\n"
)


def aggregate_sql(bucket_seconds: int, relation: str = "verdicts") -> str:
    """:data:`AGGREGATE_SQL` for a bucket size, over a relation named ``relation``."""
    if not isinstance(bucket_seconds, int) or bucket_seconds < 1:
        raise ValueError(f"bucket_seconds must be an integer ≥ 1, not {bucket_seconds!r}")
    return AGGREGATE_SQL.format(bucket_seconds=bucket_seconds, relation=relation)


def bucket_start(time: str, bucket_seconds: int) -> dt.datetime:
    """The start of the bucket of ``time`` (``YYYY-MM-DD HH:MM:SS``, naive UTC)."""
    number = bucket_number(dt.datetime.fromisoformat(time), bucket_seconds)
    return bucket_time(number, bucket_seconds)


def incremental_sql(
    bucket_seconds: int, committed: list[str], recent: str, cutoff: dt.datetime
) -> str:
    """The aggregates of all verdicts from the ``committed`` aggregates' rows (Parquet files:
    those holding the buckets from ``cutoff``'s month on, or all of them) and the verdicts of the
    buckets from ``cutoff`` on (``recent``: a relation of the day partitions from ``cutoff``'s day;
    ``verdicts``: all of them), ordered as :data:`AGGREGATE_SQL` orders (see the module's rules).
    Only rows of the buckets the committed files held or the recount finds come out."""
    at = sql_text(cutoff.strftime(TIME))
    kept = (
        f"SELECT * FROM {read_parquet_sql(committed)} WHERE bucket < TIMESTAMP {at}"
        if committed
        else empty_select(AGGREGATE_COLUMNS)
    )
    recount = f"""(
        SELECT r.* FROM {recent} AS r
        WHERE r.measurement_start_time >= TIMESTAMP {at}
          AND NOT EXISTS (
            SELECT 1 FROM verdicts AS o
            WHERE o.measurement_start_time < TIMESTAMP {at}
              AND o.measurement_uid = r.measurement_uid
              AND o.service = r.service AND o.function = r.function
          )
    )"""
    return f"""
SELECT * FROM (
    {kept}
    UNION ALL BY NAME
    ({aggregate_sql(bucket_seconds, recount)})
)
{ORDER}
"""


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


def write_months(
    connection: duckdb.DuckDBPyConnection, select: str, out_dir: Path, number: int
) -> list[str]:
    """Write the aggregate rows of ``select`` (ordered as :data:`AGGREGATE_SQL` orders) as one
    file per month of their buckets (:func:`~msgwatch.analysis.lake.aggregate_part`); returns the
    relative paths, oldest month first. ``select`` runs once, into a temporary table (DuckDB
    spills it to its temporary folder beyond its memory limit); each file is sorted again, so its
    order never rests on the table's scan order."""
    connection.execute(f"CREATE OR REPLACE TEMP TABLE new_aggregates AS {select}")
    try:
        months = connection.execute(
            "SELECT DISTINCT date_trunc('month', bucket) AS m FROM new_aggregates ORDER BY m"
        ).fetchall()
        written = []
        for (month,) in months:
            start = month.strftime(TIME)
            relative = aggregate_part(number, month.strftime("%Y-%m"))
            copy_to_parquet(
                connection,
                "SELECT * FROM new_aggregates "
                f"WHERE bucket >= TIMESTAMP {sql_text(start)} "
                f"AND bucket < TIMESTAMP {sql_text(start)} + INTERVAL 1 MONTH {ORDER}",
                out_dir / relative,
            )
            written.append(relative)
        return written
    finally:
        connection.execute("DROP TABLE IF EXISTS new_aggregates")


def aggregate_rows(
    connection: duckdb.DuckDBPyConnection,
    files: list[str],
    where: str | None = None,
    by_scope: bool = False,
) -> Iterator[dict[str, Any]]:
    """The rows of aggregates files (absolute paths) as dicts (times as naive datetimes), read
    in batches on a cursor of their own, so the reader never holds them all (they grow with the
    archive); with ``where`` (an SQL condition), only the rows it keeps; ``by_scope``: ordered by
    probe_cc and service (the detector then holds one country and service at a time)."""
    query = _select("*", files, where)
    if by_scope:
        query += " ORDER BY coalesce(probe_cc, ''), coalesce(service, '')"  # the detector's key
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

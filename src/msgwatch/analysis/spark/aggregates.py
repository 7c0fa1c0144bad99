"""The aggregates in Spark SQL: :data:`msgwatch.analysis.aggregates.AGGREGATE_SQL`, clause by clause.

The DuckDB text is the definition (its module states the rules); this is its mirror, kept next to
it line for line, with the differences of dialect spelled out:

- ``epoch(t)`` is ``unix_timestamp(t)`` and ``make_timestamp(µs)`` is ``timestamp_seconds(s)``,
  both exact under the session time zone UTC the job sets;
- DuckDB sorts NULLs last by default and Spark first, so every ``ORDER BY`` says which;
- ``count(*) FILTER (WHERE c)`` is ``count_if(c)``; ``GROUP BY ALL`` lists the columns;
- the dedup is a view of its own (``unique_verdicts``), which the events' evidence reads too.
"""

from __future__ import annotations

from typing import Final

from msgwatch.analysis.aggregates import period_seconds
from msgwatch.analysis.schema import VERDICT_COLUMNS, checked_bucket_seconds, names

UNIQUE_VERDICTS_SQL: Final = """
WITH ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY CAST(floor(unix_timestamp(measurement_start_time) / {period_seconds}) AS BIGINT),
                     measurement_uid, service, `function`
        ORDER BY measurement_start_time NULLS LAST, verdict NULLS LAST, mechanism NULLS FIRST,
                 probe_tag NULLS FIRST, control_ok NULLS FIRST, probe_cc NULLS LAST,
                 probe_asn NULLS LAST
    ) AS copy_number
    FROM verdicts
    WHERE measurement_start_time IS NOT NULL
)
SELECT {columns} FROM ranked WHERE copy_number = 1
"""
"""Clause 1 (dedup) over a view named ``verdicts``: the view ``unique_verdicts``."""

SPARK_AGGREGATE_SQL: Final = """
SELECT
    timestamp_seconds(
        CAST(floor(unix_timestamp(measurement_start_time) / {bucket_seconds}) AS BIGINT)
        * {bucket_seconds}
    ) AS bucket,
    CAST({bucket_seconds} AS INT) AS bucket_seconds,
    probe_cc,
    probe_asn,
    service,
    `function`,
    verdict,
    coalesce(mechanism, '') AS mechanism,
    CAST(count(measurement_uid) AS BIGINT) AS measurements,
    CAST(count(DISTINCT probe_tag) AS BIGINT) AS probes,
    CAST(count_if(control_ok) AS BIGINT) AS control_ok
FROM unique_verdicts
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ORDER BY bucket NULLS LAST, probe_cc NULLS LAST, probe_asn NULLS LAST, service NULLS LAST,
         `function` NULLS LAST, verdict NULLS LAST, mechanism NULLS LAST
"""
"""Clauses 2 to 4 (bucket, group, order) over the view ``unique_verdicts``."""


def spark_aggregate_sql(bucket_seconds: int) -> str:
    """:data:`SPARK_AGGREGATE_SQL` for a bucket size."""
    return SPARK_AGGREGATE_SQL.format(bucket_seconds=checked_bucket_seconds(bucket_seconds))


def unique_verdicts_sql(bucket_seconds: int) -> str:
    """:data:`UNIQUE_VERDICTS_SQL` with the verdict table's columns, for a bucket size (its
    dedup period: :func:`~msgwatch.analysis.aggregates.period_seconds`)."""
    return UNIQUE_VERDICTS_SQL.format(
        columns=", ".join(f"`{n}`" for n in names(VERDICT_COLUMNS)),
        period_seconds=period_seconds(bucket_seconds),
    )

"""Events on Spark: the detector per country on the executors, with the evidence beside it.

:func:`msgwatch.analysis.events.detect.detect` needs, for one series, the other series of its
country (the controls) and its country's network events (the clustering), and nothing of another
country. So the job groups the aggregate rows by ``probe_cc`` and runs ``detect`` once per country
on an executor; the union of those detections is what one ``detect`` over all rows returns.

Rules:

- ``closed_until`` is fixed on the driver before the split (default: the newest bucket of all
  rows, as ``detect`` itself would pick over all of them), so every country sees the same horizon.
- Evidence: the distinct verdict references (series, uid, time, verdict) of the series that have
  a failing verdict, from the view ``verdicts`` (as the DuckDB pass's ``EVIDENCE_SQL`` reads it),
  are co-grouped by country with its aggregate rows; ``detect``'s evidence callable hands them
  over and ``detect`` cuts its windows from them itself. Only ok and failing verdicts are sent:
  the evidence selects nothing else.
- The detector runs from scratch (``state=None``): the Spark job is a rebuild.
- Rows travel as JSON-typed dicts (times as ``YYYY-MM-DD HH:MM:SS`` text), as the DuckDB pass
  hands them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from pyspark.sql import DataFrame

from msgwatch.analysis.events.detect import DetectorParams, detect
from msgwatch.analysis.events.model import SeriesKey, VerdictRef
from msgwatch.analysis.events.series import TIME_FORMAT, bucket_number, bucket_time, to_time
from msgwatch.analysis.schema import AGGREGATE_COLUMNS, names
from msgwatch.analysis.spark.columns import text
from msgwatch.measurement import vocab

_AGGREGATES = names(AGGREGATE_COLUMNS)
_SAYS = (vocab.OK, *sorted(vocab.INTERFERENCE))
_REFS_SQL = """
SELECT DISTINCT v.probe_cc, v.probe_asn, v.service, v.`function`, v.measurement_uid,
       {time}, v.verdict
FROM verdicts v
JOIN (SELECT DISTINCT probe_cc, probe_asn, service, `function` FROM verdicts
      WHERE verdict IN ({failing})) f
  ON v.probe_cc = f.probe_cc AND v.probe_asn = f.probe_asn AND v.service = f.service
     AND v.`function` = f.`function`
WHERE v.verdict IN ({says}) AND v.measurement_start_time IS NOT NULL
"""


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def horizon(
    closed_until: dt.datetime | None, newest: str | None, seconds: int
) -> dt.datetime | None:
    """The ``closed_until`` every country is given: the configured one, else the newest bucket."""
    if closed_until is not None or newest is None:
        return closed_until
    return bucket_time(bucket_number(to_time(newest), seconds), seconds)


def _row(row: Any) -> dict[str, Any]:
    """An aggregate row (its bucket already text) as the dict the DuckDB pass hands ``detect``."""
    return dict(zip(_AGGREGATES, (row[name] for name in _AGGREGATES), strict=True))


def _detect_country(
    group: tuple[Any, tuple[Iterable[Any], Iterable[Any]]],
    params: DetectorParams,
    closed_until: dt.datetime | None,
    rules_version: str,
) -> Iterator[dict[str, Any]]:
    """The events of one country (what an executor runs)."""
    _, (aggregate_rows, ref_rows) = group
    refs = [
        VerdictRef(r[4], dt.datetime.strptime(r[5], TIME_FORMAT), r[6], (r[0], r[1], r[2], r[3]))
        for r in ref_rows
    ]

    def evidence(_windows: list[tuple[SeriesKey, dt.datetime, dt.datetime]]) -> list[VerdictRef]:
        return refs

    rows = [_row(r) for r in aggregate_rows]
    yield from detect(rows, params, None, closed_until, evidence, rules_version).events


def detect_events(
    aggregates: DataFrame,
    params: DetectorParams,
    closed_until: dt.datetime | None,
    rules_version: str,
) -> list[dict[str, Any]]:
    """Every event, network events then country events, each group in ``detect``'s order.

    ``closed_until`` is what :func:`horizon` gave; the view ``verdicts`` must be registered on
    the session.
    """
    until = closed_until
    spark = aggregates.sparkSession
    refs_sql = _REFS_SQL.format(
        time=text("v.measurement_start_time", "time"),
        failing=_quoted(sorted(vocab.INTERFERENCE)),
        says=_quoted(_SAYS),
    )
    refs = spark.sql(refs_sql).rdd.map(lambda r: (r[0], tuple(r)))
    as_text = [text(name) if name == "bucket" else f"`{name}`" for name in _AGGREGATES]
    by_cc = aggregates.selectExpr(*as_text).rdd.map(lambda r: (r["probe_cc"], r))
    events = (
        by_cc.cogroup(refs)
        .flatMap(lambda group: _detect_country(group, params, until, rules_version))
        .collect()
    )
    return order(events)


def order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Network events then country events, each by series and start (the order ``detect`` gives)."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (
            row["level"] != "network",
            row["probe_cc"] or "",
            row["probe_asn"] or "",
            row["service"] or "",
            row["function"] or "",
            row["start"] or "",
            row["event_id"],
        )

    return sorted(events, key=key)

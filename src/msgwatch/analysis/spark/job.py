"""The Spark job: inputs → observations, verdicts (Parquet by day) → aggregates → events.

Run by :func:`msgwatch.analysis.spark.run_spark`, ``python -m msgwatch.analysis.spark.job`` or
``spark-submit .../msgwatch/analysis/spark/job.py`` (same arguments, ``--help``).

Rules:

- Output: ``OUT/spark/observations/day=…/``, ``OUT/spark/verdicts/day=…/`` (Parquet partitioned by
  day), ``OUT/spark/aggregates/``, ``OUT/spark/events/`` (Parquet) and ``OUT/spark/report/`` (the
  report, one JSON line). Each run replaces them whole;
  Spark's committer writes under ``_temporary`` and renames, and writes ``_SUCCESS`` last.
- Tables have the columns and types of :mod:`msgwatch.analysis.schema`; times are written as
  ``TIMESTAMP_NTZ`` (naive UTC, as DuckDB's ``TIMESTAMP``), so either engine reads either's files.
- Aggregates are computed from the verdict Parquet just written (the same files a reader sees).
- An input glob that matches nothing is a problem (``unreadable: no such files``), not a failure.
- Inputs on a file system the executors share are listed on the driver and read on the executors
  by the DuckDB pass's reader (:mod:`msgwatch.analysis.spark.files`: the same problems, with the
  line; a truncated gzip file does not end the job). With an input on other storage (``hdfs://``,
  ``s3a://``) every line is read by Spark's text source, whose line reader drops a line longer than
  twice ``max_line_bytes`` (``mapreduce.input.linerecordreader.line.maxlength``) uncounted; one
  between the limit and twice it is reported ``line_too_long``.
- Memory: the executors' rows (observations, verdicts, counts), read by three writes, are kept on
  disk only (``DISK_ONLY``). A task reads whole files (a day of an archive at least); kept in
  memory, its rows took the execution memory the day-partitioned write's sort needs, and at
  200,000 measurements in ``local[2]`` with a 1g driver a task ran out of it (with 2g, of heap).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.rdd import RDD
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from msgwatch.analysis.events.detect import DetectorParams
from msgwatch.analysis.schema import (
    AGGREGATE_COLUMNS,
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    VERDICT_COLUMNS,
    Columns,
)
from msgwatch.analysis.spark import session
from msgwatch.analysis.spark.aggregates import spark_aggregate_sql, unique_verdicts_sql
from msgwatch.analysis.spark.columns import staging_schema, text, typed_select
from msgwatch.analysis.spark.config import DEFAULT_MASTER, MAX_PROBLEMS, SparkConfig, SparkReport
from msgwatch.analysis.spark.events import detect_events, horizon
from msgwatch.analysis.spark.files import OONI_DAY, analyse_files, list_files
from msgwatch.analysis.spark.rows import Counts, analyse_partition
from msgwatch.analysis.transform import RULES_VERSION

_MAX_LENGTH_KEY = "mapreduce.input.linerecordreader.line.maxlength"


def _path(config: SparkConfig, *parts: str) -> str:
    return "/".join([str(config.out_dir).rstrip("/"), "spark", *parts])


def _text(
    spark: SparkSession, globs: list[str], limit: str, report: SparkReport
) -> DataFrame | None:
    """The lines of ``globs`` as ``(file, value)``, read at once; a glob matching nothing is a problem."""
    reader = spark.read.option(_MAX_LENGTH_KEY, limit)
    try:
        frame = reader.text(globs)
    except AnalysisException:
        if len(globs) == 1:
            report.problems += 1
            report.first_problems.append((globs[0], "unreadable: no such files"))
            return None
        parts = [_text(spark, [glob], limit, report) for glob in globs]
        return _union([part for part in parts if part is not None])
    return frame.select(F.input_file_name().alias("file"), "value")


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    lines = frames[0]
    for frame in frames[1:]:
        lines = lines.unionByName(frame)
    return lines


def _read(spark: SparkSession, config: SparkConfig, report: SparkReport) -> DataFrame | None:
    """Every input line as ``(file, value)``."""
    limit = str(2 * config.max_line_bytes)
    globs = config.input_globs()
    plain = [glob for kind, glob in globs if kind != "ooni"]
    frames = [_text(spark, plain, limit, report)] if plain else []
    for glob in (glob for kind, glob in globs if kind == "ooni"):
        frame = _text(spark, [glob], limit, report)
        day = F.regexp_extract("file", OONI_DAY.pattern, 1)
        if frame is not None and config.ooni_since:
            frame = frame.where(day >= config.ooni_since.strftime("%Y%m%d"))
        if frame is not None and config.ooni_until:
            frame = frame.where(day <= config.ooni_until.strftime("%Y%m%d"))
        frames.append(frame)
    return _union([frame for frame in frames if frame is not None])


def _frame(spark: SparkSession, rows: RDD[str], columns: Columns) -> DataFrame:
    """A typed table from NDJSON rows (times staged as text, then cast)."""
    staged = spark.read.schema(staging_schema(columns)).json(rows)
    return staged.selectExpr(*typed_select(columns))


def _naive(columns: Columns) -> list[str]:
    """A select writing ``TIMESTAMP`` columns as ``TIMESTAMP_NTZ``."""
    return [
        f"CAST(`{n}` AS TIMESTAMP_NTZ) AS `{n}`" if kind == "TIMESTAMP" else f"`{n}`"
        for n, kind in columns
    ]


def _aware(columns: Columns) -> list[str]:
    """The reverse of :func:`_naive`, for reading the job's own Parquet back."""
    return [
        f"CAST(`{n}` AS TIMESTAMP) AS `{n}`" if kind == "TIMESTAMP" else f"`{n}`"
        for n, kind in columns
    ]


def _write(frame: DataFrame, columns: Columns, path: str, by_day: bool = False) -> None:
    writer = frame.selectExpr(*_naive(columns)).write.mode("overwrite")
    (writer.partitionBy("day") if by_day else writer).parquet(path)


def _is(tag: str) -> Callable[[tuple[str, Any]], bool]:
    """A filter keeping the tagged rows of ``tag``."""
    return lambda tagged: tagged[0] == tag


def _counts(tagged: RDD[tuple[str, Any]]) -> Counts:
    total = Counts()
    for part in tagged.filter(lambda t: t[0] == "n").map(lambda t: t[1]).collect():
        total.add(part, MAX_PROBLEMS)
    return total


def _analysed(
    spark: SparkSession, config: SparkConfig, report: SparkReport
) -> RDD[tuple[str, Any]] | None:
    """The tagged rows of every input (None: no input): local files read by the DuckDB pass's
    reader (:mod:`msgwatch.analysis.spark.files`), else every line by Spark's text source."""
    max_line = config.max_line_bytes
    listed = list_files(config)
    if listed is None:
        lines = _read(spark, config, report)
        if lines is None:
            return None
        return lines.rdd.mapPartitions(lambda part: analyse_partition(part, max_line))
    paths, problems = listed
    report.problems += len(problems)
    report.first_problems.extend(problems[: MAX_PROBLEMS - len(report.first_problems)])
    if not paths:
        return None
    slices = min(len(paths), 8 * spark.sparkContext.defaultParallelism)
    files = spark.sparkContext.parallelize(paths, slices)
    return files.mapPartitions(lambda part: analyse_files(part, max_line))


def _tables(
    spark: SparkSession, config: SparkConfig, tagged: RDD[tuple[str, Any]], report: SparkReport
) -> None:
    """Write the observations and verdicts of ``tagged``; count into ``report``."""
    tagged = tagged.persist(StorageLevel.DISK_ONLY)  # not in memory: the writes need it
    try:
        for tag, columns, table in (
            ("o", OBSERVATION_COLUMNS, "observations"),
            ("v", VERDICT_COLUMNS, "verdicts"),
        ):
            rows = tagged.filter(_is(tag)).map(lambda t: t[1])
            _write(_frame(spark, rows, columns), columns, _path(config, table), by_day=True)
        counts = _counts(tagged)
    finally:
        tagged.unpersist()
    report.lines = counts.items
    report.measurements = counts.measurements
    report.observations = counts.observations
    report.verdicts = counts.verdicts
    report.skipped = dict(sorted(counts.skipped.items()))
    report.problems += counts.problems
    report.first_problems.extend(counts.first_problems[: MAX_PROBLEMS - len(report.first_problems)])


def _empty_verdicts(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], staging_schema(VERDICT_COLUMNS)).selectExpr(
        *typed_select(VERDICT_COLUMNS)
    )


def _verdicts(spark: SparkSession, config: SparkConfig, has_lines: bool) -> DataFrame:
    """The verdict table as written (empty when there was no input)."""
    if not has_lines:
        return _empty_verdicts(spark)
    try:
        written = spark.read.parquet(_path(config, "verdicts"))
    except AnalysisException:  # no rows: Spark wrote no partition
        return _empty_verdicts(spark)
    return written.selectExpr(*_aware(VERDICT_COLUMNS))


def run(config: SparkConfig, spark: SparkSession | None = None) -> SparkReport:
    """Run the job (on ``spark`` when given, else on a session started and stopped here)."""
    started = time.monotonic()
    own = spark is None
    active = spark if spark is not None else session.start(config.master, config.conf)
    try:
        master = str(active.sparkContext.master)
        report = SparkReport(
            out_dir=str(config.out_dir), master=master, bucket_seconds=config.bucket_seconds
        )
        analysed = _analysed(active, config, report)
        if analysed is not None:
            _tables(active, config, analysed, report)
        verdicts = _verdicts(active, config, analysed is not None).cache()
        try:
            _finish(active, config, verdicts, report)
        finally:
            verdicts.unpersist()
        report.seconds = round(time.monotonic() - started, 3)
        text = orjson.dumps(report.to_json()).decode()
        active.createDataFrame([(text,)], "value STRING").coalesce(1).write.mode("overwrite").text(
            _path(config, "report")
        )
        return report
    finally:
        if own:
            active.stop()


def _finish(
    spark: SparkSession, config: SparkConfig, verdicts: DataFrame, report: SparkReport
) -> None:
    """Aggregates and events from the verdicts."""
    verdicts.createOrReplaceTempView("verdicts")
    seconds = config.bucket_seconds
    spark.sql(unique_verdicts_sql(seconds)).createOrReplaceTempView("unique_verdicts")
    aggregates = spark.sql(spark_aggregate_sql(seconds)).cache()
    try:
        _write(aggregates.coalesce(1), AGGREGATE_COLUMNS, _path(config, "aggregates"))
        summary = aggregates.selectExpr("count(*) AS n", "max(bucket) AS bucket")
        count, newest = summary.selectExpr("n", text("bucket")).collect()[0]
        report.aggregates = int(count)
        until = horizon(config.closed_until, newest, seconds)
        params = DetectorParams(bucket_seconds=seconds)
        events = detect_events(aggregates, params, until, RULES_VERSION)
    finally:
        aggregates.unpersist()
    report.events = len(events)
    lines = [orjson.dumps(row).decode() for row in events]
    frame = _frame(spark, spark.sparkContext.parallelize(lines, 1), EVENT_COLUMNS)
    _write(frame.coalesce(1), EVENT_COLUMNS, _path(config, "events"))


def _arguments(argv: Sequence[str] | None) -> SparkConfig:
    parser = argparse.ArgumentParser(
        prog="msgwatch-spark", description="msgwatch's analysis on Spark"
    )
    parser.add_argument("out_dir", help="output directory (local path or shared-storage URI)")
    parser.add_argument(
        "--jsonl", action="append", default=[], help="JSONL file or glob (repeatable)"
    )
    parser.add_argument("--archive", action="append", default=[], help="collector data directory")
    parser.add_argument("--ooni", action="append", default=[], help="OONI bucket root (raw/…)")
    parser.add_argument("--ooni-cc")
    parser.add_argument("--ooni-since", type=dt.date.fromisoformat)
    parser.add_argument("--ooni-until", type=dt.date.fromisoformat)
    parser.add_argument("--bucket-seconds", type=int, default=3600)
    parser.add_argument("--closed-until", type=dt.datetime.fromisoformat)
    parser.add_argument(
        "--master",
        default=None,
        help=f"Spark master (default: spark-submit's, else {DEFAULT_MASTER})",
    )
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    conf = dict(item.split("=", 1) for item in args.conf)
    return SparkConfig(
        out_dir=args.out_dir,
        jsonl=args.jsonl,
        archives=args.archive,
        ooni=args.ooni,
        ooni_cc=args.ooni_cc,
        ooni_since=args.ooni_since,
        ooni_until=args.ooni_until,
        bucket_seconds=args.bucket_seconds,
        closed_until=args.closed_until,
        master=args.master,
        conf=conf,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``python -m`` or ``spark-submit``): run, and write the report to stdout."""
    config = _arguments(argv)
    if config.master is None and not _submitted():
        config = dataclasses.replace(config, master=DEFAULT_MASTER)
    report = run(config)
    sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _submitted() -> bool:
    """Whether spark-submit started this process (its launcher hands over a gateway port)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


if __name__ == "__main__":
    raise SystemExit(main())

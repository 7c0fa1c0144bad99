"""The analysis on Apache Spark: the same transforms, aggregates and events as the DuckDB pass.

Spark does the distributing; this package only says what to compute, with the engine-independent
code of :mod:`msgwatch.analysis` (``transform``, the aggregate semantics, ``events.detect``).

Rules:

- ``pyspark`` is imported only by this package's submodules, never here, so that importing
  :mod:`msgwatch.analysis` (or this package) never needs pyspark or Java; :func:`run_spark` imports
  the job when called.
- The job is a batch rebuild: it reads every input again and replaces ``OUT/spark/`` whole
  (``docs/analysis-spark.md``). Incremental passes are the DuckDB engine's.
- Entry points: :func:`run_spark` (``msgwatch analyse --engine spark``),
  ``python -m msgwatch.analysis.spark.job`` and ``spark-submit .../msgwatch/analysis/spark/job.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgwatch.analysis.spark.config import SparkConfig, SparkReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["SparkConfig", "SparkReport", "run_spark"]


def run_spark(config: SparkConfig, spark: SparkSession | None = None) -> SparkReport:
    """Run the Spark job for ``config`` (on ``spark`` when given; else a session it starts and stops)."""
    from msgwatch.analysis.spark.job import run  # pyspark only now

    return run(config, spark)

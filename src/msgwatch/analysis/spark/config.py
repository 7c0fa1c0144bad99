"""What the Spark job is told (:class:`SparkConfig`) and what it reports (:class:`SparkReport`).

Pure data, no pyspark. Paths are text so that they may be URIs of shared storage on a cluster
(``hdfs://``, ``s3a://``); local paths work as they are.

Inputs, each read as text lines (``.gz`` decompressed by Spark):

- ``jsonl``: JSONL files or globs, bare measurements or collector archive records;
- ``archives``: collector data directories, read as ``DATA/archive/*/*.jsonl.gz``;
- ``ooni``: roots laid out as OONI's public bucket, ``ROOT/raw/YYYYMMDD/HH/CC/TESTNAME/*.jsonl.gz``,
  narrowed by ``ooni_cc`` (the path's country) and ``ooni_since``/``ooni_until`` (its day, inclusive).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from msgwatch.analysis.inputs.lines import MAX_LINE_BYTES
from msgwatch.analysis.schema import checked_bucket_seconds

DEFAULT_MASTER = "local[2]"
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class SparkConfig:
    """One Spark run: inputs, output directory, bucket size and where Spark runs."""

    out_dir: str
    jsonl: Sequence[str] = ()
    archives: Sequence[str] = ()
    ooni: Sequence[str] = ()
    ooni_cc: str | None = None
    ooni_since: dt.date | None = None
    ooni_until: dt.date | None = None
    bucket_seconds: int = 3600
    max_line_bytes: int = MAX_LINE_BYTES
    closed_until: dt.datetime | None = (
        None  # buckets before it are final (None: the newest is open)
    )
    master: str | None = DEFAULT_MASTER  # None: the master spark-submit was given
    conf: Mapping[str, str] = field(default_factory=dict)  # extra Spark settings

    def __post_init__(self) -> None:
        checked_bucket_seconds(self.bucket_seconds)
        if self.max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")

    def input_globs(self) -> list[tuple[str, str]]:
        """``(kind, glob)`` of every input: ``jsonl``, ``archive`` or ``ooni``."""
        globs = [("jsonl", path) for path in self.jsonl]
        globs += [("archive", f"{str(d).rstrip('/')}/archive/*/*.jsonl.gz") for d in self.archives]
        cc = (self.ooni_cc or "*").upper()
        globs += [("ooni", f"{str(d).rstrip('/')}/raw/*/*/{cc}/*/*.jsonl.gz") for d in self.ooni]
        return globs


@dataclass
class SparkReport:
    """What one Spark run did (the figures mirror the DuckDB pass's report)."""

    out_dir: str
    master: str
    bucket_seconds: int
    lines: int = 0
    measurements: int = 0
    observations: int = 0
    verdicts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: int = 0
    first_problems: list[tuple[str, str]] = field(default_factory=list)
    aggregates: int = 0
    events: int = 0
    seconds: float = 0.0
    engine: str = "spark"

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        data = asdict(self)
        data["problems"] = {
            "count": self.problems,
            "first": [list(p) for p in self.first_problems[:MAX_PROBLEMS]],
        }
        del data["first_problems"]
        return data

"""The analysis on Spark local mode against the DuckDB pass, on the throughput benchmark's input.

    .venv/bin/python benchmarks/analysis_spark.py                  # 20,000 measurements
    .venv/bin/python benchmarks/analysis_spark.py --count 200000   # the throughput benchmark's size
    .venv/bin/python benchmarks/analysis_spark.py --data DATA      # an archive made already

The run

1. writes a synthetic collector data directory with ``benchmarks/synth_archive.py`` (``--count``
   measurements; kept under ``--keep DIR`` when given, else in a temporary directory);
2. **DuckDB**: ``run_pass`` with the archive as its source (``ArchiveSource``), ``workers=2``;
3. **Spark**: ``run_spark`` on ``local[2]`` with the session's own settings (a 1g driver) over the
   same archive files (``--archive DATA``), the session's start-up timed apart from the job;
4. **equality**: the aggregates and the events of both engines compared as multisets of rows
   (every column), read from their Parquet files with DuckDB.

Prints the measurements, both engines' times and rates, the peak memory of the Spark JVM and of
its largest Python worker, and whether the tables are equal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks.analysis_throughput import descendants, memory_kb  # noqa: E402
from benchmarks.synth_archive import SynthConfig, write  # noqa: E402

from msgwatch.analysis.schema import AGGREGATE_COLUMNS, EVENT_COLUMNS, Columns, names  # noqa: E402
from msgwatch.analysis.spark.session import LOCAL_CONF  # noqa: E402

SPARK_HEAP = LOCAL_CONF["spark.driver.memory"]


@contextlib.contextmanager
def place(keep: Path | None, name: str) -> Iterator[Path]:
    """A directory under ``keep``, else a temporary one removed afterwards."""
    if keep is not None:
        path = keep / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="msgwatch-spark-") as tmp:
        yield Path(tmp)


def rows(files: list[str], columns: Columns) -> list[tuple[Any, ...]]:
    """The rows of Parquet files with the table's columns, sorted (a multiset)."""
    if not files:
        return []
    selected = ", ".join(f'"{n}"' for n in names(columns))
    with duckdb.connect() as connection:
        found = connection.execute(f"SELECT {selected} FROM read_parquet(?)", [files]).fetchall()
    return sorted(found, key=repr)


def duckdb_files(out: Path, table: str) -> list[str]:
    """The committed Parquet files of a DuckDB-pass table."""
    listed = json.loads((out / "state.json").read_text())["files"][table]
    listed = listed if isinstance(listed, list) else [listed]
    return [str(out / f) for f in listed if f.endswith(".parquet")]


def spark_files(out: Path, table: str) -> list[str]:
    """The Parquet files of a Spark-job table."""
    return sorted(str(p) for p in (out / "spark" / table).rglob("*.parquet"))


def run_duckdb(data: Path, out: Path) -> tuple[float, int]:
    """The DuckDB pass over the archive: (seconds, measurements)."""
    from msgwatch.analysis.passes import PassConfig, run_pass
    from msgwatch.collector.store.feed import ArchiveSource

    started = time.perf_counter()
    report = run_pass(PassConfig(sources=[ArchiveSource(data)], out_dir=out, workers=2))
    return time.perf_counter() - started, report.measurements


def run_spark_job(data: Path, out: Path, master: str) -> dict[str, float]:
    """The Spark job over the archive with the session's own settings (a 1g driver in local
    mode): session start and job seconds, measurements, and the peak memory of the JVM and of
    its Python workers (read before the session stops; the workers live as long as it)."""
    from pyspark import SparkContext

    from msgwatch.analysis.spark import SparkConfig, run_spark, session

    started = time.perf_counter()
    spark = session.start(master, {}, app_name="msgwatch-bench")
    ready = time.perf_counter()
    try:
        report = run_spark(
            SparkConfig(out_dir=str(out), archives=[str(data)], master=master), spark
        )
        done = time.perf_counter()
        gateway = SparkContext._gateway
        jvm = gateway.proc.pid if gateway is not None and gateway.proc is not None else 0
        tree = descendants(jvm) if jvm else []  # the JVM first, then its Python workers
        workers = [memory_kb(pid)[1] for pid in tree[1:]]
        jvm_kb = memory_kb(jvm)[1] if jvm else 0
    finally:
        session.stop(spark)
    return {
        "start": ready - started,
        "seconds": done - ready,
        "measurements": report.measurements,
        "jvm_mb": jvm_kb / 1024,
        "worker_mb": max(workers, default=0) / 1024,
        "workers": len(workers),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--data", type=Path, help="an existing collector data directory")
    parser.add_argument("--keep", type=Path, help="keep the archive and outputs here")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    with place(args.keep, f"spark-bench-{args.count}") as work:
        data = args.data or work / "data"
        if args.data is None:
            made = write(data, SynthConfig(count=args.count))
            print(
                f"synth_archive: {made['measurements']:,} measurements in {made['seconds']:.1f} s"
            )
        duck_seconds, measured = run_duckdb(data, work / "duckdb")
        job = run_spark_job(data, work / "spark-out", args.master)
        spark_seconds, spark_measured = job["seconds"], int(job["measurements"])
        print(f"measurements:              {measured:,} (DuckDB)  {spark_measured:,} (Spark)")
        print(
            f"DuckDB pass (workers=2):   {duck_seconds:8.1f} s  {measured / duck_seconds:10,.0f} measurements/s"
        )
        print(f"Spark {args.master} job:     {spark_seconds:8.1f} s  {spark_measured / spark_seconds:10,.0f} measurements/s"
              f"  (+ {job['start']:.1f} s session start)")  # fmt: skip
        print(
            f"Spark peak memory:         JVM {job['jvm_mb']:,.0f} MB (driver heap"
            f" {SPARK_HEAP}), largest of {job['workers']:.0f} Python workers {job['worker_mb']:,.0f} MB"
        )
        equal = True
        for table, columns in (("aggregates", AGGREGATE_COLUMNS), ("events", EVENT_COLUMNS)):
            duck = rows(duckdb_files(work / "duckdb", table), columns)
            spark = rows(spark_files(work / "spark-out", table), columns)
            same = duck == spark
            equal = equal and same
            print(
                f"{table:<10} DuckDB {len(duck):>8,} rows  Spark {len(spark):>8,} rows  equal: {same}"
            )
        print(f"both engines agree: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

"""Both engines, one input: the Spark job and the DuckDB pass write the same tables and events.

Input: the real lab measurements, a synthetic timeline (two networks of one country measuring
Skype four times an hour: the lab's own blocked and open Skype measurements, re-dated, their
``network_events`` left out to keep the file small; calls on AS65001 are blocked for six hours
after sixteen open ones, AS65002 works throughout) and a file of bad lines. One Spark session
(local[2], loopback only) serves the module; under heavy load Spark's fixed costs dominate, hence
the module's timeout.
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from pyspark.sql import SparkSession

from msgwatch.analysis.inputs.jsonl import jsonl_sources
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.analysis.schema import (
    AGGREGATE_COLUMNS,
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    VERDICT_COLUMNS,
    Columns,
    names,
)
from msgwatch.analysis.spark import SparkConfig, SparkReport, run_spark, session

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"
START = dt.datetime(2026, 5, 22, 0, 0)
HOURS = 28
BLOCKED = range(16, 22)  # hours when AS65001's calls are blocked (the detector learns 60 first)
CONTROL = range(12, HOURS)  # hours when AS65002 measures
PER_HOUR = (5, 20, 35, 50)
pytestmark = [
    pytest.mark.timeout(600),
    # PySpark's own sockets to its JVM are closed by the garbage collector, not by PySpark
    # (pyspark 3.5, unfixable here); the fixtures collect them while this module's filter holds.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]
BAD_LINES = [b"{not json", b"[1, 2]", b"[" * 5000 + b"]" * 5000, b'{"test_name": 7}']


def _lab_skype() -> tuple[dict[str, Any], dict[str, Any]]:
    """The lab's Skype measurements: blocked calls (ISP 1, censoring) and open ones (ISP 2)."""
    found: dict[str, dict[str, Any]] = {}
    with gzip.open(LAB) as lines:
        for line in lines:
            measurement = orjson.loads(line)
            if measurement["input"] == "skype":
                measurement["test_keys"]["network_events"] = []
                found[measurement["probe_asn"]] = measurement
    return found["AS64512"], found["AS64513"]


def _timeline(path: Path) -> None:
    blocked, open_ = _lab_skype()
    with path.open("wb") as out:
        for hour in range(HOURS):
            for minute in PER_HOUR:
                when = START + dt.timedelta(hours=hour, minutes=minute)
                for asn in ("AS65001", "AS65002") if hour in CONTROL else ("AS65001",):
                    source = blocked if asn == "AS65001" and hour in BLOCKED else open_
                    copy = {
                        **source,
                        "probe_asn": asn,
                        "measurement_start_time": when.strftime("%Y-%m-%d %H:%M:%S"),
                    }
                    out.write(orjson.dumps(copy) + b"\n")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("inputs")
    _timeline(folder / "timeline.jsonl")
    (folder / "bad.jsonl").write_bytes(b"\n".join(BAD_LINES) + b"\n")
    (folder / "torn.jsonl.gz").write_bytes(_torn())
    return [LAB, folder / "timeline.jsonl", folder / "bad.jsonl", folder / "torn.jsonl.gz"]


def _torn() -> bytes:
    """The lab's measurements on another network a day earlier, gzipped and cut at 60 %."""
    lines = []
    with gzip.open(LAB) as lab:
        for line in lab:
            measurement = orjson.loads(line)
            measurement["probe_asn"] = "AS65003"
            measurement["measurement_start_time"] = "2026-05-21 12:00:00"
            lines.append(orjson.dumps(measurement))
    whole = gzip.compress(b"\n".join(lines) + b"\n")
    return whole[: len(whole) * 6 // 10]


def _torn_lines() -> int:
    """The whole lines before the cut (what both engines read of the torn file)."""
    return zlib.decompressobj(31).decompress(_torn()).count(b"\n")


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    conf = {
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.files.maxPartitionBytes": str(4 << 20),
        "spark.driver.memory": "768m",
    }
    active = session.start("local[2]", conf, app_name="msgwatch-test")
    yield active
    session.stop(active)  # and its JVM, which would otherwise live on for the rest of the suite
    gc.collect()  # PySpark leaves sockets of finished jobs to the collector: close them here


@pytest.fixture(scope="module")
def duck_out(inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("duckdb")
    run_pass(PassConfig(sources=jsonl_sources(inputs), out_dir=out, workers=1))
    return out


@pytest.fixture(scope="module")
def spark_run(
    inputs: list[Path], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, SparkReport]:
    out = tmp_path_factory.mktemp("spark")
    config = SparkConfig(out_dir=str(out), jsonl=[str(p) for p in inputs])
    report = run_spark(config, spark)
    gc.collect()
    return out, report


def _files(duck_out: Path, table: str) -> list[str]:
    """The committed files of a DuckDB-pass table."""
    state = json.loads((duck_out / "state.json").read_text())
    listed = state["files"][table]
    listed = listed if isinstance(listed, list) else [listed]
    return [str(duck_out / f) for f in listed if f.endswith(".parquet")]


def _rows(files: list[str], columns: Columns) -> list[tuple[Any, ...]]:
    """Every row of the Parquet files, sorted (a multiset), with exactly the table's columns."""
    selected = ", ".join(f'"{n}"' for n in names(columns))
    with duckdb.connect() as connection:
        relation = connection.execute(
            f"SELECT {selected} FROM read_parquet(?, hive_partitioning=true)", [files]
        )
        rows = relation.fetchall()
    return sorted(rows, key=repr)


def _spark_files(out: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (out / "spark" / table).rglob("*.parquet"))


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("aggregates", AGGREGATE_COLUMNS),
        ("events", EVENT_COLUMNS),
        ("verdicts", VERDICT_COLUMNS),
        ("observations", OBSERVATION_COLUMNS),
    ],
)
def test_both_engines_write_the_same_rows(
    duck_out: Path, spark_run: tuple[Path, SparkReport], table: str, columns: Columns
) -> None:
    duck = _rows(_files(duck_out, table), columns)
    spark = _rows(_spark_files(spark_run[0], table), columns)
    assert duck, f"the DuckDB pass wrote no {table}"
    assert spark == duck


def test_the_blocked_calls_are_one_event_per_function_on_the_blocked_network(
    spark_run: tuple[Path, SparkReport],
) -> None:
    out, report = spark_run
    events = _rows(_spark_files(out, "events"), EVENT_COLUMNS)
    column = names(EVENT_COLUMNS)
    network = [dict(zip(column, e, strict=True)) for e in events if e[1] == "network"]
    synthetic = [e for e in network if e["probe_asn"] in ("AS65001", "AS65002")]
    assert sorted((e["probe_asn"], e["service"], e["function"]) for e in synthetic) == [
        ("AS65001", "skype", "video"),
        ("AS65001", "skype", "voice"),
    ]
    for event in synthetic:
        assert START + dt.timedelta(hours=BLOCKED.start) <= event["start"]
        assert event["start"] <= START + dt.timedelta(hours=BLOCKED.start + 3)
        assert event["end"] is not None
        assert START + dt.timedelta(hours=BLOCKED.stop - 1) < event["end"]
        assert event["end"] <= START + dt.timedelta(hours=BLOCKED.stop + 3)
        assert json.loads(event["controls"])["other_network_worked"]
    assert report.events == len(events)


def test_bad_lines_are_counted_and_everything_else_analysed(
    duck_out: Path, spark_run: tuple[Path, SparkReport]
) -> None:
    """Bad lines and a truncated gzip file: the same problems as the DuckDB pass's (where, with
    the line, and reason), the torn file's whole lines analysed, the job not ended."""
    report = spark_run[1]
    duck = json.loads((duck_out / "state.json").read_text())
    duck_problems = [
        orjson.loads(line)
        for line in (duck_out / duck["files"]["problems"]).read_bytes().splitlines()
    ]
    assert report.problems == len(BAD_LINES) + 1 == len(duck_problems)
    assert sorted(report.first_problems) == sorted((p["where"], p["reason"]) for p in duck_problems)
    assert any(reason.startswith("truncated_gzip") for _, reason in report.first_problems)
    assert all(":" in where for where, _ in report.first_problems)  # with the line
    lines = 40 + (HOURS + len(CONTROL)) * len(PER_HOUR) + _torn_lines()
    assert 0 < _torn_lines() < 40 and report.measurements == lines
    assert duck["schema_version"]

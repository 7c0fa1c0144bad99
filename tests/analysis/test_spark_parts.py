"""The Spark engine's pieces that need no JVM: type mapping, inputs, executor-side analysis, SQL text."""

from __future__ import annotations

import datetime as dt
import gzip
import importlib
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from pyspark.sql.types import DateType, LongType, StringType, TimestampType

from msgwatch.analysis import aggregates as duckdb_aggregates
from msgwatch.analysis import schema
from msgwatch.analysis.spark import SparkConfig
from msgwatch.analysis.spark.aggregates import spark_aggregate_sql, unique_verdicts_sql
from msgwatch.analysis.spark.columns import spark_type, staging_schema, typed_select
from msgwatch.analysis.spark.files import analyse_files, list_files, local_path
from msgwatch.analysis.spark.rows import Counts, analyse_partition

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"
TABLES = [
    schema.OBSERVATION_COLUMNS,
    schema.VERDICT_COLUMNS,
    schema.AGGREGATE_COLUMNS,
    schema.EVENT_COLUMNS,
]


def test_importing_the_package_needs_no_pyspark() -> None:
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "import msgwatch.analysis, msgwatch.analysis.spark\n"
        "from msgwatch.analysis.spark import run_spark, SparkConfig\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("columns", TABLES)
def test_every_schema_type_has_a_spark_type(columns: schema.Columns) -> None:
    for _, kind in columns:
        spark_type(kind)
    staged = staging_schema(columns)
    assert [f.name for f in staged.fields] == list(schema.names(columns))
    assert len(typed_select(columns)) == len(columns)


def test_times_are_staged_as_text_and_cast() -> None:
    assert spark_type("TIMESTAMP") == TimestampType()
    assert spark_type("DATE") == DateType()
    assert spark_type("BIGINT") == LongType()
    staged = {f.name: f.dataType for f in staging_schema(schema.VERDICT_COLUMNS).fields}
    assert staged["measurement_start_time"] == StringType()
    assert "CAST(`day` AS DATE) AS `day`" in typed_select(schema.VERDICT_COLUMNS)
    with pytest.raises(ValueError, match="HUGEINT"):
        spark_type("HUGEINT")


def test_input_globs() -> None:
    config = SparkConfig(
        out_dir="/o", jsonl=["a.jsonl"], archives=["/data/"], ooni=["s3a://b"], ooni_cc="az"
    )
    assert config.input_globs() == [
        ("jsonl", "a.jsonl"),
        ("archive", "/data/archive/*/*.jsonl.gz"),
        ("ooni", "s3a://b/raw/*/*/AZ/*/*.jsonl.gz"),
    ]
    with pytest.raises(ValueError):
        SparkConfig(out_dir="/o", bucket_seconds=0)


def _analyse(lines: list[str]) -> tuple[list[str], list[str], Counts]:
    observations: list[str] = []
    verdicts: list[str] = []
    counts = Counts()
    for tag, payload in analyse_partition([("f.jsonl", line) for line in lines], 1 << 24):
        if tag == "o":
            observations.append(payload)
        elif tag == "v":
            verdicts.append(payload)
        else:
            counts.add(payload, 100)
    return observations, verdicts, counts


def test_a_partition_gives_rows_with_the_schema_and_counts_bad_lines() -> None:
    with gzip.open(LAB, "rt", encoding="utf-8") as lines:
        good = [line.rstrip("\n") for line in lines][:3]
    observations, verdicts, counts = _analyse([*good, "{nope", "", "[" * 3000 + "]" * 3000])
    assert counts.measurements == 3 and counts.items == 5
    assert counts.problems == 2 and all(where == "f.jsonl" for where, _ in counts.first_problems)
    assert counts.verdicts == len(verdicts) > 0 and counts.observations == len(observations) > 0
    row = orjson.loads(verdicts[0])
    assert list(row) == list(schema.names(schema.VERDICT_COLUMNS))
    assert row["measurement_uid"].startswith("sha256-")


def test_an_archive_record_keeps_the_collectors_uid_and_probe_tag() -> None:
    with gzip.open(LAB, "rt", encoding="utf-8") as lines:
        measurement = next(lines).rstrip("\n")
    record = (
        '{"measurement_uid":"20261203T000000Z_abc","idempotency_key":"0123456789abcdef.k",'
        f'"report_id":"r","received_at":"2026-12-03 00:00:01","measurement":{measurement}}}'
    )
    _, verdicts, _ = _analyse([record])
    rows = [orjson.loads(v) for v in verdicts]
    assert {(r["measurement_uid"], r["probe_tag"]) for r in rows} == {
        ("20261203T000000Z_abc", "0123456789abcdef")
    }


def test_the_spark_sql_mirrors_the_duckdb_clauses() -> None:
    duck = duckdb_aggregates.aggregate_sql(600)
    spark = spark_aggregate_sql(600) + unique_verdicts_sql(600)
    for clause in (
        "/ 86400) AS BIGINT),\n                     measurement_uid, service",
        "floor(",
        "/ 600) AS BIGINT)",
        "coalesce(mechanism, '') AS mechanism",
        "count(measurement_uid)",
        "count(DISTINCT probe_tag)",
        "WHERE measurement_start_time IS NOT NULL",
    ):
        assert clause in duck and clause in spark, clause
    with pytest.raises(ValueError):
        spark_aggregate_sql(0)


def test_the_job_module_runs_as_a_script_name() -> None:
    job = importlib.import_module("msgwatch.analysis.spark.job")
    with pytest.raises(SystemExit):
        job.main(["--help"])


def test_unicode_line_separators_inside_a_row_do_not_split_it() -> None:
    with gzip.open(LAB, "rt", encoding="utf-8") as lines:
        measurement = orjson.loads(next(lines))
    for query in measurement["test_keys"]["queries"]:
        query["hostname"] = "a\u2028b\u2029c\x85d." + str(query.get("hostname"))
    observations, _, counts = _analyse([orjson.dumps(measurement).decode()])
    assert counts.observations == len(observations) > 0
    rows = [orjson.loads(o) for o in observations]  # each a whole row
    assert any("a\u2028b\u2029c\x85d." in str(r["hostname"]) for r in rows)


def test_local_inputs_are_listed_on_the_driver_and_others_left_to_spark(tmp_path: Path) -> None:
    """Paths and file: URIs are listed (globs expanded, directories opened, OONI days kept from
    the first to the last, each file once); any other scheme leaves the run to Spark's reader."""
    for day in ("20240101", "20240102", "20240103"):
        folder = tmp_path / "ooni" / "raw" / day / "10" / "IR" / "whatsapp"
        folder.mkdir(parents=True)
        (folder / f"{day}10_IR_whatsapp.n0.jsonl.gz").write_bytes(gzip.compress(b"{}\n"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.jsonl").write_bytes(b"{}\n")
    (tmp_path / "dir" / "notes.txt").write_bytes(b"not an input\n")
    config = SparkConfig(
        out_dir="/o",
        jsonl=[str(tmp_path / "dir"), f"file://{tmp_path}/dir/*.jsonl", str(tmp_path / "none*")],
        ooni=[str(tmp_path / "ooni")],
        ooni_since=dt.date(2024, 1, 2),
        ooni_until=dt.date(2024, 1, 3),
    )
    listed = list_files(config)
    assert listed is not None
    files, problems = listed
    assert [Path(f).name for f in files] == [
        "a.jsonl",
        "2024010210_IR_whatsapp.n0.jsonl.gz",
        "2024010310_IR_whatsapp.n0.jsonl.gz",
    ]
    assert problems == [(str(tmp_path / "none*"), "unreadable: no such files")]
    assert list_files(SparkConfig(out_dir="/o", jsonl=["a.jsonl", "hdfs://nn/x/*.jsonl"])) is None
    assert local_path("file:///a/b") == "/a/b" and local_path("s3a://b/c") is None


def test_a_file_partition_reports_what_the_duckdb_reader_reports(tmp_path: Path) -> None:
    """A torn gzip file and bad lines: the problems of the DuckDB pass's reader (file and line),
    the whole lines before the cut analysed."""
    lab = LAB.read_bytes()
    torn = tmp_path / "torn.jsonl.gz"
    torn.write_bytes(lab[: len(lab) // 2])
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{nope\n\xff\xfe\n")
    counts = Counts()
    for tag, payload in analyse_files([str(torn), str(bad)], 1 << 24):
        if tag == "n":
            counts.add(payload, 100)
    readable = zlib.decompressobj(31).decompress(lab[: len(lab) // 2]).count(b"\n")
    assert counts.measurements == readable > 0
    reasons = sorted(
        (where.rsplit(":", 1)[0], reason.split(":")[0]) for where, reason in counts.first_problems
    )
    assert reasons == [
        (str(bad), "not_json"),
        (str(bad), "not_utf8"),
        (str(torn), "truncated_gzip"),
    ]


def test_inputs_named_twice_or_with_glob_characters_are_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file named relative and absolute, by a directory and a glob, is listed once, absolute;
    a name holding ``[`` is that file, not a pattern; a file: URI is decoded."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_bytes(b"{}\n")
    (data / "b[1].jsonl").write_bytes(b"{}\n")
    monkeypatch.chdir(tmp_path)
    config = SparkConfig(
        out_dir="/o",
        jsonl=[
            "data",
            "data/*.jsonl",
            str(data / "a.jsonl"),
            "data/b[1].jsonl",
            f"file://{str(data).replace(' ', '%20')}/b%5B1%5D.jsonl",
        ],
    )
    listed = list_files(config)
    assert listed is not None
    assert listed == ([str(data / "a.jsonl"), str(data / "b[1].jsonl")], [])


def test_a_partition_keeps_its_first_problems_and_counts_the_rest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\n" * 500)
    counts = Counts()
    for tag, payload in analyse_files([str(bad)], 1 << 24, keep=7):
        if tag == "n":
            counts.add(payload, 100)
    assert counts.problems == 500 and len(counts.first_problems) == 7

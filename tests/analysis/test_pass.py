"""The pass over the lab's measurements: rows, aggregates, state, second pass, rebuild, dedup."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from msgwatch.analysis import aggregates, lake, workers
from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.passes import PassBusy, PassConfig, PassProgress, run_pass
from msgwatch.analysis.schema import MAX_BUCKET_SECONDS
from msgwatch.analysis.transform import Meta, transform
from msgwatch.durable import flocked
from tests.analysis.conftest import LAB, LinesSource

BUCKET = 60


def expected_rows(lines: list[bytes]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The observation and verdict rows computed directly, one measurement at a time."""
    observations: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for number, line in enumerate(lines):
        measurement = orjson.loads(line)
        uid = measurement.get("measurement_uid") or (
            "sha256-" + hashlib.sha256(line).hexdigest()[:32]
        )
        out = transform(measurement, Meta(where=f"x:{number}", measurement_uid=uid))
        observations += out.observations
        verdicts += out.verdicts
    return observations, verdicts


def expected_aggregates(
    verdicts: list[dict[str, Any]], bucket: int = BUCKET
) -> Counter[tuple[Any, ...]]:
    """Aggregate ``measurements`` counted by hand: per (period, uid, service, function) the
    earliest row (the period: whole buckets making at least a day)."""
    period = bucket * -(-86400 // bucket)
    epoch = dt.datetime(1970, 1, 1)
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in sorted(verdicts, key=lambda r: r["measurement_start_time"]):
        seconds = int(
            (dt.datetime.fromisoformat(row["measurement_start_time"]) - epoch).total_seconds()
        )
        key = (seconds // period, row["measurement_uid"], row["service"], row["function"])
        seen.setdefault(key, {**row, "seconds": seconds})
    counts: Counter[tuple[Any, ...]] = Counter()
    for row in seen.values():
        start = epoch + dt.timedelta(seconds=row["seconds"] // bucket * bucket)
        group = (start, row["probe_cc"], row["probe_asn"], row["service"], row["function"])
        counts[(*group, row["verdict"], row["mechanism"] or "")] += 1
    return counts


def table(out: Path, files: list[str] | str) -> list[dict[str, Any]]:
    """Every row of the listed Parquet files."""
    listed = [files] if isinstance(files, str) else files
    with duckdb.connect() as connection:
        cursor = connection.execute(
            f"SELECT * FROM {lake.read_parquet_sql(lake.absolute(out, listed))}"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def config(out: Path, *sources: Any, **options: Any) -> PassConfig:
    return PassConfig(
        sources=list(sources), out_dir=out, bucket_seconds=BUCKET, workers=1, **options
    )


def test_the_pass_writes_what_the_transform_gives(tmp_path: Path, lab_lines: list[bytes]) -> None:
    progress: list[PassProgress] = []
    out = tmp_path / "out"
    report = run_pass(config(out, JsonlSource([LAB]), progress=progress.append))
    observations, verdicts = expected_rows(lab_lines)
    assert (report.items, report.measurements, report.problems) == (40, 40, 0)
    assert (report.observations, report.verdicts) == (len(observations), len(verdicts))
    state = lake.read_state(out)
    assert state is not None and state["pass"] == 1 and report.pass_number == 1
    assert len(table(out, state["files"]["observations"])) == len(observations)
    written = table(out, state["files"]["verdicts"])
    assert sorted(
        (r["measurement_uid"], r["service"], r["function"], r["verdict"]) for r in written
    ) == sorted((r["measurement_uid"], r["service"], r["function"], r["verdict"]) for r in verdicts)
    aggregates = table(out, state["files"]["aggregates"])
    got = Counter(
        {
            (
                r["bucket"],
                r["probe_cc"],
                r["probe_asn"],
                r["service"],
                r["function"],
                r["verdict"],
                r["mechanism"],
            ): r["measurements"]
            for r in aggregates
        }
    )
    assert got == expected_aggregates(verdicts)
    assert report.aggregates == len(aggregates)
    assert all(r["bucket_seconds"] == BUCKET for r in aggregates)
    assert {p.phase for p in progress} >= {"reading", "aggregates", "events", "committing", "done"}
    assert all(p.where.startswith(str(LAB)) for p in progress if p.where)


def test_a_second_pass_over_the_same_data_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_pass(config(out, JsonlSource([LAB])))
    state = (out / "state.json").read_bytes()
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    again = run_pass(config(out, JsonlSource([LAB])))
    assert (again.new_pass, again.pass_number, again.items) == (False, 1, 0)
    assert again.aggregates > 0
    assert (out / "state.json").read_bytes() == state
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files


def test_new_data_adds_a_pass_and_a_measurement_read_twice_counts_once(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    out = tmp_path / "out"
    first, second = LinesSource("a", lab_lines[:8]), LinesSource("b", lab_lines[5:12])
    run_pass(config(out, first))
    report = run_pass(config(out, first, second))  # 5..7 read again through b
    assert (report.pass_number, report.items) == (2, 7)
    state = lake.read_state(out)
    assert state is not None and state["sources"] == {"lines:a": 8, "lines:b": 7}
    assert [name for name in state["files"]["verdicts"] if "pass-000002" in name]
    _, verdicts = expected_rows(lab_lines[:12])
    aggregates = table(out, state["files"]["aggregates"])
    assert sum(r["measurements"] for r in aggregates) == sum(expected_aggregates(verdicts).values())
    assert not list((out / "aggregates").glob("pass-000001*"))  # the older aggregates went


def test_a_changed_rules_version_rebuilds(tmp_path: Path, lab_lines: list[bytes]) -> None:
    out = tmp_path / "out"
    source = LinesSource("a", lab_lines[:4])
    first = run_pass(config(out, source))
    state = lake.read_state(out)
    assert state is not None
    old_files = state["files"]["verdicts"]
    state["rules_version"] = "0.0.0-old"
    lake.write_state(out, state)
    report = run_pass(config(out, source))
    assert report.rebuilt and "rules_version" in (report.rebuild_reason or "")
    assert (report.pass_number, report.items, report.verdicts) == (2, 4, first.verdicts)
    new_state = lake.read_state(out)
    assert new_state is not None and not set(old_files) & set(new_state["files"]["verdicts"])
    assert not any((out / name).exists() for name in old_files)
    asked = run_pass(config(out, source, rebuild=True))
    assert asked.rebuilt and asked.rebuild_reason == "asked" and asked.items == 4
    bucket = run_pass(PassConfig(sources=[source], out_dir=out, bucket_seconds=30, workers=1))
    assert bucket.rebuilt and "bucket_seconds" in (bucket.rebuild_reason or "")


def test_hostile_lines_are_problems_with_where_and_the_rest_is_analysed(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    bomb = b"[" * 100_000 + b"]" * 100_000
    wrong = orjson.dumps({**orjson.loads(lab_lines[0]), "test_name": 5})
    hostile = [b"{not json", bomb, b"[1, 2]", b"\xff\xfe", wrong, b"x" * 600_001, b'"text"']
    lines = [lab_lines[0], *hostile, lab_lines[1]]
    out = tmp_path / "out"
    report = run_pass(config(out, LinesSource("h", lines), max_line_bytes=600_000))
    reasons = dict(report.first_problems)
    assert report.problems == len(hostile) and report.measurements == 2
    assert reasons["h:2"].startswith("not_json")
    assert reasons["h:3"].startswith("not_json")  # the nesting bomb: orjson's recursion limit
    assert reasons["h:4"] == "not_an_object" and reasons["h:8"] == "not_an_object"
    assert reasons["h:5"].startswith("not_json")
    assert reasons["h:6"].startswith("bad_measurement")
    assert reasons["h:7"] == "line_too_long"
    state = lake.read_state(out)
    assert state is not None
    written = [
        orjson.loads(line) for line in (out / state["files"]["problems"]).read_bytes().splitlines()
    ]
    assert [p["where"] for p in written] == [f"h:{n}" for n in range(2, 9)]
    _, verdicts = expected_rows([lab_lines[0], lab_lines[1]])
    assert report.verdicts == len(verdicts) > 0
    source = LinesSource("h", [*lines, lab_lines[2]])
    assert run_pass(config(out, source, max_line_bytes=600_000)).problems == 0
    later = lake.read_state(out)
    assert later is not None and later["files"]["problems"] == state["files"]["problems"]


def test_unknown_tests_are_counted_by_name(tmp_path: Path, lab_lines: list[bytes]) -> None:
    unknown = orjson.dumps({**orjson.loads(lab_lines[0]), "test_name": "dash"})
    report = run_pass(config(tmp_path / "out", LinesSource("u", [unknown, unknown])))
    assert report.skipped == {"unknown_test": 2, "unknown_test:dash": 2}
    assert report.problems == 0 and report.verdicts == 0


def test_a_source_that_raises_is_a_problem_not_a_crash(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    class Broken(LinesSource):
        def read(self, checkpoint: Any) -> Any:
            yield from super().read(checkpoint)
            raise OSError("disk gone")

    report = run_pass(
        config(tmp_path / "out", Broken("b", lab_lines[:2]), LinesSource("ok", lab_lines[2:4]))
    )
    assert report.measurements == 4
    assert [(w, r.split(":")[0]) for w, r in report.first_problems] == [("lines:b", "source_error")]


def test_two_workers_give_the_rows_of_one(
    tmp_path: Path, lab_lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "FILE_CHUNK_BYTES", 1)  # a chunk, and row files, per measurement
    one = run_pass(config(tmp_path / "one", LinesSource("a", lab_lines[:6])))
    two = run_pass(
        PassConfig(
            sources=[LinesSource("a", lab_lines[:6])],
            out_dir=tmp_path / "two",
            bucket_seconds=BUCKET,
            workers=2,
            flush_rows=100,  # several flushes, each part from several workers' files
        )
    )
    state = lake.read_state(tmp_path / "two")
    assert state is not None and len(state["files"]["observations"]) > 2
    assert (two.observations, two.verdicts, two.aggregates) == (
        one.observations,
        one.verdicts,
        one.aggregates,
    )
    for kind in ("verdicts", "observations"):  # the workers hand rows back as files
        rows = {}
        for name in ("one", "two"):
            state = lake.read_state(tmp_path / name)
            assert state is not None
            found = table(tmp_path / name, state["files"][kind])
            rows[name] = sorted(orjson.dumps(r, default=str) for r in found)
        assert rows["one"] == rows["two"]
        assert rows["one"]


def test_one_pass_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with flocked(out / lake.LOCK, wait=True), pytest.raises(PassBusy):
        run_pass(config(out, LinesSource("a", [])))


def test_uids_and_probe_tags_come_from_records_and_measurements(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    measurement = orjson.loads(lab_lines[0])
    record = {
        "measurement_uid": "20261203-record-uid",
        "idempotency_key": "tag1.abc.0",
        "report_id": None,
        "received_at": "2026-12-03T02:33:00.000000Z",
        "measurement": measurement,
    }
    own = {**orjson.loads(lab_lines[1]), "measurement_uid": "own-uid"}
    out = tmp_path / "out"
    run_pass(config(out, LinesSource("r", [orjson.dumps(record), orjson.dumps(own), lab_lines[2]])))
    state = lake.read_state(out)
    assert state is not None
    found = {(r["measurement_uid"], r["probe_tag"]) for r in table(out, state["files"]["verdicts"])}
    digest = "sha256-" + hashlib.sha256(lab_lines[2]).hexdigest()[:32]
    assert found == {("20261203-record-uid", "tag1"), ("own-uid", None), (digest, None)}


def _at(line: bytes, uid: str, when: dt.datetime) -> bytes:
    """A lab measurement with its own uid and time."""
    measurement = orjson.loads(line)
    measurement["measurement_uid"] = uid
    measurement["measurement_start_time"] = when.strftime("%Y-%m-%d %H:%M:%S")
    return orjson.dumps(measurement)


def test_incremental_aggregates_are_those_of_one_pass_over_everything(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    """An incremental pass recounts only the buckets from its earliest new verdict on, keeping
    the committed aggregates before them; the result is the one fresh pass's, row for row: with
    new data in buckets already counted, a measurement read again later in time (counted once, in
    its old bucket), one read again earlier in time (counted once, in the new, earlier bucket),
    and late data before everything."""
    t0 = dt.datetime(2026, 5, 22, 10, 0, 0)
    s = dt.timedelta(seconds=1)
    lines = [_at(lab_lines[i % 40], f"u{i}", t0 + i * 30 * s) for i in range(10)]  # buckets 0-4
    lines += [
        _at(lab_lines[(10 + i) % 40], f"u{10 + i}", t0 + (120 + i * 20) * s) for i in range(5)
    ]
    lines.append(_at(lab_lines[3], "u3", t0 + 200 * s))  # u3 again, later: stays in bucket 1
    lines.append(_at(lab_lines[8], "u8", t0 + 130 * s))  # u8 again, earlier: moves to bucket 2
    lines.append(_at(lab_lines[20], "late", t0 - 3600 * s))  # an hour before everything
    out = tmp_path / "out"

    def rows(where: Path) -> list[dict[str, Any]]:
        state = lake.read_state(where)
        assert state is not None
        return table(where, state["files"]["aggregates"])

    reports = []
    for n in (10, 17, 18):  # after each pass: the aggregates of one fresh pass over as much
        reports.append(run_pass(config(out, LinesSource("a", lines[:n]))))
        run_pass(config(tmp_path / f"fresh{n}", LinesSource("a", lines[:n])))
        assert rows(out) == rows(tmp_path / f"fresh{n}"), n
    assert [r.pass_number for r in reports] == [1, 2, 3]
    assert reports[0].aggregates_from is None  # a fresh pass counts everything
    assert reports[1].aggregates_from == "2026-05-22 00:00:00"  # u10's period (and u8's copy's)
    assert reports[2].aggregates_from == "2026-05-22 00:00:00"  # late's: the same day
    got = rows(out)
    _, verdicts = expected_rows(lines)
    assert sum(r["measurements"] for r in got) == sum(expected_aggregates(verdicts).values())
    assert t0 - 3600 * s in {r["bucket"] for r in got}


@pytest.mark.parametrize("batch", [1, 60, 100_000])
def test_aggregates_are_counted_a_run_of_periods_at_a_time_as_one_query_counts_them(
    tmp_path: Path, lab_lines: list[bytes], monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Buckets of 7 hours make periods of 28 (4 buckets), some across a month's end: the pass,
    counting runs of periods (each alone, a few together, all at once) from the parts of their
    days, writes the rows that one query over all verdicts gives and those counted by hand; a uid
    read again later in its period counts once, one read again in another period counts in each."""
    monkeypatch.setattr(aggregates, "PERIOD_BATCH_ROWS", batch)
    bucket = 7 * 3600
    t0 = dt.datetime(2026, 4, 28, 5, 17)
    lines = [
        _at(lab_lines[i % 40], f"p{i}", t0 + dt.timedelta(hours=5 * i, minutes=i))
        for i in range(30)
    ]
    lines.append(_at(lab_lines[4], "p4", t0 + dt.timedelta(hours=20, minutes=30)))  # same period
    lines.append(_at(lab_lines[5], "p5", t0 + dt.timedelta(days=5)))  # another period
    out = tmp_path / "out"
    options = {"out_dir": out, "bucket_seconds": bucket, "workers": 1}
    run_pass(PassConfig(sources=[LinesSource("a", lines)], **options))  # type: ignore[arg-type]
    state = lake.read_state(out)
    assert state is not None
    got = table(out, state["files"]["aggregates"])
    assert [lake.aggregate_month(n) for n in state["files"]["aggregates"]] == ["2026-04", "2026-05"]
    with duckdb.connect() as connection:
        verdicts = lake.read_parquet_sql(lake.absolute(out, state["files"]["verdicts"]))
        connection.execute(f"CREATE VIEW verdicts AS SELECT * FROM {verdicts}")
        cursor = connection.execute(aggregates.aggregate_sql(bucket))
        names = [d[0] for d in cursor.description]
        whole = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert got == whole
    _, rows = expected_rows(lines)
    counted = Counter({(*(r[c] for c in names[:1] + names[2:8]),): r["measurements"] for r in got})
    assert counted == expected_aggregates(rows, bucket)
    assert sum(counted.values()) == len(
        {(r["measurement_uid"], r["service"], r["function"]) for r in rows}
    ) + len({(r["service"], r["function"]) for r in rows if r["measurement_uid"] == "p5"})


def test_aggregates_are_written_per_month_and_a_pass_rewrites_only_its_months(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    """One aggregates file per month of buckets: a pass whose new verdicts are all in the newest
    month keeps the older months' committed files as they are and writes one; late data rewrites
    the months from its own on; after every pass the rows are those of one fresh pass."""
    months = [dt.datetime(2026, 3, 30, 22), dt.datetime(2026, 4, 15, 8), dt.datetime(2026, 5, 2)]
    lines = [
        _at(lab_lines[i], f"m{i}", when + dt.timedelta(minutes=i))
        for i, when in enumerate(months * 2)
    ]
    new = _at(lab_lines[10], "new", dt.datetime(2026, 5, 3, 12))
    late = _at(lab_lines[11], "late", dt.datetime(2026, 4, 1, 0, 30))
    out = tmp_path / "out"

    def listed(where: Path) -> list[str]:
        state = lake.read_state(where)
        assert state is not None
        names = state["files"]["aggregates"]
        assert isinstance(names, list)
        return names

    first = run_pass(config(out, LinesSource("a", lines)))
    assert first.aggregate_files_written == 3
    assert listed(out) == [f"aggregates/pass-000001-2026-0{m}.parquet" for m in (3, 4, 5)]
    assert all(r["bucket"].month == 3 for r in table(out, listed(out)[0]))

    second = run_pass(config(out, LinesSource("a", [*lines, new])))
    assert second.aggregate_files_written == 1
    assert listed(out) == [
        "aggregates/pass-000001-2026-03.parquet",
        "aggregates/pass-000001-2026-04.parquet",
        "aggregates/pass-000002-2026-05.parquet",
    ]
    assert sorted(p.name for p in (out / "aggregates").iterdir()) == [
        Path(n).name for n in listed(out)
    ]  # the replaced May file is gone

    third = run_pass(config(out, LinesSource("a", [*lines, new, late])))
    assert third.aggregate_files_written == 2  # April (the late one's) and May
    assert listed(out)[0] == "aggregates/pass-000001-2026-03.parquet"
    fresh = tmp_path / "fresh"
    run_pass(config(fresh, LinesSource("a", [*lines, new, late])))
    assert table(out, listed(out)) == table(fresh, listed(fresh))


def test_a_lake_with_one_aggregates_file_is_recounted_into_months(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    """A committed state that lists the single aggregates file of a lake written before monthly
    files: the next pass recounts every bucket into monthly files, the rows those of a fresh pass."""
    t0 = dt.datetime(2026, 4, 30, 23, 50)
    lines = [_at(lab_lines[i], f"u{i}", t0 + dt.timedelta(minutes=5 * i)) for i in range(6)]
    out = tmp_path / "out"
    run_pass(config(out, LinesSource("a", lines[:4])))
    state = lake.read_state(out)
    assert state is not None
    single = "aggregates/pass-000001.parquet"
    with duckdb.connect() as connection:
        listed = lake.read_parquet_sql(lake.absolute(out, state["files"]["aggregates"]))
        connection.execute(f"COPY (SELECT * FROM {listed}) TO '{out / single}' (FORMAT PARQUET)")
    lake.write_state(out, {**state, "files": {**state["files"], "aggregates": single}})
    report = run_pass(config(out, LinesSource("a", lines)))
    assert report.aggregates_from is None and report.aggregate_files_written == 2
    fresh = tmp_path / "fresh"
    run_pass(config(fresh, LinesSource("a", lines)))
    after = lake.read_state(out)
    again = lake.read_state(fresh)
    assert after is not None and again is not None
    assert after["files"]["aggregates"] == [
        "aggregates/pass-000002-2026-04.parquet",
        "aggregates/pass-000002-2026-05.parquet",
    ]
    assert table(out, after["files"]["aggregates"]) == table(fresh, again["files"]["aggregates"])
    assert not (out / single).exists()


@pytest.mark.parametrize("bucket", [0, -3600, True, 1.5, "3600", MAX_BUCKET_SECONDS + 1])
def test_a_bucket_outside_1_s_to_365_days_is_refused_before_anything_is_written(
    tmp_path: Path, lab_lines: list[bytes], bucket: Any
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="bucket_seconds must be an integer from 1 to"):
        run_pass(
            PassConfig(
                sources=[LinesSource("a", lab_lines[:1])], out_dir=out, bucket_seconds=bucket
            )
        )
    assert not out.exists()


@pytest.mark.parametrize(
    "bucket",
    [MAX_BUCKET_SECONDS, MAX_BUCKET_SECONDS - 7, 31_536_000 - 86_399, 5 * 86_400 + 1, 86_399],
)
def test_long_buckets_count_the_first_and_last_times_a_measurement_may_have(
    tmp_path: Path, lab_lines: list[bytes], bucket: int
) -> None:
    """Buckets up to the longest, whole days or not, over measurements at the first second of
    1970 and the last of 9998: each counted in its bucket, no arithmetic overflowing (a 365.01-day
    bucket put 9998-12-31 in a period ending beyond the year 9999)."""
    first, last = dt.datetime(1970, 1, 1), dt.datetime(9998, 12, 31, 23, 59, 59)
    lines = [_at(lab_lines[0], "first", first), _at(lab_lines[0], "last", last)]
    out = tmp_path / "out"
    source = LinesSource("a", lines)
    report = run_pass(PassConfig(sources=[source], out_dir=out, bucket_seconds=bucket, workers=1))
    assert report.problems == 0 and report.measurements == 2
    state = lake.read_state(out)
    assert state is not None
    rows = table(out, state["files"]["aggregates"])
    epoch = dt.datetime(1970, 1, 1)
    newest = int((last - epoch).total_seconds()) // bucket * bucket
    assert {r["bucket"] for r in rows} == {epoch, epoch + dt.timedelta(seconds=newest)}
    assert sum(r["measurements"] for r in rows) == sum(
        expected_aggregates(expected_rows(lines)[1], bucket).values()
    )


def test_progress_counts_the_bytes_read_of_what_the_sources_had_left(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    """The progress bar's figures: a plain and a gzip JSONL file, read whole (their sizes), then
    a line appended to the plain one (only it left, then read)."""
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"\n".join(lab_lines[:5]) + b"\n")
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(b"\n".join(lab_lines[5:9]) + b"\n"))
    sizes = plain.stat().st_size + packed.stat().st_size
    out = tmp_path / "out"

    def reading(*sources: Any) -> list[PassProgress]:
        seen: list[PassProgress] = []
        run_pass(config(out, *sources, progress=seen.append))
        return seen

    seen = reading(JsonlSource([plain, packed]))
    assert {p.total_bytes for p in seen} == {sizes}
    done = [p.read_bytes for p in seen]
    assert done == sorted(done) and done[-1] == sizes  # never back, and whole at the end
    assert [p.read_bytes for p in seen if p.phase != "reading"] == [sizes] * sum(
        p.phase != "reading" for p in seen
    )
    with plain.open("ab") as handle:
        handle.write(lab_lines[9] + b"\n")
    again = reading(JsonlSource([plain, packed]))
    assert {p.total_bytes for p in again} == {len(lab_lines[9]) + 1}
    assert again[-1].read_bytes == len(lab_lines[9]) + 1
    unknown = reading(LinesSource("c", lab_lines[10:12]))  # a source that cannot say: no total
    assert {p.total_bytes for p in unknown} == {None}

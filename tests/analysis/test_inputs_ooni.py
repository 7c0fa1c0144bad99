"""OONI's bucket layout as a source, on a tree built from real OONI measurements: time order,
filters, incremental reads, a bounded checkpoint, and nothing read outside the layout."""

from __future__ import annotations

import datetime as dt
import gzip
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.inputs import Item, Mark, Problem, Read
from msgwatch.analysis.inputs.ooni_bucket import OoniBucketSource, folder_name

REAL = Path("/work/shared/ooni-samples/real.jsonl")  # not in the repository


@pytest.fixture(scope="module")
def real() -> list[dict[str, Any]]:
    if not REAL.is_file():
        pytest.skip(f"{REAL} is absent")
    return [orjson.loads(line) for line in REAL.read_bytes().splitlines() if line.strip()]


def bucket_path(m: dict[str, Any], n: int = 0) -> str:
    start = dt.datetime.strptime(m["measurement_start_time"], "%Y-%m-%d %H:%M:%S")
    test = folder_name(m["test_name"])
    hour = start.strftime("%Y%m%d%H")
    cc = m.get("probe_cc") or "ZZ"  # an old one without a country: OONI files it under ZZ
    return f"raw/{hour[:8]}/{hour[8:]}/{cc}/{test}/{hour}_{cc}_{test}.n{n}.jsonl.gz"


def write_bucket(root: Path, measurements: list[dict[str, Any]], n: int = 0) -> None:
    files: dict[str, list[bytes]] = defaultdict(list)
    for m in measurements:
        files[bucket_path(m, n)].append(orjson.dumps(m))
    for rel, lines in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


def run(source: OoniBucketSource, checkpoint: Any = None) -> tuple[list[Item], list[Problem], Any]:
    reads: list[Read] = list(source.read(checkpoint))
    assert isinstance(reads[-1], Mark)
    items = [r for r in reads if isinstance(r, Item)]
    problems = [r for r in reads if isinstance(r, Problem)]
    return items, problems, orjson.loads(orjson.dumps(reads[-1].checkpoint))


def key(m: dict[str, Any]) -> tuple[str, str]:
    return bucket_path(m), m["measurement_start_time"]


def test_every_measurement_is_read_once_in_time_order(
    tmp_path: Path, real: list[dict[str, Any]]
) -> None:
    write_bucket(tmp_path, real)
    for root in (tmp_path, tmp_path / "raw"):  # the bucket's root or raw/ itself
        items, problems, _ = run(OoniBucketSource(root))
        assert problems == []
        read = [orjson.loads(i.line) for i in items]
        assert sorted(orjson.dumps(m) for m in read) == sorted(orjson.dumps(m) for m in real)
        paths = [i.where.rsplit(":", 1)[0] for i in items]
        assert paths == sorted(paths)  # days, hours, countries, tests, files: in order
        assert all(i.where.startswith(str(tmp_path / "raw")) for i in items)


def test_filters_select_days_countries_and_tests(
    tmp_path: Path, real: list[dict[str, Any]]
) -> None:
    write_bucket(tmp_path, real)
    since, until = dt.date(2020, 1, 1), dt.date(2022, 1, 1)
    source = OoniBucketSource(
        tmp_path,
        since=since,
        until=until,
        ccs={"it", "RU"},
        test_names={"web_connectivity", "signal"},
    )
    items, _, _ = run(source)
    expected = [
        m
        for m in real
        if "2020-01-01" <= m["measurement_start_time"][:10] < "2022-01-01"
        and m.get("probe_cc") in {"IT", "RU"}
        and m["test_name"] in {"web_connectivity", "signal"}
    ]
    assert expected  # the sample has some
    assert sorted(i.line for i in items) == sorted(orjson.dumps(m) for m in expected)
    assert (
        source.name
        == f"ooni:{tmp_path / 'raw'}?since=20200101&cc=IT,RU&test=signal,webconnectivity"
    )


def test_a_second_read_takes_only_new_files(tmp_path: Path, real: list[dict[str, Any]]) -> None:
    ordered = sorted(real, key=lambda m: str(m["measurement_start_time"]))
    old, new = ordered[:60], ordered[60:]
    write_bucket(tmp_path, old)
    source = OoniBucketSource(tmp_path)
    items, _, checkpoint = run(source)
    assert len(items) == len(old)
    assert run(source, checkpoint)[0] == []  # nothing new
    late = dict(old[-1], report_id="late")  # a file sorting after the others of the newest hour
    write_bucket(tmp_path, [late], n=1)
    write_bucket(tmp_path, new, n=2)  # and new hours
    items, _, checkpoint = run(source, checkpoint)
    assert sorted(i.line for i in items) == sorted(orjson.dumps(m) for m in [late, *new])
    assert run(source, checkpoint)[0] == []
    # hours long before the newest are folded: the checkpoint stays small
    assert checkpoint["until"] is not None
    assert len(checkpoint["hours"]) < len({bucket_path(m)[:15] for m in real}) // 4


def test_a_crash_between_files_resumes_after_the_last_mark(
    tmp_path: Path, real: list[dict[str, Any]]
) -> None:
    write_bucket(tmp_path, real[:30])
    source = OoniBucketSource(tmp_path)
    reads = list(source.read(None))
    marks = [n for n, r in enumerate(reads) if isinstance(r, Mark)]
    cut = marks[len(marks) // 2]  # the pass committed this mark, then died
    before = [r for r in reads[:cut] if isinstance(r, Item)]
    mark = reads[cut]
    assert isinstance(mark, Mark)
    after, _, _ = run(source, orjson.loads(orjson.dumps(mark.checkpoint)))
    assert sorted(i.line for i in before + after) == sorted(orjson.dumps(m) for m in real[:30])


def test_nothing_outside_the_layout_is_read(tmp_path: Path, real: list[dict[str, Any]]) -> None:
    write_bucket(tmp_path, real[:5])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jsonl.gz").write_bytes(gzip.compress(b'{"secret":1}\n'))
    raw = tmp_path / "raw"
    day = sorted(p for p in raw.iterdir())[0]
    hour = sorted(p for p in day.iterdir())[0]
    (raw / "README.txt").write_bytes(b"hello\n")
    (raw / "20991301").symlink_to(outside)  # a day that is a link
    cc = sorted(p for p in hour.iterdir())[0]
    test = sorted(p for p in cc.iterdir())[0]
    (test / "2020010100_XX_old.tar.gz").write_bytes(b"postcan")
    (test / "zz.jsonl.gz").symlink_to(outside / "x.jsonl.gz")
    (hour / "lowercase").mkdir()
    items, problems, _ = run(OoniBucketSource(tmp_path))
    assert len(items) == 5 and not any(b"secret" in i.line for i in items)
    assert sorted((Path(p.where).name, p.reason) for p in problems) == sorted(
        [
            ("20991301", "unexpected_path: symbolic link"),
            ("2020010100_XX_old.tar.gz", "unexpected_path"),
            ("README.txt", "unexpected_path"),
            ("lowercase", "unexpected_path"),
            ("zz.jsonl.gz", "unexpected_path: symbolic link"),
        ]
    )


def test_a_damaged_file_is_reported_and_the_next_read(
    tmp_path: Path, real: list[dict[str, Any]]
) -> None:
    write_bucket(tmp_path, real[:10])
    files = sorted((tmp_path / "raw").rglob("*.jsonl.gz"))
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])
    items, problems, _ = run(OoniBucketSource(tmp_path))
    assert [p.reason.split(":")[0] for p in problems] == ["truncated_gzip"]
    assert problems[0].where.startswith(f"{files[0]}:")
    assert len(items) >= 10 - sum(
        1 for m in real[:10] if bucket_path(m) == str(files[0].relative_to(tmp_path))
    )


def test_the_bytes_left_are_the_sizes_of_the_files_read(
    tmp_path: Path, real: list[dict[str, Any]]
) -> None:
    """A progress bar's total: the files the walk will read (filters applied), which the read's
    Marks then add up to; nothing left after its checkpoint."""
    write_bucket(tmp_path, real)
    since = dt.date(2022, 1, 1)
    source = OoniBucketSource(tmp_path, since=since)
    wanted = [
        p for p in (tmp_path / "raw").rglob("*.jsonl.gz") if p.parts[-5] >= since.strftime("%Y%m%d")
    ]
    every = sum(p.stat().st_size for p in (tmp_path / "raw").rglob("*.jsonl.gz"))
    assert source.bytes_left(None) == sum(p.stat().st_size for p in wanted) < every
    reads = list(source.read(None))
    assert sum(r.size for r in reads if isinstance(r, Mark)) == source.bytes_left(None)
    last = reads[-1]
    assert isinstance(last, Mark) and source.bytes_left(last.checkpoint) == 0

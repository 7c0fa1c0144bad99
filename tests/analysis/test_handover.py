"""Chunks and rows handed between the pass and its workers as files (msgwatch.analysis.handover)."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis import lake, workers
from msgwatch.analysis.handover import INBOX, pack, spill, unpack
from msgwatch.analysis.inputs import Item
from msgwatch.analysis.schema import VERDICT_COLUMNS
from msgwatch.analysis.workers import ChunkResult, analyse, keep_freed_memory


def test_a_chunk_comes_back_from_its_file_as_it_went_and_the_file_goes(tmp_path: Path) -> None:
    items = [
        Item(b'{"a": 1}', "f:1", "tag", "uid-1", "2026-05-22T10:00:00Z"),
        Item(b"", "f:2"),  # an empty line stays empty
        Item(b"\xff\xfe not utf-8 \x00", "f:3", None, "uid-3", None),
        Item(b"x" * 70_000, "f:4", "t4"),
    ]
    packed = pack(tmp_path, "r1", 7, items)
    assert Path(packed.path) == tmp_path / INBOX / "cr1-0000007.lines"
    assert [slot[-1] for slot in packed.slots] == [len(i.line) for i in items]
    assert not any(isinstance(v, bytes) for slot in packed.slots for v in slot)  # no line travels
    assert unpack(packed) == items
    assert not Path(packed.path).exists()


def test_rows_are_spilled_a_file_per_day_and_odd_days_share_unknown(tmp_path: Path) -> None:
    (tmp_path / "verdicts").mkdir()
    days = {
        "2026-05-22": [b'{"day": "2026-05-22"}\n'],
        "../../etc": [b'{"day": "../../etc"}\n'],
        "unknown": [b'{"day": null}\n', b'{"day": null}\n{"day": null}\n'],
    }
    files = spill(tmp_path, "verdicts", "r1", 3, days)
    assert sorted(files) == ["2026-05-22", "unknown"]
    assert Path(files["2026-05-22"]) == tmp_path / "verdicts" / "cr1-0000003-2026-05-22.ndjson"
    assert Path(files["unknown"]).read_bytes().count(b"\n") == 4  # pieces of whole lines
    assert sorted(p.name for p in (tmp_path / "verdicts").iterdir()) == [
        "cr1-0000003-2026-05-22.ndjson",
        "cr1-0000003-unknown.ndjson",
    ]


def test_a_file_is_never_overwritten(tmp_path: Path) -> None:
    """A worker of a killed pass that finishes late cannot truncate the next pass's files."""
    (tmp_path / "verdicts").mkdir()
    rows = {"2026-05-22": [b'{"day": "2026-05-22"}\n']}
    first = spill(tmp_path, "verdicts", "r1", 0, rows)
    with pytest.raises(FileExistsError):
        spill(tmp_path, "verdicts", "r1", 0, {"2026-05-22": [b"late\n"]})
    assert Path(first["2026-05-22"]).read_bytes() == rows["2026-05-22"][0]
    assert spill(tmp_path, "verdicts", "r2", 0, rows) != first  # another run: beside it
    pack(tmp_path, "r1", 0, [Item(b"{}", "w")])
    with pytest.raises(FileExistsError):
        pack(tmp_path, "r1", 0, [Item(b"[]", "w")])


def test_the_stager_writes_taken_files_after_its_own_rows_and_removes_them(tmp_path: Path) -> None:
    work = lake.prepare(tmp_path)
    stager = lake.Stager(tmp_path, work, "verdicts", VERDICT_COLUMNS, 1)
    day = "2026-05-22"
    stager.add({day: [b'{"measurement_uid": "u0", "day": "2026-05-22"}\n']}, {day: 1})
    taken = []
    for number in (1, 2):
        rows = orjson.dumps({"measurement_uid": f"u{number}", "day": day}) + b"\n"
        taken.append(spill(work, "verdicts", "r", number, {day: [rows]}))
        stager.add_files(taken[-1], {day: 1})
    assert stager.rows == 3
    with lake.connect(work) as connection:
        stager.flush(connection)
        assert stager.written == [lake.part_path("verdicts", day, 1, 0)]
        uids = connection.execute(
            "SELECT measurement_uid FROM read_parquet("
            f"{lake.sql_text(str(tmp_path / stager.written[0]))})"
        ).fetchall()
    assert [u for (u,) in uids] == ["u0", "u1", "u2"]
    assert not list((work / "verdicts").iterdir())  # the taken files are gone too
    assert stager.rows == 0


def test_rows_counted_without_their_file_fail_the_pass_instead_of_vanishing(
    tmp_path: Path,
) -> None:
    work = lake.prepare(tmp_path)
    stager = lake.Stager(tmp_path, work, "verdicts", VERDICT_COLUMNS, 1)
    stager.add_files({}, {"2026-05-22": 3})
    with pytest.raises(RuntimeError, match="disagree"):
        stager.detach()
    stager = lake.Stager(tmp_path, work, "observations", VERDICT_COLUMNS, 1)
    path = spill(work, "observations", "r", 0, {"2026-05-22": [b"{}\n"]})
    stager.add_files(path, {})
    with pytest.raises(RuntimeError, match="disagree"):
        stager.detach()


def test_two_workers_hand_everything_over_as_files_and_leave_none(
    tmp_path: Path, lab_lines: list[bytes]
) -> None:
    work = lake.prepare(tmp_path)
    for table in ("observations", "verdicts"):
        (work / table).mkdir()
    items = [Item(line, f"lines:{n}") for n, line in enumerate(lab_lines[:6], 1)]
    results: list[ChunkResult] = list(analyse(items, 2, 1 << 24, chunk_items=2, work=work))
    assert sum(r.measurements for r in results) == 6
    files = [Path(f) for r in results for days in r.files.values() for f in days.values()]
    assert files and all(f.parent.parent == work and f.exists() for f in files)
    assert all(not r.observations and not r.verdicts for r in results)  # no rows through the pipe
    assert sum(sum(r.verdict_rows.values()) for r in results) == sum(
        f.read_bytes().count(b"\n") for f in files if f.parent.name == "verdicts"
    )
    assert not list((work / INBOX).iterdir())  # every chunk's lines were read and removed
    alone = list(analyse(items, 1, 1 << 24, chunk_items=2, work=work))  # in this process
    assert all(not r.files for r in alone) and sum(len(r.verdicts) for r in alone) > 0
    piped = list(analyse(items, 2, 1 << 24, chunk_items=2))  # no folder: through the pipes
    assert all(not r.files for r in piped)
    assert sum(sum(r.verdict_rows.values()) for r in piped) == sum(
        sum(r.verdict_rows.values()) for r in results
    )


@pytest.mark.parametrize("folder", [True, False])
def test_chunks_in_flight_stay_bounded_and_cancelled_ones_leave_no_lines(
    tmp_path: Path, lab_lines: list[bytes], monkeypatch: pytest.MonkeyPatch, folder: bool
) -> None:
    work = lake.prepare(tmp_path)
    for table in ("observations", "verdicts"):
        (work / table).mkdir()
    monkeypatch.setattr(workers, "FILE_CHUNK_BYTES", 1)  # a chunk per item, with a folder
    pulled = 0

    def items() -> Iterator[Item]:
        nonlocal pulled
        for n in range(200):
            pulled += 1
            yield Item(lab_lines[n % len(lab_lines)], f"lines:{n}")

    results = analyse(items(), 2, 1 << 24, chunk_items=1, work=work if folder else None)
    next(results)
    assert pulled <= 2 * 2 + 1  # at most 2 × workers chunks in flight, then one is taken
    results.close()  # the pass stops: pending chunks are cancelled
    if folder:
        assert not list((work / INBOX).iterdir())


def test_freed_memory_is_kept_where_the_allocator_is_glibcs() -> None:
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_a_worker_collects_garbage_less_often_and_never_scans_its_imports() -> None:
    code = (
        "import gc; from msgwatch.analysis import workers; workers.prepare_worker(); "
        "assert gc.get_threshold() == workers.GC_THRESHOLDS, gc.get_threshold(); "
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count(); "
        "assert gc.isenabled()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_measurements_rows_become_one_piece_of_whole_lines_per_day() -> None:
    out: dict[str, list[bytes]] = {"2026-05-22": [b'{"old": 1}\n']}
    counts = {"2026-05-22": 1}
    rows: list[dict[str, Any]] = [
        {"day": "2026-05-22", "n": 1},
        {"day": "2026-05-23", "n": 2},
        {"day": "2026-05-22", "n": 3},
        {"day": None, "n": 4},
    ]
    workers._add_rows(out, counts, rows)
    workers._add_rows(out, counts, [])
    assert counts == {"2026-05-22": 3, "2026-05-23": 1, "unknown": 1}
    assert out["2026-05-22"][1] == b'{"day":"2026-05-22","n":1}\n{"day":"2026-05-22","n":3}\n'
    assert [orjson.loads(x) for x in b"".join(out["2026-05-23"]).splitlines()] == [rows[1]]
    assert len(out["unknown"]) == 1 and out["unknown"][0].endswith(b"\n")


def test_the_stager_counts_odd_days_rows_under_unknown_by_their_own_day(tmp_path: Path) -> None:
    work = lake.prepare(tmp_path)
    stager = lake.Stager(tmp_path, work, "verdicts", VERDICT_COLUMNS, 1)
    stager.add(
        {"../../etc": [b'{"day": "../../etc"}\n'], "unknown": [b'{"day": null}\n{"day": null}\n']},
        {"../../etc": 1, "unknown": 2},
    )
    assert stager.staged == {"unknown": 3}
    assert (work / "verdicts" / "unknown.ndjson").read_bytes().count(b"\n") == 3

"""Chunks and rows handed between the pass and its workers as files (msgwatch.analysis.handover)."""

from __future__ import annotations

import platform
from pathlib import Path

import orjson

from msgwatch.analysis import lake
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
    packed = pack(tmp_path, 7, items)
    assert Path(packed.path) == tmp_path / INBOX / "c0000007.lines"
    assert all(len(slot) == 5 for slot in packed.slots)  # no line travels with the chunk
    assert unpack(packed) == items
    assert not Path(packed.path).exists()


def test_rows_are_spilled_a_file_per_day_and_odd_days_share_unknown(tmp_path: Path) -> None:
    (tmp_path / "verdicts").mkdir()
    days = {
        "2026-05-22": bytearray(b'{"day": "2026-05-22"}\n'),
        "../../etc": bytearray(b'{"day": "../../etc"}\n'),
        "unknown": bytearray(b'{"day": null}\n'),
    }
    files = spill(tmp_path, "verdicts", 3, days)
    assert sorted(files) == ["2026-05-22", "unknown"]
    assert Path(files["2026-05-22"]) == tmp_path / "verdicts" / "c0000003-2026-05-22.ndjson"
    assert Path(files["unknown"]).read_bytes().count(b"\n") == 2
    assert sorted(p.name for p in (tmp_path / "verdicts").iterdir()) == [
        "c0000003-2026-05-22.ndjson",
        "c0000003-unknown.ndjson",
    ]


def test_the_stager_writes_taken_files_after_its_own_rows_and_removes_them(tmp_path: Path) -> None:
    work = lake.prepare(tmp_path)
    stager = lake.Stager(tmp_path, work, "verdicts", VERDICT_COLUMNS, 1)
    day = "2026-05-22"
    stager.add({day: bytearray(b'{"measurement_uid": "u0", "day": "2026-05-22"}\n')}, {day: 1})
    taken = []
    for number in (1, 2):
        rows = bytearray(orjson.dumps({"measurement_uid": f"u{number}", "day": day}) + b"\n")
        taken.append(spill(work, "verdicts", number, {day: rows}))
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


def test_freed_memory_is_kept_where_the_allocator_is_glibcs() -> None:
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")

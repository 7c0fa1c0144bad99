"""The archive as an analysis source (``ArchiveSource``), against stores written by the
collector's own writer: every stored measurement once, incrementally, uncommitted groups left for
the next read, orphans skipped, damage reported."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.inputs import Item, Mark, Problem, Read
from msgwatch.collector.store import DurableStore, StoreUnavailable, Submission, open_index, writer
from msgwatch.collector.store.archive import Archive, compress_member, read_store_id
from msgwatch.collector.store.feed import ArchiveSource
from msgwatch.collector.store.records import record_line
from tests.collector.test_store_recovery import FlakyIndex
from tests.collector.test_store_scan import read_all, small


def store(data_dir: Path, batches: list[list[int]], *, segment_limit: int | None = None) -> None:
    """Store ``small(n)`` under key ``tag<n % 3>.<n>``, one group per batch."""

    async def main() -> None:
        archive = Archive(data_dir, segment_limit) if segment_limit else None
        opened = await DurableStore.open(data_dir, open_index(data_dir), archive=archive)
        try:
            for batch in batches:
                await opened.put_many([Submission(f"tag{n % 3}.{n}", small(n)) for n in batch])
        finally:
            await opened.close()

    asyncio.run(main())


def run(source: ArchiveSource, checkpoint: Any = None) -> tuple[list[Item], list[Problem], Any]:
    reads: list[Read] = list(source.read(checkpoint))
    assert isinstance(reads[-1], Mark)
    items = [r for r in reads if isinstance(r, Item)]
    problems = [r for r in reads if isinstance(r, Problem)]
    return items, problems, orjson.loads(orjson.dumps(reads[-1].checkpoint))


def inputs(items: list[Item]) -> list[str]:
    return [orjson.loads(i.line)["input"] for i in items]


def test_every_stored_record_once_then_only_what_is_new(tmp_path: Path) -> None:
    store(tmp_path, [[0, 1, 2], [3, 4]])
    source = ArchiveSource(tmp_path)
    assert source.name == f"archive:{read_store_id(tmp_path)}"
    items, problems, checkpoint = run(source)
    assert problems == []
    records = {r.uid: r for r in read_all(tmp_path, None)}
    assert [i.measurement_uid for i in items] == list(records)  # archive order
    for item in items:
        record = records[item.measurement_uid or ""]
        assert orjson.loads(item.line) == record.measurement
        assert item.received_at == record.received_at
        assert item.probe_tag == record.idempotency_key.split(".")[0]
        assert item.where.startswith("archive/") and "@" in item.where
    assert run(source, checkpoint)[0] == []  # nothing new: nothing read
    store(tmp_path, [[5, 6], [3]])  # a new group (and a duplicate, which stores nothing)
    items, _, checkpoint = run(source, checkpoint)
    assert inputs(items) == ["n5", "n6"]
    assert run(source, checkpoint)[0] == []


def test_new_files_are_read_once(tmp_path: Path) -> None:
    store(tmp_path, [[0], [1]], segment_limit=1)  # every group in a new file
    source = ArchiveSource(tmp_path)
    items, _, checkpoint = run(source)
    assert inputs(items) == ["n0", "n1"]
    assert len(checkpoint) == 2
    store(tmp_path, [[2], [3]], segment_limit=1)
    items, _, checkpoint = run(source, checkpoint)
    assert inputs(items) == ["n2", "n3"]
    assert len(checkpoint) == 4 and run(source, checkpoint)[0] == []


def uncommitted_member(data_dir: Path, n: int) -> None:
    """A group written and synced whose index commit has not happened (yet)."""
    key = f"tag0.{n}"
    line = record_line(
        f"20261203000000.000000_IT_signal_{n:016x}", key, None, "2026-12-03T00:00:00.000000Z",
        orjson.dumps(small(n)),
    )  # fmt: skip
    Archive(data_dir).append(
        dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"), compress_member(line + b"\n", 6)
    )


def test_an_uncommitted_group_waits_for_its_commit(tmp_path: Path) -> None:
    store(tmp_path, [[0, 1]])
    uncommitted_member(tmp_path, 7)
    source = ArchiveSource(tmp_path)
    items, problems, checkpoint = run(source)
    assert inputs(items) == ["n0", "n1"] and problems == []
    assert run(source, checkpoint)[0] == []  # still not committed: still waiting
    store(tmp_path, [[2]])  # opening the store again indexes it (recovery), then a new group
    items, _, checkpoint = run(source, checkpoint)
    assert inputs(items) == ["n7", "n2"]
    assert run(source, checkpoint)[0] == []


async def with_an_orphan(data_dir: Path, segment_limit: int | None) -> None:
    """``n0``'s group written, its commit failed twice (so dropped); ``n1``'s commit failed once
    (so committed with the next group, ``n2`` and ``n3``)."""
    archive = Archive(data_dir, segment_limit) if segment_limit else None
    flaky = FlakyIndex(open_index(data_dir))
    opened = await DurableStore.open(data_dir, flaky, archive=archive)
    try:
        flaky.fail = 2
        for n in (0, 1):
            with contextlib.suppress(StoreUnavailable):
                await opened.put_many([Submission(f"tag0.{n}", small(n))])
        await opened.put_many([Submission(f"tag1.{n}", small(n)) for n in (2, 3)])
    finally:
        await opened.close()


def test_orphans_are_skipped_once_later_groups_are_committed(tmp_path: Path) -> None:
    for segment_limit in (None, 1):  # the orphan in the same file, or in a file of its own
        data_dir = tmp_path / f"limit{segment_limit}"
        asyncio.run(with_an_orphan(data_dir, segment_limit))
        stored = [r.uid for r in read_all(data_dir, None)]
        assert len(Archive(data_dir).files()) == (1 if segment_limit is None else 3)
        items, problems, checkpoint = run(ArchiveSource(data_dir))
        assert [i.measurement_uid for i in items] == stored and problems == []
        assert inputs(items) == ["n1", "n2", "n3"]
        assert run(ArchiveSource(data_dir), checkpoint)[0] == []


def test_a_record_of_another_shape_is_parsed_whole(tmp_path: Path) -> None:
    store(tmp_path, [[0]])
    record = {"received_at": "2026-12-03T00:00:00.000000Z", "idempotency_key": "tagx.9",
              "measurement": small(9), "report_id": None, "measurement_uid": "uid-9"}  # fmt: skip
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    Archive(tmp_path, segment_limit=1).append(day, compress_member(orjson.dumps(record), 6))
    store(tmp_path, [])  # recovery indexes it
    items, problems, _ = run(ArchiveSource(tmp_path))
    assert problems == [] and inputs(items) == ["n0", "n9"]
    assert (items[1].measurement_uid, items[1].probe_tag) == ("uid-9", "tagx")
    assert orjson.loads(items[1].line) == small(9)


def test_a_torn_member_ends_the_read_and_damage_is_reported(tmp_path: Path) -> None:
    store(tmp_path, [[0], [1], [2]])
    (file,) = Archive(tmp_path).files()
    path = tmp_path / file
    data = bytearray(path.read_bytes())
    members = [m.offset for m in Archive(tmp_path).scan(file, 0)]
    data[members[1] + 12 : members[1] + 20] = b"\xff" * 8  # the second member damaged
    path.write_bytes(bytes(data) + compress_member(b"{}\n", 6)[:9])  # and a torn tail
    items, problems, checkpoint = run(ArchiveSource(tmp_path))
    assert inputs(items) == ["n0", "n2"]
    assert [(p.where, p.reason.split(":")[0]) for p in problems] == [
        (f"{file}@{members[1]}", "bad_gzip")
    ]
    assert checkpoint == {file: len(data)}  # before the torn member: read again next time


def test_a_repeated_member_is_read_once(tmp_path: Path) -> None:
    store(tmp_path, [[0], [1]])
    (file,) = Archive(tmp_path).files()
    path = tmp_path / file
    first = next(iter(Archive(tmp_path).scan(file, 0)))
    data = path.read_bytes()
    path.write_bytes(data + data[first.offset : first.end])  # damage: a member written twice
    items, problems, checkpoint = run(ArchiveSource(tmp_path))
    assert inputs(items) == ["n0", "n1"] and problems == []
    assert checkpoint == {file: len(data) + first.length}


def test_a_crash_resumes_after_the_committed_mark(tmp_path: Path) -> None:
    store(tmp_path, [[n, n + 100] for n in range(6)])
    source = ArchiveSource(tmp_path)
    reads = list(source.read(None))
    cut = [n for n, r in enumerate(reads) if isinstance(r, Mark)][3]
    mark = reads[cut]
    assert isinstance(mark, Mark)
    before = [r for r in reads[:cut] if isinstance(r, Item)]
    after, _, _ = run(source, orjson.loads(orjson.dumps(mark.checkpoint)))
    assert [i.measurement_uid for i in before + after] == [r.uid for r in read_all(tmp_path, None)]


def test_no_store_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    items, problems, checkpoint = run(ArchiveSource(tmp_path / "nothing"))
    assert items == [] and checkpoint == {}
    assert [p.reason.split(":")[0] for p in problems] == ["unreadable"]


def test_a_shrunk_file_is_read_again(tmp_path: Path) -> None:
    store(tmp_path, [[0]])
    (file,) = Archive(tmp_path).files()
    items, _, _ = run(ArchiveSource(tmp_path), {file: 10**9})
    assert inputs(items) == ["n0"]


def test_a_large_group_is_written_as_members_of_bounded_size_and_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group whose records exceed ``MAX_MEMBER_BYTES`` of text becomes several members (one
    write, one commit): each holds at most that much, or one record alone; the index points into
    the right one, the feed and the store's reads find every record once, and an index rebuilt
    from the archive finds the same."""
    one = len(record_line("x" * 40, "tag0.0", None, "2026-11-01 12:00:00", orjson.dumps(small(0))))
    cap = 3 * one + 10
    monkeypatch.setattr(writer, "MAX_MEMBER_BYTES", cap)
    big = {**small(99), "test_keys": {"pad": "p" * (2 * cap)}}  # a record above the cap: alone

    async def main() -> list[dict[str, Any] | None]:
        opened = await DurableStore.open(tmp_path, open_index(tmp_path))
        try:
            batch = [Submission(f"tag{n % 3}.{n}", small(n)) for n in range(10)]
            batch.insert(4, Submission("tag9.99", big))
            receipts = await opened.put_many(batch)
            assert opened.stats.groups == 1
            return [await opened.get(r.measurement_uid) for r in receipts]
        finally:
            await opened.close()

    stored = asyncio.run(main())
    assert [m and m["input"] for m in stored] == [*(f"n{n}" for n in range(4)), "n99",
                                                  *(f"n{n}" for n in range(4, 10))]  # fmt: skip
    members = _members(tmp_path)
    assert len(members) >= 4 and sum(len(m.data.splitlines()) for m in members) == 11
    assert all(len(m.data) <= cap for m in members if len(m.data.splitlines()) > 1)
    assert next(m for m in members if b'"n99"' in m.data).data.count(b"\n") == 1  # alone
    items, problems, _ = run(ArchiveSource(tmp_path))
    assert problems == []
    assert sorted(inputs(items)) == sorted([f"n{n}" for n in range(10)] + ["n99"])
    assert {int(i.where.split("@")[1].split(":")[0]) for i in items} == {m.offset for m in members}

    for path in tmp_path.glob("index.sqlite3*"):  # the database and its WAL files
        path.unlink()

    async def reopen() -> None:  # the index is rebuilt from the archive's members
        opened = await DurableStore.open(tmp_path, open_index(tmp_path))
        await opened.close()

    asyncio.run(reopen())
    again, problems, _ = run(ArchiveSource(tmp_path))
    assert problems == [] and [i.line for i in again] == [i.line for i in items]


def _members(data_dir: Path) -> list[Any]:
    archive = Archive(data_dir)
    (file,) = archive.files()
    return list(archive.scan(file, 0))


def _marked(source: ArchiveSource, checkpoint: Any = None) -> tuple[int, Any]:
    """The sum of a read's Mark sizes, and its last checkpoint."""
    reads = list(source.read(checkpoint))
    return sum(r.size for r in reads if isinstance(r, Mark)), reads[-1].checkpoint  # type: ignore[union-attr]


def test_the_bytes_left_are_what_the_marks_count_as_read(tmp_path: Path) -> None:
    """A progress bar's total: the archive's bytes after the checkpoint, which the read's Marks
    then add up to; nothing left after it."""
    store(tmp_path, [[0, 1], [2]], segment_limit=1)
    source = ArchiveSource(tmp_path)
    files = sorted((tmp_path / "archive").rglob("*.jsonl.gz"))
    assert source.bytes_left(None) == sum(f.stat().st_size for f in files) > 0
    read, checkpoint = _marked(source)
    assert read == sum(f.stat().st_size for f in files)
    assert source.bytes_left(checkpoint) == 0 and _marked(source, checkpoint)[0] == 0
    store(tmp_path, [[3, 4]], segment_limit=1)
    left = source.bytes_left(checkpoint)
    assert left > 0 and _marked(source, checkpoint)[0] == left

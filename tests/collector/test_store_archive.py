"""The archive alone: members, segments, scans, torn and damaged data, failed writes."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import pytest

from msgwatch.collector.store.archive import Archive, compress_member, lines_of

DAY = "2026-11-24"


def member(*lines: bytes) -> bytes:
    return compress_member(b"".join(line + b"\n" for line in lines), 1)


def test_members_append_and_read_back(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first = archive.append(DAY, member(b'{"a":1}', b'{"b":2}'))
    second = archive.append(DAY, member(b'{"c":3}'))
    assert first.file == second.file == f"archive/{DAY}/000001.jsonl.gz"
    assert (first.offset, second.offset) == (0, first.length)
    # the concatenated members are one gzip stream for any reader
    assert gzip.decompress(archive.path(first.file).read_bytes()) == (
        b'{"a":1}\n{"b":2}\n{"c":3}\n'
    )
    assert archive.read_record(first.file, first.offset, first.length, 8, 7) == b'{"b":2}'
    assert archive.read_record(second.file, second.offset, second.length, 0, 7) == b'{"c":3}'
    scan = archive.scan(first.file, 0)
    members = list(scan)
    assert [(m.offset, m.length) for m in members] == [
        (first.offset, first.length),
        (second.offset, second.length),
    ]
    assert list(lines_of(members[0].data)) == [(0, b'{"a":1}'), (8, b'{"b":2}')]
    assert scan.torn_at is None and scan.end == second.offset + second.length


def test_segments_rotate_at_the_limit_and_at_the_day(tmp_path: Path) -> None:
    archive = Archive(tmp_path, segment_limit=2000)
    files = [archive.append(DAY, member(os.urandom(1500))).file for _ in range(3)]  # incompressible
    assert files == [f"archive/{DAY}/00000{n}.jsonl.gz" for n in (1, 2, 3)]
    assert archive.append("2026-11-25", member(b"{}")).file == "archive/2026-11-25/000001.jsonl.gz"
    assert archive.files() == [*files, "archive/2026-11-25/000001.jsonl.gz"]


def test_a_verified_segment_is_continued_and_an_unverified_one_is_not(tmp_path: Path) -> None:
    Archive(tmp_path).append(DAY, member(b"{}"))
    again = Archive(tmp_path)  # a new process: nothing verified yet
    second = again.append(DAY, member(b"{}"))
    assert second.file.endswith("000002.jsonl.gz")
    third = Archive(tmp_path)
    third.verified(second.file, second.length)  # what recovery does
    placed = third.append(DAY, member(b"{}"))
    assert (placed.file, placed.offset) == (second.file, second.length)


@pytest.mark.parametrize("tail", ["half a member", "zeros", "garbage"])
def test_a_torn_trailing_member_is_found_and_cut(tmp_path: Path, tail: str) -> None:
    archive = Archive(tmp_path)
    good = archive.append(DAY, member(b'{"n":1}'))
    path = archive.path(good.file)
    extra = {
        "half a member": member(os.urandom(3000))[:1000],
        "zeros": b"\0" * 4096,
        "garbage": b"\x1f\x8b\x08 not really gzip",
    }[tail]
    with open(path, "ab") as f:
        f.write(extra)
    scan = archive.scan(good.file, 0)
    assert [m.offset for m in scan] == [0]
    assert scan.torn_at == good.length and scan.end == good.length
    archive.cut(good.file, good.length)
    assert path.stat().st_size == good.length
    assert archive.append(DAY, member(b'{"n":3}')).offset == good.length  # continues after the cut


def test_damage_followed_by_good_members_is_skipped_not_cut(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first = archive.append(DAY, member(b'{"n":1}'))
    second = archive.append(DAY, member(b'{"n":2}'))
    third = archive.append(DAY, member(b'{"n":3}'))
    path = archive.path(first.file)
    data = bytearray(path.read_bytes())
    data[second.offset + 12] ^= 0xFF  # a flipped byte inside the second member
    path.write_bytes(bytes(data))
    scan = archive.scan(first.file, 0)
    assert [m.offset for m in scan] == [first.offset, third.offset]
    assert scan.torn_at is None and scan.skipped == [(second.offset, third.offset)]


def test_a_failed_write_is_truncated_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = Archive(tmp_path)
    good = archive.append(DAY, member(b'{"n":1}'))
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes | memoryview, offset: int) -> int:
        if len(data) > 8:
            return real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(OSError) as failure:
        archive.append(DAY, member(b'{"n":2}' * 50))
    assert failure.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert archive.path(good.file).stat().st_size == good.length
    after = archive.append(DAY, member(b'{"n":3}'))
    assert (after.file, after.offset) == (good.file, good.length)
    assert [m.offset for m in archive.scan(good.file, 0)] == [0, good.length]


def test_when_even_the_truncation_fails_a_new_segment_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path)
    good = archive.append(DAY, member(b'{"n":1}'))
    real_pwrite = os.pwrite

    def half_then_eio(fd: int, data: bytes | memoryview, offset: int) -> int:
        if len(data) > 8:
            return real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.EIO, "Input/output error")

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pwrite", half_then_eio)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError):
        archive.append(DAY, member(b'{"n":2}' * 50))
    monkeypatch.undo()
    torn = archive.path(good.file).stat().st_size
    assert torn > good.length  # the half member is still there...
    after = archive.append(DAY, member(b'{"n":3}'))
    assert after.file.endswith("000002.jsonl.gz")  # ...and nothing is ever written after it
    scan = archive.scan(good.file, 0)
    assert [m.offset for m in scan] == [0] and scan.torn_at == good.length


def test_file_names_are_checked(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    for bad in ("../x", "archive/2026-11-24/../../etc/passwd", "archive/x/000001.jsonl.gz"):
        with pytest.raises(ValueError):
            archive.path(bad)

"""The bounded line reader: every kind of bad input becomes a problem with file and line, the
lines around it are kept, and a huge line never sits in memory."""

from __future__ import annotations

import gzip
import os
import random
import tracemalloc
from pathlib import Path

from msgwatch.analysis.inputs import Problem
from msgwatch.analysis.inputs.lines import MAX_LINE_BYTES, Line, read_lines


def lines_and_problems(
    path: Path, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[tuple[int, bytes]], list[Problem]]:
    lines: list[tuple[int, bytes]] = []
    problems: list[Problem] = []
    for read in read_lines(path, max_line_bytes=max_line_bytes):
        if isinstance(read, Line):
            lines.append((read.number, read.data))
        else:
            problems.append(read)
    return lines, problems


def test_plain_lines_are_numbered_and_empty_ones_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n\n   \n{"b":2}\r\n{"c":3}')
    lines, problems = lines_and_problems(path)
    assert lines == [(1, b'{"a":1}'), (4, b'{"b":2}\r'), (5, b'{"c":3}')]
    assert problems == []
    last = list(read_lines(path))[-1]
    assert isinstance(last, Line) and not last.terminated  # no newline after it


def test_not_utf8_is_that_line_only(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":"\xc3\xa9"}\n{"b":"\xff\xfe"}\n{"c":3}\n')
    lines, problems = lines_and_problems(path)
    assert [n for n, _ in lines] == [1, 3]
    assert [(p.where, p.reason.split(":")[0]) for p in problems] == [(f"{path}:2", "not_utf8")]


def test_a_long_line_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n' + b"x" * 5000 + b'\n{"c":3}\n')
    lines, problems = lines_and_problems(path, max_line_bytes=1000)
    assert lines == [(1, b'{"a":1}'), (3, b'{"c":3}')]
    assert [(p.where, p.reason.split(":")[0]) for p in problems] == [(f"{path}:2", "line_too_long")]


def write_huge_line(path: Path, size: int, compress: bool) -> None:
    """``{"a":1}``, a line of ``size`` bytes, ``{"c":3}``, written in 1 MiB pieces."""
    piece = b"y" * (1 << 20)
    raw = open(path, "wb")  # noqa: SIM115 - closed below, through the gzip writer when there is one
    out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw
    try:
        out.write(b'{"a":1}\n')
        for _ in range(size // len(piece)):
            out.write(piece)
        out.write(b'\n{"c":3}\n')
    finally:
        out.close()
        raw.close()


def test_a_100_mb_line_is_never_held_in_memory(tmp_path: Path) -> None:
    for compress in (False, True):
        path = tmp_path / ("huge.jsonl.gz" if compress else "huge.jsonl")
        write_huge_line(path, 100 << 20, compress)
        tracemalloc.start()
        try:
            lines, problems = lines_and_problems(path)  # the default limit: 16 MiB
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert lines == [(1, b'{"a":1}'), (3, b'{"c":3}')]
        assert [(p.where, p.reason.split(":")[0]) for p in problems] == [
            (f"{path}:2", "line_too_long")
        ]
        assert peak < 40 << 20, peak  # the limit and a chunk, not the line's 100 MB
        path.unlink()


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"  # a line split across two members is still one line
    path.write_bytes(gzip.compress(b'{"a":1}\n{"b"') + gzip.compress(b':2}\n{"c":3}\n'))
    lines, problems = lines_and_problems(path)
    assert lines == [(1, b'{"a":1}'), (2, b'{"b":2}'), (3, b'{"c":3}')]
    assert problems == []


def test_a_truncated_member_keeps_the_lines_before_it(tmp_path: Path) -> None:
    first = gzip.compress(b'{"a":1}\n{"b":2}\n')
    second = gzip.compress(b'{"c":3}\n' + os.urandom(3000).hex().encode() + b"\n")
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(first + second[: len(second) // 2])
    lines, problems = lines_and_problems(path)
    assert lines[:2] == [(1, b'{"a":1}'), (2, b'{"b":2}')]
    assert [p.reason.split(":")[0] for p in problems] == ["truncated_gzip"]
    assert problems[0].where.startswith(f"{path}:")


def test_damaged_deflate_data_is_bad_gzip(tmp_path: Path) -> None:
    good = gzip.compress(b'{"a":1}\n')
    bad = bytearray(gzip.compress(os.urandom(2000).hex().encode() + b"\n"))
    bad[30:60] = b"\xff" * 30
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(good + bytes(bad))
    lines, problems = lines_and_problems(path)
    assert lines == [(1, b'{"a":1}')]
    assert [(p.where, p.reason.split(":")[0]) for p in problems] == [(f"{path}:2", "bad_gzip")]


def test_garbage_after_a_member_is_bad_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n') + b"not gzip at all")
    lines, problems = lines_and_problems(path)
    assert lines == [(1, b'{"a":1}')]
    assert [p.reason.split(":")[0] for p in problems] == ["bad_gzip"]


def test_unreadable_files_are_problems(tmp_path: Path) -> None:
    target = tmp_path / "real.jsonl"
    target.write_bytes(b'{"a":1}\n')
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path in (tmp_path / "missing.jsonl", link, fifo, tmp_path):
        lines, problems = lines_and_problems(path)
        assert lines == []
        assert [(p.where, p.reason.split(":")[0]) for p in problems] == [(str(path), "unreadable")]


def test_a_plain_file_resumes_at_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":3}\n')
    first = [r for r in read_lines(path) if isinstance(r, Line)]
    resumed = list(read_lines(path, start=first[0].end, first_line=2))
    assert [(r.number, r.data) for r in resumed if isinstance(r, Line)] == [
        (2, b'{"b":2}'),
        (3, b'{"c":3}'),
    ]


def test_lines_across_chunks_are_whole_in_both_forms(tmp_path: Path) -> None:
    rng = random.Random(11)
    expected = [b"x" * rng.randrange(1, 3000) + str(n).encode() for n in range(1500)]
    text = b"\n".join(expected) + b"\n"
    assert len(text) > 4 * (1 << 18)  # several chunks
    for name, data in (("a.jsonl", text), ("a.jsonl.gz", gzip.compress(text))):
        path = tmp_path / name
        path.write_bytes(data)
        lines, problems = lines_and_problems(path)
        assert problems == []
        assert [d for _, d in lines] == expected
        ends = [r.end for r in read_lines(path) if isinstance(r, Line)]
        assert ends[-1] == len(text)

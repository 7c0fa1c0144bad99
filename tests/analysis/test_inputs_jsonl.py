"""JSONL files as a source: incremental (unchanged, appended, rewritten, replaced), archive records
unwrapped without parsing the measurement, hostile lines passed on or reported."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis.inputs import Item, Mark, Problem, Read, jsonl
from msgwatch.analysis.inputs.jsonl import JsonlSource, jsonl_sources
from msgwatch.analysis.inputs.records import item_of, unwrap


def run(source: JsonlSource, checkpoint: Any = None) -> tuple[list[Item], list[Problem], Any]:
    reads: list[Read] = list(source.read(checkpoint))
    assert isinstance(reads[-1], Mark)  # a source always ends with a mark
    items = [r for r in reads if isinstance(r, Item)]
    problems = [r for r in reads if isinstance(r, Problem)]
    return items, problems, orjson.loads(orjson.dumps(reads[-1].checkpoint))  # JSON, as stored


def lines(items: list[Item]) -> list[bytes]:
    return [i.line for i in items]


def test_name_and_where(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n')
    source = JsonlSource([path])
    assert source.name == f"jsonl:{path}"
    items, _, _ = run(source)
    assert items[0].where == f"{path}:1"
    assert [s.name for s in jsonl_sources([path, tmp_path / "b.jsonl"])] == [
        f"jsonl:{path}",
        f"jsonl:{tmp_path / 'b.jsonl'}",
    ]


def test_unchanged_is_not_read_again_and_appended_is_read_from_where_it_stopped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n')
    source = JsonlSource([path])
    items, _, checkpoint = run(source)
    assert lines(items) == [b'{"n":1}', b'{"n":2}']
    items, _, checkpoint = run(source, checkpoint)
    assert items == []
    with open(path, "ab") as f:
        f.write(b'{"n":3}\n{"n":4')  # the last line is still being written
    items, _, checkpoint = run(source, checkpoint)
    assert [(i.line, i.where) for i in items] == [
        (b'{"n":3}', f"{path}:3"),
        (b'{"n":4', f"{path}:4"),  # passed on (the pass reports it), not counted as read
    ]
    items, _, checkpoint = run(source, checkpoint)
    assert items == []  # unchanged: the unterminated line is not read twice
    with open(path, "ab") as f:
        f.write(b'0}\n{"n":5}\n')  # completed
    items, _, checkpoint = run(source, checkpoint)
    assert [(i.line, i.where) for i in items] == [
        (b'{"n":40}', f"{path}:4"),
        (b'{"n":5}', f"{path}:5"),
    ]


def test_rewritten_or_replaced_files_are_read_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n')
    source = JsonlSource([path])
    _, _, checkpoint = run(source)
    path.write_bytes(b'{"m":1}\n{"m":2}\n{"m":3}\n')  # rewritten in place, longer
    items, _, checkpoint = run(source, checkpoint)
    assert lines(items) == [b'{"m":1}', b'{"m":2}', b'{"m":3}']
    path.write_bytes(b'{"m":9}\n')  # truncated
    items, _, checkpoint = run(source, checkpoint)
    assert lines(items) == [b'{"m":9}']
    stat = path.stat()
    path.write_bytes(b'{"m":8}\n')  # same size, same head length: the content differs
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    items, _, checkpoint = run(source, checkpoint)
    assert lines(items) == [b'{"m":8}']
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"m":8}\n{"r":1}\n')  # same start, a new file renamed over it
    replacement.replace(path)
    items, _, checkpoint = run(source, checkpoint)
    assert lines(items) == [b'{"m":8}', b'{"r":1}']


def test_a_gzip_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"n":1}\n'))
    source = JsonlSource([path])
    items, _, checkpoint = run(source)
    assert lines(items) == [b'{"n":1}']
    assert run(source, checkpoint)[0] == []
    with open(path, "ab") as f:
        f.write(gzip.compress(b'{"n":2}\n'))
    items, _, _ = run(source, checkpoint)
    assert lines(items) == [b'{"n":1}', b'{"n":2}']


def test_a_directory_stands_for_its_jsonl_files(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"n":2}\n'))
    (tmp_path / "a.jsonl").write_bytes(b'{"n":1}\n')
    (tmp_path / "notes.txt").write_bytes(b"not read\n")
    items, problems, checkpoint = run(JsonlSource([tmp_path]))
    assert lines(items) == [b'{"n":1}', b'{"n":2}']
    assert problems == []
    assert sorted(checkpoint) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl.gz")]


def test_a_missing_file_is_a_problem_and_the_others_are_read(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"n":1}\n')
    items, problems, _ = run(JsonlSource([tmp_path / "gone.jsonl", good]))
    assert lines(items) == [b'{"n":1}']
    assert [(p.where, p.reason.split(":")[0]) for p in problems] == [
        (str(tmp_path / "gone.jsonl"), "unreadable")
    ]


RECORD = (
    b'{"measurement_uid":"20261203000000.000001_IT_signal_0123456789abcdef",'
    b'"idempotency_key":"0a1b2c3d4e5f6a7b.00112233445566778899aabbccddeeff",'
    b'"report_id":null,"received_at":"2026-12-03T00:00:00.000001Z",'
    b'"measurement":{"test_name":"signal","measurement":{"nested":",\\"measurement\\":"}}}'
)


def test_archive_records_are_unwrapped_without_parsing_the_measurement(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(RECORD + b"\n")
    items, _, _ = run(JsonlSource([path]))
    (item,) = items
    assert orjson.loads(item.line) == orjson.loads(RECORD)["measurement"]
    assert item.measurement_uid == "20261203000000.000001_IT_signal_0123456789abcdef"
    assert item.probe_tag == "0a1b2c3d4e5f6a7b"
    assert item.received_at == "2026-12-03T00:00:00.000001Z"


def test_lines_that_only_look_like_records_pass_whole() -> None:
    bare = b'{"measurement_uid":"x","test_name":"signal","test_keys":{}}'
    assert unwrap(bare) is None
    assert item_of(bare, "f:1").line == bare
    odd = b'{"measurement_uid":"x","idempotency_key":5,"received_at":"t","measurement":{}}'
    assert item_of(odd, "f:1").line == odd and item_of(odd, "f:1").measurement_uid is None
    keyless = (
        b'{"measurement_uid":"u","idempotency_key":"nodot","received_at":"t","measurement":{}}'
    )
    item = item_of(keyless, "f:1")
    assert item.line == b"{}" and item.measurement_uid == "u" and item.probe_tag is None


def test_a_nesting_bomb_passes_through_as_an_item(tmp_path: Path) -> None:
    bomb = b'{"test_keys":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    path = tmp_path / "bomb.jsonl"
    path.write_bytes(bomb + b'\n{"n":2}\n')
    items, problems, _ = run(JsonlSource([path]))
    assert lines(items) == [bomb, b'{"n":2}']  # the pass's parse refuses it, with its where
    assert problems == []


def test_a_crash_inside_a_plain_file_resumes_after_the_last_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "MARK_EVERY", 2)
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % n for n in range(5)))
    source = JsonlSource([path])
    reads = list(source.read(None))
    first = next(n for n, r in enumerate(reads) if isinstance(r, Mark))
    assert [r.line for r in reads[:first] if isinstance(r, Item)] == [b'{"n":0}', b'{"n":1}']
    mark = reads[first]
    assert isinstance(mark, Mark)
    items, _, checkpoint = run(source, orjson.loads(orjson.dumps(mark.checkpoint)))
    assert [(i.line, i.where) for i in items] == [
        (b'{"n":%d}' % n, f"{path}:{n + 1}") for n in (2, 3, 4)
    ]
    assert run(source, checkpoint)[0] == []

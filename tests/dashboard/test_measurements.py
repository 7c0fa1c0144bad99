"""JsonlMeasurements: the analysis's uid rule, plain and gzip files, and its bounds (reported,
never a crash)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson

from msgwatch.dashboard.measurements import JsonlMeasurements

OWN = {"measurement_uid": "m-own", "test_name": "msgwatch_service", "input": "whatsapp"}
BARE = {"test_name": "msgwatch_service", "input": "skype"}
RECORD_MEASUREMENT = {"test_name": "msgwatch_service", "input": "signal"}


def _record() -> bytes:
    header = {"measurement_uid": "m-record", "idempotency_key": "tag.1", "received_at": "2026"}
    return orjson.dumps(header)[:-1] + b',"measurement":' + orjson.dumps(RECORD_MEASUREMENT) + b"}"


def _lines() -> list[bytes]:
    return [orjson.dumps(OWN), orjson.dumps(BARE), _record()]


def _sha(line: bytes) -> str:
    return "sha256-" + hashlib.sha256(line).hexdigest()[:32]


def test_finds_by_the_analysis_uid_rule(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(_lines()) + b"\n")
    source = JsonlMeasurements([path])
    assert source.get("m-own") == OWN
    assert source.get(_sha(orjson.dumps(BARE))) == BARE
    assert source.get("m-record") == RECORD_MEASUREMENT
    assert source.get("unknown") is None
    assert source.problems == []


def test_reads_gzip_files(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(_lines())))
    source = JsonlMeasurements([path])
    assert source.get("m-own") == OWN
    assert source.get("m-record") == RECORD_MEASUREMENT


def test_an_oversized_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    big = orjson.dumps({"measurement_uid": "big", "pad": "x" * 5000})
    path.write_bytes(big + b"\n" + orjson.dumps(OWN) + b"\n")
    source = JsonlMeasurements([path], max_line_bytes=1000)
    assert source.get("big") is None
    assert source.get("m-own") == OWN
    assert [p.reason.split(":")[0] for p in source.problems] == ["line_too_long"]


def test_a_broken_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    data = gzip.compress(b"\n".join(_lines()) + b"\n")
    path.write_bytes(data[: len(data) // 2])
    source = JsonlMeasurements([path])
    assert source.get("m-record") is None
    assert len(source.problems) == 1
    assert source.problems[0].reason.split(":")[0] in {"truncated_gzip", "bad_gzip"}


def test_a_missing_file_and_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"not json\n[1, 2]\n" + orjson.dumps(OWN) + b"\n")
    source = JsonlMeasurements([tmp_path / "missing.jsonl", path])
    assert source.get("m-own") == OWN
    reasons = [p.reason.split(":")[0] for p in source.problems]
    assert reasons == ["unreadable", "not_a_measurement", "not_a_measurement"]


def test_the_index_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(_lines()) + b"\n")
    source = JsonlMeasurements([path], max_entries=2)
    assert source.get("m-own") == OWN
    assert source.get("m-record") is None
    assert [p.reason.split(":")[0] for p in source.problems] == ["index_full"]


def test_a_changed_file_gives_none(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(_lines()) + b"\n")
    source = JsonlMeasurements([path])
    assert source.get("m-own") == OWN
    path.write_bytes(b"x" * 10)
    assert source.get("m-record") is None
    path.unlink()
    assert source.get("m-own") is None

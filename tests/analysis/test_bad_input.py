"""Bad input end to end: one pass over JSONL files that hold, among real lab measurements, a
measurement with missing keys, one with wrong-typed keys, a test_keys nesting bomb, a line of
non-UTF-8 bytes, a 100 MB line and a truncated gzip member. Each is counted as a problem with its
file and line and skipped; the pass completes; every valid measurement gets exactly the verdicts the
judge gives it; the 100 MB line is never held in memory."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.passes import PassConfig, PassReport, run_pass
from msgwatch.analysis.verdicts import judge

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "data" / "lab-measurements.jsonl.gz"
BIG_LINE = 100 * 1024 * 1024
PEAK_LIMIT = 40 * 1024 * 1024
"""What the pass may allocate (Python objects, traced) while a file holds a 100 MB line."""
#: Small lab measurements (one with blocked calls: AS64512's skype), each analysed once.
PICK = (("AS64512", "skype"), ("AS64513", "skype"), ("AS64500", "imo"), ("AS64501", "imo"),
        ("AS64500", "zoom"), ("AS64501", "skype"), ("AS64500", "tiktok"))  # fmt: skip


def good_measurements() -> list[dict[str, Any]]:
    """The picked lab measurements, each with its own ``measurement_uid``."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with gzip.open(LAB) as f:
        for line in f:
            m = orjson.loads(line)
            found.setdefault((m["probe_asn"], m["input"]), m)
    out = []
    for i, key in enumerate(PICK):
        m = dict(found[key])
        m["measurement_uid"] = f"good-{i}"
        out.append(m)
    return out


def write_big_line(path: Path, after: bytes) -> None:
    """A 100 MB JSON line streamed to ``path`` (never held whole), then ``after``."""
    chunk = b"a" * (1024 * 1024)
    with open(path, "wb") as f:
        f.write(b'{"pad":"')
        for _ in range(BIG_LINE // len(chunk)):
            f.write(chunk)
        f.write(b'"}\n' + after + b"\n")


def make_inputs(tmp: Path, good: list[dict[str, Any]]) -> tuple[list[Path], dict[str, str]]:
    """The files, and ``{where suffix: reason prefix}`` of every bad thing they hold."""
    line = [orjson.dumps(m) for m in good]
    missing = {k: v for k, v in good[0].items() if k not in ("measurement_start_time", "probe_cc")}
    missing["measurement_uid"] = "bad-missing"
    wrong = {**good[1], "measurement_uid": "bad-wrong", "measurement_start_time": 20261203,
             "probe_asn": ["AS64512"]}  # fmt: skip
    bomb = b'{"test_name":"msgwatch_service","test_keys":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    not_utf8 = orjson.dumps({**good[2], "measurement_uid": "bad-utf8"})
    not_utf8 = not_utf8.replace(b'"imo"', b'"im\xff\xfeo"', 1)
    assert b"\xff" in not_utf8
    mixed = tmp / "mixed.jsonl"
    lines = [line[0], orjson.dumps(missing), line[1], orjson.dumps(wrong), bomb, not_utf8]
    mixed.write_bytes(b"\n".join([*lines, line[2], line[3], b""]))
    big = tmp / "big.jsonl"
    write_big_line(big, line[4])
    torn = tmp / "torn.jsonl.gz"
    whole = zlib.compress(line[5] + b"\n" + line[6] + b"\n", 6, wbits=31)
    cut = zlib.compress(orjson.dumps({**good[0], "measurement_uid": "bad-torn"}) + b"\n", 6, 31)
    torn.write_bytes(whole + cut[: len(cut) // 2])
    bad = {
        "mixed.jsonl:2": "bad_measurement",
        "mixed.jsonl:4": "bad_measurement",
        "mixed.jsonl:5": "not_json",
        "mixed.jsonl:6": "not_utf8",
        "big.jsonl:1": "line_too_long",
        "torn.jsonl.gz": "truncated_gzip",
    }
    return [mixed, big, torn], bad


def problems(report: PassReport) -> list[tuple[str, str]]:
    """The report's first problems as ``(where, reason)``."""
    return [(str(where), str(reason)) for where, reason in report.first_problems]


def verdict_rows(out: Path) -> set[tuple[str, str, str | None, str]]:
    """``(measurement_uid, service, function, verdict)`` of every verdict row written."""
    with duckdb.connect() as db:
        rows = db.execute(
            "SELECT DISTINCT measurement_uid, service, function, verdict"
            f" FROM read_parquet('{out}/verdicts/**/*.parquet')"
        ).fetchall()
    return {(str(u), str(s), f, str(v)) for u, s, f, v in rows}


@pytest.fixture(scope="module")
def analysed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[PassReport, Path, dict[str, str], int]:
    tmp = tmp_path_factory.mktemp("bad-input")
    good = good_measurements()
    files, bad = make_inputs(tmp, good)
    out = tmp / "out"
    tracemalloc.start()
    try:
        report = run_pass(PassConfig(sources=[JsonlSource([f]) for f in files], out_dir=out,
                                     workers=1))  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return report, out, bad, peak


def test_each_bad_thing_is_reported_with_where_it_was(
    analysed: tuple[PassReport, Path, dict[str, str], int],
) -> None:
    report, _, bad, _ = analysed
    found = problems(report)
    assert report.problems == len(bad) == len(found), found
    for suffix, reason in bad.items():
        matching = [(w, r) for w, r in found if r.startswith(reason) and suffix in w]
        assert len(matching) == 1, (suffix, reason, found)


def test_every_valid_measurement_is_analysed(
    analysed: tuple[PassReport, Path, dict[str, str], int],
) -> None:
    _, out, _, _ = analysed
    expected = {
        (m["measurement_uid"], str(v["service"]), v.get("function"), str(v["verdict"]))
        for m in good_measurements()
        for v in judge(m)
    }
    rows = verdict_rows(out)
    assert rows == expected
    assert any(verdict == "blocked" for *_, verdict in rows)  # the censored network's calls


def test_the_big_line_is_never_held(analysed: tuple[PassReport, Path, dict[str, str], int]) -> None:
    *_, peak = analysed
    assert peak < PEAK_LIMIT, f"the pass allocated {peak / 2**20:.0f} MiB"

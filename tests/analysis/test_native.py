"""The compiled analysis modules (msgwatch._native, setup.py): built, current, and the same program
as their sources.

The suite runs on the compiled modules (``make install`` builds them); the equivalence test runs
the transforms and the judge once more from the sources (``MSGWATCH_PURE_PYTHON=1``, in a
subprocess) over real lab and OONI measurements, and every row must be the same.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch import _native

DATA = Path(__file__).resolve().parent.parent / "data"
OONI = Path("/work/shared/ooni-samples/real.jsonl")  # not in the repository: used when present


def _measurements() -> list[bytes]:
    lines = gzip.decompress((DATA / "lab-measurements.jsonl.gz").read_bytes()).splitlines()
    lines += (DATA / "minilab-demo.jsonl").read_bytes().splitlines()
    if OONI.exists():
        lines += OONI.read_bytes().splitlines()[:400]
    return [line for line in lines if line.strip()]


ROWS = """
import orjson
from msgwatch.analysis.transform import BadMeasurement, Meta, transform

def rows(i, line):
    try:
        out = transform(orjson.loads(line), Meta(where=str(i), measurement_uid=f"u{i}"))
    except BadMeasurement as exc:
        return orjson.dumps(["bad", str(exc)])
    return orjson.dumps([out.observations, out.verdicts, out.skipped, out.problem])
"""
PURE = """
import sys
from msgwatch import _native
assert not _native.compiled(), "the sources were asked for"
for i, line in enumerate(sys.stdin.buffer.read().splitlines()):
    sys.stdout.buffer.write(rows(i, line) + b"\\n")
"""


def test_every_listed_module_is_compiled_and_current() -> None:
    missing = [name for name in _native.COMPILED if _native.extension_of(name) is None]
    assert not missing, f"not compiled (run `make install`): {missing}"
    assert _native.stale() == []
    assert _native.compiled()
    for name in _native.COMPILED:
        assert not str(importlib.import_module(name).__file__).endswith(".py"), name


def test_the_compiled_and_the_pure_modules_give_the_same_rows() -> None:
    lines = _measurements()
    assert len(lines) > 40
    pure = subprocess.run(
        [sys.executable, "-c", ROWS + PURE],
        input=b"\n".join(lines),
        capture_output=True,
        env={**os.environ, _native.PURE_ENV: "1"},
        timeout=300,
        check=True,
    ).stdout.splitlines()
    assert len(pure) == len(lines)
    here: dict[str, Any] = {}
    exec(ROWS, here)  # the same function, on the compiled modules
    judged = 0
    for i, (line, theirs) in enumerate(zip(lines, pure, strict=True)):
        ours = here["rows"](i, line)
        assert orjson.loads(ours) == orjson.loads(theirs), f"measurement {i} differs"
        judged += ours.count(b'"verdict":"')
    assert judged > 100


def _tree(tmp_path: Path, name: str, *, source_newer: bool) -> None:
    source = _native.source_of(name, tmp_path)
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("")
    extension = source.with_name(source.stem + importlib.machinery.EXTENSION_SUFFIXES[0])
    extension.write_bytes(b"")
    older, newer = 1_000_000_000, 1_000_000_100
    os.utime(source, (newer, newer) if source_newer else (older, older))
    os.utime(extension, (older, older) if source_newer else (newer, newer))


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    _tree(tmp_path, "msgwatch.analysis.a", source_newer=True)
    _tree(tmp_path, "msgwatch.analysis.b", source_newer=False)
    names = ["msgwatch.analysis.a", "msgwatch.analysis.b", "msgwatch.analysis.none"]
    assert _native.stale(names, tmp_path) == ["msgwatch.analysis.a"]
    assert _native.extension_of("msgwatch.analysis.none", tmp_path) is None


@pytest.mark.parametrize("forced", ["1", "yes"])
def test_asking_for_the_sources_imports_every_compiled_module_from_its_source(forced: str) -> None:
    names = ", ".join(repr(name) for name in _native.COMPILED)
    code = (
        "import importlib, msgwatch\n"
        f"for name in ({names},):\n"
        "    assert importlib.import_module(name).__file__.endswith('.py'), name\n"
    )
    env = {**os.environ, _native.PURE_ENV: forced}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=True)

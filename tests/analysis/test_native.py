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
    """The suite runs on the build `make install` made (it compiles with Debian's gcc)."""
    missing = [name for name in _native.COMPILED if _native.extension_of(name) is None]
    assert not missing, f"not compiled (run `make install`): {missing}"
    assert _native.build_state() == "current", "compiled from older sources: run `make install`"
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
        assert ours == theirs, f"measurement {i} differs"  # bytes: 1, 1.0 and true differ
        judged += ours.count(b'"verdict":"')
    assert judged > 100


def _tree(root: Path, names: list[str]) -> None:
    """A package tree under ``root`` with ``names`` compiled (empty extensions) and a manifest."""
    for folder in _native.TRACKED:
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "msgwatch/measurement/vocab.py").write_text("ROLES = ('a', 'b')\n")
    for name in names:
        source = _native.source_of(name, root)
        source.write_text(f"NAME = {name!r}\n")
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        source.with_name(source.stem + suffix).write_bytes(b"")
    _native.write_manifest(root, root, names)


NAMES = ["msgwatch.analysis.a", "msgwatch.analysis.b"]


def test_a_build_is_current_until_a_source_it_may_depend_on_changes(tmp_path: Path) -> None:
    _tree(tmp_path, NAMES)
    assert _native.build_state(tmp_path, NAMES) == "current"
    vocab = tmp_path / "msgwatch/measurement/vocab.py"
    vocab.write_text("ROLES = ('a', 'b', 'c')\n")  # not compiled, but baked into what is
    assert _native.build_state(tmp_path, NAMES) == "stale"
    vocab.write_text("ROLES = ('a', 'b')\n")  # the same sources again: whatever their times
    assert _native.build_state(tmp_path, NAMES) == "current"
    _native.source_of(NAMES[0], tmp_path).write_text("NAME = 'edited'\n")
    assert _native.build_state(tmp_path, NAMES) == "stale"


def test_a_build_without_its_manifest_or_a_module_is_stale_and_none_is_none(
    tmp_path: Path,
) -> None:
    _tree(tmp_path, NAMES)
    assert _native.build_state(tmp_path, [*NAMES, "msgwatch.analysis.c"]) == "stale"
    assert _native.build_state(tmp_path, NAMES[:1]) == "stale"  # the manifest lists both
    (tmp_path / _native.MANIFEST).write_text("{not json")
    assert _native.build_state(tmp_path, NAMES) == "stale"
    (tmp_path / _native.MANIFEST).unlink()
    assert _native.build_state(tmp_path, NAMES) == "stale"
    assert _native.build_state(tmp_path, ["msgwatch.analysis.none"]) == "none"


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


def test_a_stale_build_is_logged_once_and_its_modules_come_from_their_sources(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(_native.PURE_ENV, raising=False)
    monkeypatch.setattr(_native, "build_state", lambda *a: "stale")
    finder = _native._Sources()
    name = "msgwatch.analysis.verdicts.judge"
    with caplog.at_level("WARNING", logger="msgwatch"):
        spec = finder.find_spec(name, None)
        assert finder.find_spec("msgwatch.analysis.lake", None) is None  # not listed
        again = finder.find_spec(name, None)
    assert spec is not None and again is not None
    assert str(spec.origin).endswith("judge.py")
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "older than their sources" in caplog.records[0].message
    current = _native._Sources()
    monkeypatch.setattr(_native, "build_state", lambda *a: "current")
    assert current.find_spec(name, None) is None  # the path finder's extension


def test_importing_msgwatch_loads_nothing_for_the_check() -> None:
    """The check waits for the first compiled module: the probe and the collector never pay for
    it, and the CLI's start stays as it was."""
    code = (
        "import sys; before = set(sys.modules); import msgwatch; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(out.stdout.split())
    heavy = {"pathlib", "hashlib", "json", "logging", "importlib.abc", "importlib.util", "typing"}
    assert not loaded & heavy, loaded & heavy


def test_setup_py_generates_the_compiled_code_only_when_build_ext_runs() -> None:
    """Loading setup.py for the package's metadata never runs mypyc (its code generation took 11 s
    before every metadata step); with mypyc refused, the metadata still comes out."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "import runpy, sys; sys.modules['mypyc.build'] = None; sys.argv = ['setup.py', '--name'];"
        "runpy.run_path('setup.py', run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "msgwatch"


def test_an_observations_own_columns_never_repeat_its_envelope() -> None:
    """The lake says a measurement's envelope once and each row's own columns beside it
    (workers.measurement_line): a row that set an envelope column would lose it there."""
    import orjson

    from msgwatch.analysis.schema import ENVELOPE_COLUMNS, OBSERVATION_COLUMNS, names
    from msgwatch.analysis.transform import BadMeasurement, Meta, transform

    allowed = set(names(OBSERVATION_COLUMNS)) - set(ENVELOPE_COLUMNS)
    rows = 0
    for i, line in enumerate(_measurements()):
        try:
            out = transform(orjson.loads(line), Meta(where=str(i), measurement_uid=f"u{i}"))
        except BadMeasurement:
            continue
        assert not out.parts or list(out.envelope) == list(ENVELOPE_COLUMNS)
        for own in out.parts:
            assert set(own) <= allowed, set(own) - allowed
        rows += len(out.parts)
    assert rows > 1000


def test_compiled_modules_test_types_against_tuples_not_unions() -> None:
    """mypyc compiles ``isinstance(x, (int, str))`` to one C check per type, but
    ``isinstance(x, int | str)`` to building the union object and a generic call, on every call:
    in the judge's index of records by transaction id that was most of its cost."""
    import ast

    found = []
    for module in _native.COMPILED:
        path = Path(_native.__file__).parent.parent / (module.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass")
                and len(node.args) == 2
                and isinstance(node.args[1], ast.BinOp)
                and isinstance(node.args[1].op, ast.BitOr)
            ):
                found.append(f"{module}:{node.lineno}")
    assert found == []

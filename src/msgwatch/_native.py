"""The analysis's per-measurement modules, compiled with mypyc, and their pure-Python fallback.

A pass spends its CPU in plain Python over each measurement's records: the judge, the transforms,
the rows (benchmarks/analysis_throughput.py ``--costs``). Those modules are strictly typed, so the
build (``setup.py``) compiles :data:`COMPILED` with mypyc into C extensions beside their sources,
where a C compiler and Python's headers are there; the sources stay and are the same program.

:func:`install` (run by ``msgwatch/__init__.py``) makes every import of these modules take the
sources instead of the extensions when ``MSGWATCH_PURE_PYTHON=1``, or when any source is newer than
its extension (edited since the build: the extension would run old code; ``make install``
rebuilds). It is all or none: compiled modules call each other directly, so one module taken from
its source beside compiled ones could still run its old compiled code through them.

This module imports nothing from msgwatch: ``setup.py`` reads :data:`COMPILED` from it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = (
    "msgwatch.analysis.stats",
    "msgwatch.analysis.rounds",
    "msgwatch.analysis.verdicts.overload",
    "msgwatch.analysis.verdicts.calls",
    "msgwatch.analysis.verdicts.judge",
    "msgwatch.analysis.verdicts.circumvention",
    "msgwatch.analysis.verdicts.circumvention_through",
    "msgwatch.analysis.transform.base",
    "msgwatch.analysis.transform.trace",
    "msgwatch.analysis.transform.msgwatch",
    "msgwatch.analysis.transform.circumvention",
    "msgwatch.analysis.transform.ooni_map",
    "msgwatch.analysis.transform.ooni_observations",
    "msgwatch.analysis.transform.verdict_rows",
)
"""Modules only: a package's ``__init__`` is never compiled (the fallback finds sources by name).
Not the pass's workers nor its readers: a compiled generator left early does not close what its
``with`` opened, and the pool's hand-over pickles frozen dataclasses, which compiled ones refuse."""

GROUP = "msgwatch.native"
"""mypyc's shared library of the compiled modules: ``msgwatch/native__mypyc*.so``."""

PURE_ENV = "MSGWATCH_PURE_PYTHON"

_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the msgwatch package


def source_of(name: str, root: Path = _ROOT) -> Path:
    """Where module ``name``'s source is (under ``root``, the folder holding the package)."""
    return root.joinpath(*name.split(".")).with_suffix(".py")


def extension_of(name: str, root: Path = _ROOT) -> Path | None:
    """Module ``name``'s compiled extension, if one was built."""
    source = source_of(name, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def stale(names: Sequence[str] = COMPILED, root: Path = _ROOT) -> list[str]:
    """The modules whose source changed after their extension was built."""
    out = []
    for name in names:
        extension = extension_of(name, root)
        if extension is None:
            continue
        try:
            if source_of(name, root).stat().st_mtime > extension.stat().st_mtime:
                out.append(name)
        except OSError:  # a source gone (an installed wheel without them): nothing to compare
            continue
    return out


def compiled() -> bool:
    """Whether the compiled modules are the ones imported (checked after :func:`install`)."""
    module: ModuleType | None = sys.modules.get("msgwatch.analysis.verdicts.judge")
    if module is None:
        return not _forced() and any(extension_of(name) is not None for name in COMPILED)
    return not str(getattr(module, "__file__", "")).endswith(".py")


class _Sources(importlib.abc.MetaPathFinder):
    """Finds :data:`COMPILED` modules as their sources (ahead of the path finder's extensions)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        source = source_of(fullname)
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _forced() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def install() -> None:
    """Take the sources instead of the extensions when asked or when an extension is stale."""
    if any(isinstance(finder, _Sources) for finder in sys.meta_path):
        return
    old = stale()
    if old:
        warnings.warn(
            f"msgwatch: {', '.join(old)} changed after it was compiled; running every compiled "
            "module from its source instead (slower). `make install` compiles them again.",
            RuntimeWarning,
            stacklevel=2,
        )
    if old or _forced():
        sys.meta_path.insert(0, _Sources())

"""The analysis's per-measurement modules, compiled with mypyc, and their pure-Python fallback.

A pass spends its CPU in plain Python over each measurement's records: the judge, the transforms,
the rows (benchmarks/analysis_throughput.py ``--costs``). Those modules are strictly typed, so the
build (``setup.py``, run by ``make install``) compiles :data:`COMPILED` with mypyc into C
extensions beside their sources, and writes a manifest (:data:`MANIFEST`): a digest of every
source under :data:`TRACKED` as they were compiled. The sources stay and are the same program.

The compiled modules are imported only while the build is **current** (:func:`build_state`): every
listed module has its extension and the tracked sources still have the manifest's digest. The
digest covers more than the listed modules because mypyc bakes into the compiled code the
``Final`` constants and the types of what they import (the rules' models, the vocabulary, the
catalogue). Otherwise, or when ``MSGWATCH_PURE_PYTHON=1``, every listed module is imported from
its source (a stale build is logged once, on the ``msgwatch`` logger). It is all or none: compiled
modules call each other directly, so one module taken from its source beside compiled ones could
still run its old compiled code through them.

The check runs when the first listed module is imported, not when ``msgwatch`` is: the probe and
the collector never pay for it. This module imports nothing from msgwatch: ``setup.py`` reads it.
"""

from __future__ import annotations

import importlib.machinery  # frozen and loaded already; the rest is imported where it is used,
import os  # so that importing msgwatch costs the CLI's start nothing it would not pay anyway
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from types import ModuleType
    from typing import Literal

    State = Literal["current", "stale", "none"]

COMPILED = (
    "msgwatch.analysis.stats",
    "msgwatch.analysis.rounds",
    "msgwatch.analysis.verdicts.overload",
    "msgwatch.analysis.verdicts.calls",
    "msgwatch.analysis.verdicts.matching",
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
    "msgwatch.analysis.events.series",
    "msgwatch.analysis.events.detector",
)
"""Modules only: a package's ``__init__`` is never compiled (the fallback finds sources by name).
Not the pass's workers nor its readers: a compiled generator left early does not close what its
``with`` opened, and the pool's hand-over pickles frozen dataclasses, which compiled ones refuse."""

TRACKED = ("msgwatch/analysis", "msgwatch/measurement", "msgwatch/catalogue")
"""The folders (under the folder holding the package) whose ``.py`` sources the manifest's digest
covers: the listed modules and everything they import from msgwatch."""

GROUP = "msgwatch.native"
"""mypyc's shared library of the compiled modules: ``msgwatch/native__mypyc*.so``."""

MANIFEST = "msgwatch/native.json"
"""Written by the build beside the extensions: ``{"digest": ..., "modules": [...]}``."""

PURE_ENV = "MSGWATCH_PURE_PYTHON"

_ROOT_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
"""The folder holding the msgwatch package."""


def _root(root: Path | None) -> Path:
    from pathlib import Path

    return Path(_ROOT_DIR) if root is None else root


def source_of(name: str, root: Path | None = None) -> Path:
    """Where module ``name``'s source is (under ``root``, the folder holding the package)."""
    return _root(root).joinpath(*name.split(".")).with_suffix(".py")


def extension_of(name: str, root: Path | None = None) -> Path | None:
    """Module ``name``'s compiled extension, if one was built."""
    source = source_of(name, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def digest(root: Path | None = None) -> str:
    """The SHA-256 of every tracked source (names and contents, in a fixed order)."""
    import hashlib

    root = _root(root)
    hasher = hashlib.sha256()
    for folder in TRACKED:
        for path in sorted((root / folder).rglob("*.py")):
            hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
            hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()


def write_manifest(
    target: Path, sources: Path | None = None, names: Sequence[str] = COMPILED
) -> None:
    """Record that ``names`` were compiled from ``sources`` (into ``target``'s package)."""
    import json

    path = target / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": digest(sources), "modules": list(names)}) + "\n")
    os.replace(tmp, path)


def build_state(root: Path | None = None, names: Sequence[str] = COMPILED) -> State:
    """``current`` (every module compiled from the sources as they are now), ``none`` (nothing
    compiled) or ``stale`` (anything else: a source changed since, a module missing, no manifest)."""
    import json

    root = _root(root)
    extensions = [extension_of(name, root) for name in names]
    if all(extension is None for extension in extensions):
        return "none"
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        recorded = manifest["digest"], manifest["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return "stale"
    if None in extensions or recorded != (digest(root), list(names)):
        return "stale"
    return "current"


def forced() -> bool:
    """Whether ``MSGWATCH_PURE_PYTHON`` asks for the sources (the build reads it too)."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class _Sources:
    """Decides once, at the first listed module imported, whether the listed modules come from
    their sources; if so finds them there (ahead of the path finder's extensions). A meta path
    finder needs only ``find_spec`` (importlib.abc's base class would cost the CLI's start 20 ms)."""

    def __init__(self) -> None:
        self.sources: bool | None = None
        self.state: State | None = None  # the build's, as decided

    def decide(self) -> bool:
        if self.sources is None:
            state = self.state = build_state()
            if state == "stale" and not forced():
                import logging

                logging.getLogger("msgwatch").warning(
                    "msgwatch: the compiled analysis modules are older than their sources; "
                    "running them from the sources instead (slower). `make install` compiles "
                    "them again."
                )
            self.sources = forced() or state == "stale"
        return self.sources

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED or not self.decide():
            return None
        source = source_of(fullname)
        if not source.exists():
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(fullname, source)


_FINDER = _Sources()


def install() -> None:
    """Put the finder first on the import path (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def compiled() -> bool:
    """Whether the listed modules are (or will be) imported compiled in this process."""
    return not _FINDER.decide() and _FINDER.state == "current"

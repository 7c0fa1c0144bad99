"""Build msgwatch; compile the analysis's per-measurement modules with mypyc where the machine can.

Everything else is in pyproject.toml. The modules are listed in ``msgwatch._native``, which also
loads their sources at run time when the build is not current or ``MSGWATCH_PURE_PYTHON=1``. They
are compiled when mypyc (part of mypy, which must be installed with every runtime dependency, as
in the project's environment: mypyc type-checks against them), a C compiler and Python's headers
are there and ``MSGWATCH_PURE_PYTHON`` is unset or ``0``; otherwise the package is built pure, and
says so. After compiling, the build writes ``msgwatch/native.json``: the digest of the sources it
compiled (``_native.write_manifest``). Why mypyc: these modules are strictly typed already
(``make typecheck``), mypyc needs no other language and no runtime dependency, and it is how mypy
and black ship their own speed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _load_native():  # msgwatch._native, read without importing the package
    spec = importlib.util.spec_from_file_location(
        "_msgwatch_native", HERE / "src/msgwatch/_native.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _load_native()


TYPED_AGAINST = ("mypyc", "pydantic", "orjson", "duckdb")
"""mypyc type-checks the modules against their dependencies: without them it cannot compile (pip's
isolated build environment has none; the Makefile compiles in the project's environment)."""


def _why_pure() -> str | None:
    if NATIVE.forced():
        return f"{NATIVE.PURE_ENV} is set"
    missing = [name for name in TYPED_AGAINST if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed here"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return "no C compiler"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python.h (Python's headers)"
    return None


WHY_PURE = _why_pure()
if WHY_PURE is not None:
    sys.stderr.write(
        f"msgwatch: built without compiled modules ({WHY_PURE}): the analysis runs slower\n"
    )


def _extensions():
    from mypyc.build import mypycify

    os.chdir(HERE)  # mypyc takes paths relative to here
    paths = [str(Path("src", *name.split(".")).with_suffix(".py")) for name in NATIVE.COMPILED]
    return mypycify(paths, opt_level="3", group_name=NATIVE.GROUP)


class NativeDistribution(Distribution):
    """Has compiled modules where the machine can build them; mypyc generates their C (about
    11 s) only when build_ext runs (:class:`BuildExt`), not whenever this file is loaded (the
    package's metadata, a pure build)."""

    def has_ext_modules(self) -> bool:
        return WHY_PURE is None or super().has_ext_modules()


class BuildExt(build_ext):
    """build_ext of the compiled modules, then the manifest of what was compiled beside them."""

    def finalize_options(self) -> None:
        if WHY_PURE is None and not self.distribution.ext_modules:
            self.distribution.ext_modules = _extensions()
        super().finalize_options()

    def run(self) -> None:
        super().run()
        if self.extensions:
            target = HERE / "src" if self.inplace else Path(self.build_lib)
            NATIVE.write_manifest(target, HERE / "src")


setup(distclass=NativeDistribution, cmdclass={"build_ext": BuildExt})

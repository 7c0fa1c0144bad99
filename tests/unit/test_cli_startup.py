"""``msgwatch --help`` imports only what the command line needs to show itself (issue 9, item 19).

Not a timing test: the check is which modules are loaded, in a fresh interpreter, after the CLI
has printed its help (the timing is in ``benchmarks/cli_startup.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "fastapi",
    "uvicorn",
    "duckdb",
    "pydantic",
    "asyncio",
    "ssl",
    "dns",
    "aioice",
    "msgwatch.catalogue",
    "msgwatch.collector",
    "msgwatch.helper",
    "msgwatch.lab",
    "msgwatch.lab.loopback",
    "msgwatch.probe",
    "msgwatch.spool",
    "msgwatch.analysis.verdicts",
    "msgwatch.wire",
    "rich.progress",
)

PROGRAM = """
import json, sys
from msgwatch.cli.main import cli
try:
    cli(ARGS, standalone_mode=False)
finally:
    sys.stdout.flush()
    print("\\n@@" + json.dumps(sorted(sys.modules)))
"""


def _loaded(args: list[str]) -> tuple[str, set[str]]:
    program = PROGRAM.replace("ARGS", repr(args))
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    shown, _, modules = done.stdout.rpartition("\n@@")
    return shown, set(json.loads(modules))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["lab", "--help"], ["collector", "--help"], ["spool", "--help"]],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    shown, modules = _loaded(args)
    assert "Usage:" in shown
    assert _heavy(modules) == []


def test_help_still_lists_every_command() -> None:
    shown, _ = _loaded(["--help"])
    for command in (
        "run",
        "demo",
        "catalogue",
        "lab",
        "collector",
        "export",
        "helper",
        "submit",
        "spool",
    ):
        assert f"  {command} " in shown, command


def test_run_help_names_every_function() -> None:
    from msgwatch.catalogue import FUNCTIONS

    shown, modules = _loaded(["run", "--help"])
    flat = " ".join(shown.split())
    assert f"({', '.join(FUNCTIONS)})" in flat
    assert _heavy(modules) == []

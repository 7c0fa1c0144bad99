"""The Makefile's promises: lint and typecheck without root, the README's commands install
everything, and the fence the tests run behind is the library's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from msgwatch.fence import LAB_NETWORKS

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_INSTALL = "scripts/install-system.sh"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(*targets: str) -> str:
    """What ``make`` would run for ``targets`` on a fresh machine (``-B``: everything out of date;
    ``-n``: nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "-B", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_lint_and_typecheck_need_no_system_packages() -> None:
    plan = planned("lint", "typecheck")
    assert SYSTEM_INSTALL not in plan
    assert "lint-imports" in plan and "mypy" in plan


@pytest.mark.parametrize("target", ["test", "demo"])
def test_the_readme_commands_install_everything(target: str) -> None:
    assert SYSTEM_INSTALL in planned(target)


def test_the_makefile_fence_is_the_librarys() -> None:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^LAB_NETWORKS := (\S+)$", text, re.MULTILINE)
    assert match is not None
    assert match.group(1) == LAB_NETWORKS

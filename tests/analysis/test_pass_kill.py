"""A pass killed with SIGKILL at any point leaves nothing the next pass counts twice or loses.

The pass runs in a subprocess whose progress callback kills its own process at a chosen phase:
after Parquet parts were written (``writing``: the read is not over), and after everything but
the state was written (``committing``: parts, aggregates, events, detector state). A normal pass afterwards must give exactly the rows of an
uninterrupted pass, and leave no file the state does not list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from msgwatch.analysis import lake
from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.passes import PassConfig, run_pass

SCRIPT = """
import os, signal, sys
from pathlib import Path
from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.passes import PassConfig, run_pass

phase = sys.argv[3]
def progress(p):
    if p.phase == phase:
        os.kill(os.getpid(), signal.SIGKILL)

run_pass(PassConfig(sources=[JsonlSource([Path(sys.argv[1])])], out_dir=Path(sys.argv[2]),
                    bucket_seconds=60, workers=int(sys.argv[4]), flush_rows=100,
                    progress=progress))
"""


def rows(out: Path) -> dict[str, list[Any]]:
    """Every committed row of the observations, verdicts and aggregates, sorted."""
    state = lake.read_state(out)
    assert state is not None
    found = {}
    with duckdb.connect() as connection:
        for key in ("observations", "verdicts", "aggregates"):
            listed = state["files"][key]
            files = lake.absolute(out, [listed] if isinstance(listed, str) else listed)
            found[key] = sorted(
                map(
                    repr,
                    connection.execute(f"SELECT * FROM {lake.read_parquet_sql(files)}").fetchall(),
                )
            )
    return found


def lake_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {
        "state.json",
        "lock",
    }


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, lab_lines: list[bytes]
) -> tuple[Path, dict[str, list[Any]]]:
    """An input file of 8 lab measurements and the rows of an uninterrupted pass over it."""
    folder = tmp_path_factory.mktemp("kill")
    path = folder / "input.jsonl"
    path.write_bytes(b"\n".join(lab_lines[:8]) + b"\n")
    reference = folder / "reference"
    run_pass(
        PassConfig(sources=[JsonlSource([path])], out_dir=reference, bucket_seconds=60, workers=1)
    )
    return path, rows(reference)


@pytest.mark.parametrize(
    ("phase", "workers"), [("writing", 1), ("committing", 1), ("writing", 2), ("committing", 2)]
)
def test_a_killed_pass_is_redone_exactly(
    tmp_path: Path,
    inputs: tuple[Path, dict[str, list[Any]]],
    lab_lines: list[bytes],
    phase: str,
    workers: int,
) -> None:
    """With two workers the chunks and rows go through files of the work folder (handover)."""
    _, expected = inputs
    out = tmp_path / "out"
    path = tmp_path / "input.jsonl"  # its first half is committed by a first pass
    path.write_bytes(b"\n".join(lab_lines[:4]) + b"\n")
    run_pass(PassConfig(sources=[JsonlSource([path])], out_dir=out, bucket_seconds=60, workers=1))
    committed = (out / "state.json").read_bytes()
    with path.open("ab") as handle:
        handle.write(b"\n".join(lab_lines[4:8]) + b"\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(out), phase, str(workers)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (out / "state.json").read_bytes() == committed
    assert lake_files(out) - lake.listed_files(lake.read_state(out))  # the killed pass left files
    report = run_pass(
        PassConfig(sources=[JsonlSource([path])], out_dir=out, bucket_seconds=60, workers=workers)
    )
    assert (report.pass_number, report.items) == (2, 4)
    assert rows(out) == expected
    assert lake_files(out) == lake.listed_files(lake.read_state(out))

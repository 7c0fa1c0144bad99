"""The format checks every measurement made by the tests goes through.

``msgwatch.measurement.validate`` checks what OONI's reader does not (time format, ``AS<n>``,
country code, the standard entries' shapes, failure strings, msgwatch's keys as
docs/spec/ts-msgwatch-service.md defines them); ``read_with_oonidata(ms)`` runs OONI's own
``oonidata`` on them in its separate environment and returns its per-measurement report.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from msgwatch.measurement.validate import validate
from msgwatch.measurement.vocab import STANDARD_KEYS

ROOT = Path(__file__).resolve().parents[2]
OONI_PYTHON = ROOT / ".venv-oonidata" / "bin" / "python"
READER = Path(__file__).with_name("ooni_reader.py")


def read_with_oonidata(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OONI's reader's report for each measurement (runs ``oonidata`` in its own environment)."""
    if not OONI_PYTHON.exists():
        raise AssertionError(f"{OONI_PYTHON} is missing: run `make install`")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for m in measurements:
            handle.write(json.dumps(m) + "\n")
        path = handle.name
    try:
        done = subprocess.run(
            [str(OONI_PYTHON), str(READER), path],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        Path(path).unlink(missing_ok=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def assert_conforms(measurements: list[dict[str, Any]]) -> None:
    """Both checks, with every problem in the assertion message."""
    found = [f"measurement {i}: {p}" for i, m in enumerate(measurements) for p in validate(m)]
    assert not found, "\n".join(found)
    reports = read_with_oonidata(measurements)
    assert len(reports) == len(measurements)
    failed = [r for r in reports if not r["ok"]]
    assert not failed, failed
    for m, report in zip(measurements, reports, strict=True):
        counts = report["counts"]
        for name in STANDARD_KEYS:
            assert counts[name] == len(m["test_keys"][name]), (name, counts, report)

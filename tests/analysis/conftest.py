"""Shared fixtures of the analysis tests: the lab measurements, and a source over lines in memory."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from msgwatch.analysis.inputs import Item, Mark, Read

LAB = Path(__file__).resolve().parents[1] / "data" / "lab-measurements.jsonl.gz"


@dataclass
class LinesSource:
    """A source over lines in memory; its checkpoint is how many lines were read."""

    label: str
    lines: list[bytes]

    @property
    def name(self) -> str:
        return f"lines:{self.label}"

    def read(self, checkpoint: Any) -> Iterator[Read]:
        start = checkpoint if isinstance(checkpoint, int) else 0
        for number, line in enumerate(self.lines[start:], start + 1):
            yield Item(line=line, where=f"{self.label}:{number}")
        yield Mark(len(self.lines))


@pytest.fixture(scope="session")
def lab_lines() -> list[bytes]:
    """The 40 real lab measurements (format 0.3.0), one JSON text each."""
    return [line for line in gzip.decompress(LAB.read_bytes()).splitlines() if line.strip()]

"""docs/spec/analysis.md and msgwatch.analysis.schema describe the same tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msgwatch.analysis import schema

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "analysis.md"
MEASUREMENT = "Measurement columns (every observation and verdict row)"


def tables() -> dict[str, list[tuple[str, str]]]:
    """Section title → the (column, type) rows of its first table."""
    out: dict[str, list[tuple[str, str]]] = {}
    title = ""
    for line in SPEC.read_text().splitlines():
        if line.startswith("#"):  # a "###" subsection's table is not the section's
            title = line[3:].strip() if line.startswith("## ") else ""
        cells = [c.strip() for c in line.split("|")]
        row = len(cells) > 3 and re.fullmatch(r"[a-z_0-9]+|\(measurement columns\)", cells[1])
        if title and row and cells[1] != "column":
            out.setdefault(title, []).append((cells[1], cells[2]))
    return out


def expand(rows: list[tuple[str, str]], shared: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, kind in rows:
        out.extend(shared if name == "(measurement columns)" else [(name, kind)])
    return out


@pytest.mark.parametrize(
    ("title", "columns"),
    [
        ("observations", schema.OBSERVATION_COLUMNS),
        ("verdicts", schema.VERDICT_COLUMNS),
        ("aggregates", schema.AGGREGATE_COLUMNS),
        ("events", schema.EVENT_COLUMNS),
    ],
)
def test_spec_table_matches_schema(title: str, columns: schema.Columns) -> None:
    found = tables()
    assert expand(found[title], found[MEASUREMENT]) == list(columns)


def test_spec_states_the_schema_version() -> None:
    text = SPEC.read_text()
    assert f"Schema version **{schema.SCHEMA_VERSION}**" in text
    assert f"- {schema.SCHEMA_VERSION}:" in text.split("## Changes", 1)[1]

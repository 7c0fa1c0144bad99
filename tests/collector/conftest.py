"""Fixtures of the collector's tests.

- ``postgres_url``: a real throwaway PostgreSQL server for the session (:mod:`.pgserver`);
- ``index_database``: the store tests' back-end, parametrised: ``None`` (SQLite in the data
  directory) or the URL of a fresh database on that server (each data directory needs its own);
- ``minilab``: msgwatch's own demo measurements (``tests/data/minilab-demo.jsonl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.collector.pgserver import fresh_database, postgres_url

__all__ = ["index_database", "minilab", "postgres_url"]

DEMO = Path(__file__).resolve().parents[1] / "data" / "minilab-demo.jsonl"


@pytest.fixture(params=["sqlite", "postgresql"])
def index_database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def minilab_lines() -> list[bytes]:
    return DEMO.read_bytes().splitlines()


@pytest.fixture
def minilab(minilab_lines: list[bytes]) -> list[dict[str, Any]]:
    """Fresh copies (a test may change them)."""
    return [orjson.loads(line) for line in minilab_lines]

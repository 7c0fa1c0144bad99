"""Fixtures of the collector's tests.

- ``postgres_url``: a real throwaway PostgreSQL server for the session (:mod:`.pgserver`);
- ``index_database``: the store tests' back-end, parametrised: ``None`` (SQLite in the data
  directory) or the URL of a fresh database on that server (each data directory needs its own);
- ``minilab``: msgwatch's own demo measurements (``tests/data/minilab-demo.jsonl``);
- ``server``, ``client``: a collector in a thread for a test module, its submission routes served
  once by the fast path and once by FastAPI's routes alone (both must answer the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.collector.liveserver import Client, ThreadServer, make_settings, thread_server
from tests.collector.pgserver import fresh_database, postgres_url

__all__ = ["client", "index_database", "minilab", "postgres_url", "server"]

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


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-routes"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadServer]:
    """The submission routes served by the fast path, and by FastAPI's routes alone: the same."""
    settings = make_settings(tmp_path_factory.mktemp("collector") / "data")
    with thread_server(settings, fast_path=request.param) as running:
        yield running


@pytest.fixture
def client(server: ThreadServer) -> Iterator[Client]:
    client = server.client()
    yield client
    client.close()

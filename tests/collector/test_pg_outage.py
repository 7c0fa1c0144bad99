"""PostgreSQL crashes under a running collector, then comes back.

While the index's server is down, submissions are answered ``503 storage_unavailable`` with no uid
and ``/health`` is 503; reads of what was stored before may fail too but never with a 5xx other
than 503. Once the server is back (it replays its WAL), the same collector — not restarted — stores
again without intervention: the measurement refused during the outage is stored once, everything
acknowledged before is still there, and retries of it are duplicates.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from tests.collector.liveserver import Client, envelope, make_settings, thread_server
from tests.collector.pgserver import (
    PostgresMissing,
    crash,
    fresh_database,
    running_postgres,
    start_again,
)

pytestmark = pytest.mark.timeout(120)


def _unavailable(answer: Any) -> None:
    assert answer.status == 503, answer.body[:300]
    assert answer.json()["error"] == "storage_unavailable"
    assert "measurement_uid" not in answer.json()


def _until_stored(client: Client, measurement: dict[str, Any], key: str) -> Any:
    """The first answer after the server is back may still find the old, cut connection."""
    for _ in range(50):
        answer = client.add(measurement, key=key)
        if answer.status == 200:
            return answer
        _unavailable(answer)
        time.sleep(0.1)
    raise AssertionError("the collector never stored again after PostgreSQL came back")


def test_postgres_crash_and_return(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(running_postgres())  # its own server: this one crashes
        except PostgresMissing as exc:
            pytest.skip(f"PostgreSQL is not installed: {exc}")
        database = fresh_database(url)
        with thread_server(make_settings(tmp_path / "data", database=database)) as collector:
            client = collector.client()
            before = {}
            for number in range(5):
                answer = client.add(envelope(input=f"before-{number}"), key=f"before-{number}")
                assert answer.status == 200
                before[f"before-{number}"] = answer.json()["measurement_uid"]

            crash(database)
            during = envelope(input="during")
            _unavailable(client.add(during, key="during"))
            assert client.get("/health").status == 503

            start_again(database)
            stored = _until_stored(client, during, "during")
            assert stored.json()["status"] == "stored"  # the refused attempt had stored nothing
            assert client.get("/health").status == 200
            for key, uid in before.items():
                assert client.get(f"/api/v1/measurements/{uid}").status == 200
                again = client.add(envelope(input=key), key=key).json()
                assert again == {"measurement_uid": uid, "status": "duplicate"}
            listed = client.get("/api/v1/measurements?limit=100").json()["results"]
            assert len(listed) == 6

"""Issue 9: what a measurement may carry into the index and what one read may return (item 5),
the read API's refusal of unknown parameters and values (item 22), a minimal public ``/health``
(item 14).

Amplification was measured as ten 3.8 MB measurements growing the index to 147 MB and one small
GET answering 52.7 MB; these tests pin the bounds in bytes, on the real store and a real uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.collector import models
from msgwatch.collector.store import Query, Submission, open_store
from msgwatch.collector.store.index import MAX_PAGE_BYTES
from tests.collector.liveserver import Client, ThreadServer, envelope, make_settings, thread_server

ADMIN = "admin-token-for-the-tests"


def function_bomb(size: int, start: str = "2026-01-01 00:00:00") -> dict[str, Any]:
    """A valid measurement of about ``size`` bytes that is nothing but function entries (and
    verdicts for them, which the index never reads)."""
    entry = {"function": "voice", "mode": "m" * 40}
    verdict = {"service": "whatsapp", "function": "voice", "verdict": "blocked", "mechanism": "m"}
    count = size // (len(orjson.dumps(entry)) + len(orjson.dumps(verdict)))
    return envelope(
        software_name="msgwatch",
        test_name="msgwatch_service",
        measurement_start_time=start,
        test_keys={
            "msgwatch_service": "whatsapp",
            "msgwatch_functions": [entry] * count,
            "msgwatch_verdicts": [verdict] * count,
        },
    )


def index_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("index.sqlite3*"))


def test_big_function_lists_do_not_amplify_into_the_index(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bomb = function_bomb(3_800_000)
    assert 3_700_000 < len(orjson.dumps(bomb)) <= models.MAX_MEASUREMENT_BYTES

    async def main() -> int:
        store = await open_store(data_dir)
        try:
            for n in range(5):
                await store.put_many([Submission(f"bomb-{n}", bomb)])
            page = await store.query(Query(limit=100))
            assert all(r["functions"] == ["voice"] for r in page.results)
            assert all("verdicts" not in r for r in page.results)
            return len(page.results)
        finally:
            await store.close()

    assert asyncio.run(main()) == 5
    # before the bound: ~15 MB of index per measurement; now a few KB each
    assert index_bytes(data_dir) < 2_000_000, index_bytes(data_dir)


# --- over HTTP -------------------------------------------------------------------------------------


def wide(n: int) -> dict[str, Any]:
    """A measurement whose summary is as large as the index lets one be (~12 KB: an input cut to
    2048 characters, each written ``\\u0001`` in JSON)."""
    return envelope(
        software_name="msgwatch",
        test_name="msgwatch_service",
        measurement_start_time=f"2026-02-01 00:{n // 60:02d}:{n % 60:02d}",
        input="\x01" * 5000,
        test_keys={
            "msgwatch_service": f"service{n % 7:02d}",
            "msgwatch_functions": [
                {"function": f} for f in ("voice", "text", "web", "media", "video", "registration")
            ],
        },
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    settings = make_settings(tmp_path_factory.mktemp("bounds") / "data", admin_token=ADMIN)
    with thread_server(settings) as running:
        client = running.client()
        items = [{"idempotency_key": f"wide-{n}", "measurement": wide(n)} for n in range(300)]
        answer = client.post("/api/v1/submit", {"measurements": items})
        assert answer.status == 200
        assert all(r["status"] == "stored" for r in answer.json()["results"])
        client.close()
        yield running


def test_one_read_returns_a_bounded_number_of_bytes(client: Client) -> None:
    seen: list[str] = []
    cursor = None
    reads = 0
    while True:
        answer = client.get(
            "/api/v1/measurements?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        )
        assert answer.status == 200
        assert len(answer.body) <= MAX_PAGE_BYTES, len(answer.body)
        page = answer.json()
        assert page["results"], "a page is never empty while more follow"
        seen += [r["measurement_uid"] for r in page["results"]]
        reads += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 300  # every measurement once, newest first, over pages
    assert reads >= 3


@pytest.mark.parametrize(
    "query",
    [
        "verdict=blocked",  # verdicts are the analysis's, not the index's
        "function=voyce",
        "servce=whatsapp",
        "limit=10&limit=20",
        "function=voice&function=text",
        "service=What%27s%20App",
        "service=",
        "probe_cc=",
        "probe_asn=",
        "probe_asn=AS4294967296",
        "test_name=",
        "cursor=",
        "since=",
        "since=2026-13-01",
    ],
)
def test_unknown_parameters_and_values_are_400(client: Client, query: str) -> None:
    answer = client.get(f"/api/v1/measurements?{query}")
    assert answer.status == 400, (query, answer.body)
    assert answer.json()["error"] == "bad_query"


@pytest.mark.parametrize(
    "query",
    [
        "function=voice",
        "function=voice&service=service01",
        "probe_asn=30722",
        "probe_asn=as30722",
        "probe_cc=it",
        "service=unknown-service",
        "since=2026-02-01&until=2026-02-01T00:01:00Z",
    ],
)
def test_known_parameters_and_values_are_answered(client: Client, query: str) -> None:
    answer = client.get(f"/api/v1/measurements?limit=5&{query}")
    assert answer.status == 200, (query, answer.body)


def test_public_health_tells_nothing_but_the_status(client: Client) -> None:
    answer = client.get("/health")
    assert answer.status == 200
    assert answer.json() == {"status": "ok"}
    wrong = client.get("/health", headers={"Authorization": "Bearer not-the-admin-token"})
    assert wrong.json() == {"status": "ok"}
    detailed = client.get("/health", headers={"Authorization": f"Bearer {ADMIN}"})
    assert detailed.status == 200
    report = detailed.json()
    assert report["status"] == "ok" and report["archive"]["free_bytes"] > 0
    assert "groups" in report


def test_public_health_when_unavailable_says_only_that(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", admin_token=ADMIN)
    with thread_server(settings) as running:
        client = running.client()
        store = running.app.state.collector.opened
        real = store.health

        async def failing() -> dict[str, Any]:  # what the store says after ENOSPC
            report = dict(await real())
            report.update(
                status="unavailable",
                detail="the archive's file system is full",
                last_error="cannot write the archive: [Errno 28] /secret/path: no space left",
            )
            return report

        store.health = failing
        try:
            answer = client.get("/health")
            assert answer.status == 503
            assert set(answer.json()) == {"status", "error", "detail"}
            assert "secret" not in answer.body.decode() and "free" not in answer.body.decode()
            detailed = client.get("/health", headers={"Authorization": f"Bearer {ADMIN}"})
            assert detailed.status == 503 and "secret" in detailed.json()["last_error"]
            assert detailed.json()["archive"]["free_bytes"] >= 0
        finally:
            store.health = real
        client.close()

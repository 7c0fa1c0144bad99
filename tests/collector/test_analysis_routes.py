"""The analysis's read API over a real uvicorn (issue 11, items 3 and 6): events, aggregates,
observations and verdicts of a lake written by a real pass, with filters, keyset paging, the
parameter checks of ``/api/v1/measurements`` (400 ``bad_query``), 503 ``analysis_unavailable``
without an analysis, the rules' version on every answer, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.collector.analysis_data import analysed
from tests.collector.liveserver import Client, ThreadServer, make_settings, thread_server

QUIET, BLOCKED = 64, 6  # the detector learns a series from its first 60 measurements
ONSET = "2026-05-22 16:00:00"  # 2026-05-20 00:00 + 64 hours
FUNCTIONS = 4  # Skype: voice, video, registration, web


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake of one pass: Skype on AS64512, calls working for 64 hours, then blocked for 6."""
    return analysed(tmp_path_factory.mktemp("lake"), QUIET, BLOCKED)


@pytest.fixture(scope="module")
def server(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    settings = make_settings(tmp_path_factory.mktemp("collector") / "data", analysis_dir=lake)
    with thread_server(settings) as running:
        yield running


@pytest.fixture
def client(server: ThreadServer) -> Iterator[Client]:
    client = server.client()
    yield client
    client.close()


def ok(client: Client, path: str) -> dict[str, Any]:
    answer = client.get(path)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert body["rules_version"] and body["schema_version"] and body["pass_number"] == 1
    return body


def every_row(client: Client, path: str) -> list[dict[str, Any]]:
    """All rows of ``path``, page after page."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = ok(client, path + (f"&cursor={cursor}" if cursor else ""))
        rows += page["results"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def test_events_are_served_with_the_rules_version(client: Client) -> None:
    body = ok(client, "/api/v1/events")
    network = [e for e in body["results"] if e["level"] == "network"]
    assert {(e["probe_cc"], e["probe_asn"], e["service"], e["function"]) for e in network} == {
        ("AZ", "AS64512", "skype", "voice"),
        ("AZ", "AS64512", "skype", "video"),
    }
    for event in network:
        assert (event["start"], event["end"], event["ongoing"]) == (ONSET, None, True)
        assert event["verdict"] == "blocked" and event["rules_version"] == body["rules_version"]
    country = [e for e in body["results"] if e["level"] == "country"]
    assert len(country) == 1 and "AS64512" in country[0]["story"]


def test_event_filters(client: Client) -> None:
    voice = ok(client, "/api/v1/events?function=voice&level=network&probe_asn=64512")
    assert [e["function"] for e in voice["results"]] == ["voice"]
    assert ok(client, "/api/v1/events?probe_cc=ir")["results"] == []
    assert ok(client, "/api/v1/events?service=whatsapp")["results"] == []
    assert [e["level"] for e in ok(client, "/api/v1/events?level=country")["results"]] == [
        "country"
    ]
    assert ok(client, "/api/v1/events?until=2026-05-22T16:00:00Z")["results"] == []


def test_verdicts_page_through_every_row_once(client: Client) -> None:
    rows = every_row(client, "/api/v1/verdicts?limit=25")
    assert len(rows) == (QUIET + BLOCKED) * FUNCTIONS
    keys = {(r["measurement_uid"], r["service"], r["function"]) for r in rows}
    assert len(keys) == len(rows)
    times = [r["measurement_start_time"] for r in rows]
    assert times == sorted(times, reverse=True)  # newest first
    blocked = [r for r in rows if r["verdict"] == "blocked"]
    assert {r["function"] for r in blocked} == {"voice", "video"}
    assert len(blocked) == 2 * BLOCKED and all(r["mechanism"] == "udp.dpi_call" for r in blocked)
    assert all(r["rules_version"] for r in rows)


def test_verdicts_and_observations_of_one_measurement(client: Client) -> None:
    newest = ok(client, "/api/v1/verdicts?limit=1&verdict=blocked&function=voice")["results"][0]
    uid = newest["measurement_uid"]
    own = ok(client, f"/api/v1/verdicts?measurement_uid={uid}")["results"]
    assert {r["function"] for r in own} == {"voice", "video", "registration", "web"}
    observations = every_row(client, f"/api/v1/observations?measurement_uid={uid}&limit=1000")
    assert observations and {o["measurement_uid"] for o in observations} == {uid}
    assert {"dns", "tcp"} <= {o["kind"] for o in observations}
    narrowed = every_row(client, f"/api/v1/observations?measurement_uid={uid}&function=voice")
    assert narrowed and {o["function"] for o in narrowed} == {"voice"}


def test_aggregates_count_the_blocked_buckets(client: Client) -> None:
    blocked = every_row(client, "/api/v1/aggregates?verdict=blocked&function=voice")
    assert len(blocked) == BLOCKED
    assert all(a["measurements"] == 1 and a["bucket_seconds"] == 3600 for a in blocked)
    assert min(a["bucket"] for a in blocked) == ONSET
    first = every_row(client, "/api/v1/aggregates?since=2026-05-20&until=2026-05-20T01:00&limit=2")
    assert {a["bucket"] for a in first} == {"2026-05-20 00:00:00"}


@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/events?measurement_uid=x",  # not a parameter of events
        "/api/v1/aggregates?level=country",
        "/api/v1/observations?verdict=blocked",
        "/api/v1/verdicts?sevrice=skype",
        "/api/v1/verdicts?service=skype&service=signal",
        "/api/v1/verdicts?limit=0",
        "/api/v1/verdicts?limit=1001",
        "/api/v1/verdicts?verdict=maybe",
        "/api/v1/events?level=planet",
        "/api/v1/events?probe_asn=ASX",
        "/api/v1/events?since=yesterday",
        "/api/v1/verdicts?cursor=not-a-cursor-we-issued",
        "/api/v1/events?cursor=WyJ4IiwieSIsInoiLDFd",  # ["x","y","z",1]: not a key of events
    ],
)
def test_bad_queries_are_400(client: Client, query: str) -> None:
    answer = client.get(query)
    assert answer.status == 400, answer.body
    assert answer.json()["error"] == "bad_query"


def test_no_analysis_is_503(tmp_path: Path) -> None:
    for analysis_dir in (None, tmp_path / "empty"):
        settings = make_settings(tmp_path / "data", analysis_dir=analysis_dir)
        with thread_server(settings) as running:
            client = running.client()
            for table in ("events", "aggregates", "observations", "verdicts"):
                answer = client.get(f"/api/v1/{table}")
                assert answer.status == 503, answer.body
                assert answer.json()["error"] == "analysis_unavailable"
                assert answer.headers["retry-after"]
            client.close()


def test_summaries_carry_no_verdict_and_the_document_has_the_routes(client: Client) -> None:
    document = client.get("/openapi.json").json()
    for table, model in (("events", "Event"), ("aggregates", "Aggregate"),
                         ("observations", "Observation"), ("verdicts", "Verdict")):  # fmt: skip
        responses = document["paths"][f"/api/v1/{table}"]["get"]["responses"]
        assert {"200", "400", "503"} <= set(responses)
        schema = responses["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"] == f"#/components/schemas/{model}Page"
    schemas = document["components"]["schemas"]
    assert "rules_version" in schemas["VerdictPage"]["properties"]
    assert "verdict" in schemas["VerdictRow"]["properties"]
    assert not {"verdict", "verdicts", "mechanism"} & set(schemas["Summary"]["properties"])

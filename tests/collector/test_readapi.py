"""The read API over a real uvicorn, for the SQLite and the PostgreSQL index: filters, paging,
OONI's own measurements served like msgwatch's, safe JSON, and no probe address anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.collector.liveserver import (
    Client,
    ThreadServer,
    demo_measurements,
    envelope,
    make_settings,
    ooni_lines,
    thread_server,
)
from tests.collector.pgserver import fresh_database

SCRIPT = "<script>alert(1)</script>"
HOSTILE = "</script><img src=x onerror=alert(1)>\u2028\u2029\"'&<>"
CLIENT_ADDRESS = "127.0.0.9"  # the test client's source address: must never come back or be logged


@dataclass
class Loaded:
    server: ThreadServer
    stored: dict[str, dict[str, Any]]  # uid -> the measurement as submitted
    ooni_refused: dict[int, str]
    special: dict[str, str]  # name -> uid
    bodies: list[bytes]  # every response body seen while loading


def timed(start: str, **changes: Any) -> dict[str, Any]:
    return envelope(measurement_start_time=start, **changes)


def crafted() -> dict[str, dict[str, Any]]:
    functions = [{"function": "voice", "mode": "any_of"}, {"function": "text", "mode": "any_of"}]
    verdicts = [  # the probe's: never indexed, never a filter
        {"service": "whatsapp", "function": "voice", "verdict": "blocked", "mechanism": "udp.drop"},
        {"service": "whatsapp", "function": "text", "verdict": "ok", "mechanism": None},
    ]
    return {
        "script": timed("2030-01-01 00:00:00", input=SCRIPT, test_keys={"body": HOSTILE}),
        "address": timed(
            "2030-01-02 00:00:00",
            probe_ip="203.0.113.50",
            test_keys={
                "client_resolver": CLIENT_ADDRESS,
                "requests": [
                    {"address": f"{CLIENT_ADDRESS}:443", "note": f"seen from {CLIENT_ADDRESS}"}
                ],
            },
        ),
        "early": timed("2001-02-03 04:05:06", probe_cc="BR", probe_asn="AS28573"),
        "late": timed("2029-12-31 23:59:59", probe_cc="BR", probe_asn="AS28573"),
        "measured": timed(
            "2025-06-01 12:00:00",
            software_name="msgwatch",
            test_name="msgwatch_service",
            input="whatsapp",
            test_keys={
                "msgwatch_service": "whatsapp",
                "msgwatch_functions": functions,
                "msgwatch_verdicts": verdicts,
            },
        ),
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    database = (
        fresh_database(request.getfixturevalue("postgres_url"))
        if request.param == "postgres"
        else None
    )
    settings = make_settings(tmp_path_factory.mktemp("readapi") / "data", database=database)
    with thread_server(settings) as server:
        client = server.client(source=CLIENT_ADDRESS)
        stored: dict[str, dict[str, Any]] = {}
        bodies: list[bytes] = []
        ooni = [json.loads(line) for line in ooni_lines()]
        demo = demo_measurements()
        items = [{"idempotency_key": f"ooni-{n}", "measurement": m} for n, m in enumerate(ooni)]
        items += [{"idempotency_key": f"demo-{n}", "measurement": m} for n, m in enumerate(demo)]
        special_items = crafted()
        items += [
            {"idempotency_key": f"crafted-{name}", "measurement": m}
            for name, m in special_items.items()
        ]
        refused: dict[int, str] = {}
        special: dict[str, str] = {}
        answer = client.post("/api/v1/submit", {"measurements": items})
        assert answer.status == 200, answer.body[:500]
        bodies.append(answer.body)
        for item, result in zip(items, answer.json()["results"], strict=True):
            key = item["idempotency_key"]
            if result["status"] == "rejected":
                assert key.startswith("ooni-"), result
                refused[int(key.removeprefix("ooni-"))] = result["error"]
                continue
            assert result["status"] == "stored", result
            stored[result["measurement_uid"]] = item["measurement"]
            if key.startswith("crafted-"):
                special[key.removeprefix("crafted-")] = result["measurement_uid"]
        yield Loaded(server, stored, refused, special, bodies)


@pytest.fixture
def client(loaded: Loaded) -> Iterator[Client]:
    client = loaded.server.client(source=CLIENT_ADDRESS)
    yield client
    client.close()


def all_pages(client: Client, query: str = "", limit: int = 17) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        path = f"/api/v1/measurements?limit={limit}" + (f"&{query}" if query else "")
        if cursor is not None:
            path += f"&cursor={cursor}"
        answer = client.get(path)
        assert answer.status == 200, answer.body
        page = answer.json()
        assert set(page) == {"results", "next_cursor"}
        assert len(page["results"]) <= limit
        results += page["results"]
        cursor = page["next_cursor"]
        if cursor is None:
            return results
    raise AssertionError("paging does not end")


def test_ooni_samples_accepted_as_the_doc_says(loaded: Loaded) -> None:
    if not ooni_lines():
        pytest.skip("OONI samples not present")
    # all of them, the 2015 one without probe_asn/probe_cc and the one with null test_keys too
    assert loaded.ooni_refused == {}


def test_every_stored_measurement_is_served_as_stored(loaded: Loaded, client: Client) -> None:
    for uid, submitted in loaded.stored.items():
        answer = client.get(f"/api/v1/measurements/{uid}")
        assert answer.status == 200
        served = answer.json()
        assert served["measurement_uid"] == uid
        if uid != loaded.special["address"]:  # that one is scrubbed (see below)
            assert served["test_keys"] == submitted["test_keys"]
        assert served["measurement_start_time"] == submitted["measurement_start_time"]
        assert served["test_name"] == submitted["test_name"]
        if "probe_ip" in submitted:
            assert served["probe_ip"] == "127.0.0.1"


def test_paging_covers_everything_once_newest_first(loaded: Loaded, client: Client) -> None:
    results = all_pages(client)
    uids = [r["measurement_uid"] for r in results]
    assert len(uids) == len(set(uids)) == len(loaded.stored)
    assert set(uids) == set(loaded.stored)
    starts = [r["measurement_start_time"] for r in results]
    assert starts == sorted(starts, reverse=True)
    assert results[0]["measurement_uid"] == loaded.special["address"]
    summary = results[0]
    assert set(summary) >= {
        "measurement_uid", "report_id", "measurement_start_time", "received_at", "probe_cc",
        "probe_asn", "test_name", "software_name", "input", "service", "functions",
    }  # fmt: skip
    assert "verdicts" not in summary
    # a big page, and the default page size
    assert len(all_pages(client, limit=1000)) == len(loaded.stored)
    assert len(client.get("/api/v1/measurements").json()["results"]) == min(100, len(loaded.stored))


def test_filters(loaded: Loaded, client: Client) -> None:
    def expected(predicate: Any) -> set[str]:
        return {uid for uid, m in loaded.stored.items() if predicate(m)}

    def got(query: str) -> set[str]:
        return {r["measurement_uid"] for r in all_pages(client, query, limit=50)}

    assert got("test_name=signal") == expected(lambda m: m["test_name"] == "signal")
    assert got("probe_cc=BR") == expected(lambda m: m.get("probe_cc") == "BR")
    assert got("probe_cc=br") == got("probe_cc=BR")
    assert got("probe_asn=AS30722") == expected(lambda m: m.get("probe_asn") == "AS30722")
    assert got("probe_asn=30722") == got("probe_asn=AS30722")
    window = expected(
        lambda m: "2020-01-01 00:00:00" <= m["measurement_start_time"] < "2021-01-01 00:00:00"
    )
    assert window and got("since=2020-01-01&until=2021-01-01") == window
    assert got("since=2020-01-01T00:00:00Z&until=2021-01-01%2000:00:00") == window
    assert got("since=2020-01-01T01:00:00%2B01:00&until=2020-12-31T23:00:00-01:00") == window
    assert got("since=2029-12-31%2023:59:59&until=2030-01-01%2000:00:00") == {
        loaded.special["late"]
    }
    assert got("test_name=signal&probe_cc=BR") == expected(
        lambda m: m["test_name"] == "signal" and m.get("probe_cc") == "BR"
    )
    assert got("test_name=no_such_test") == set()


def test_service_and_function_filters(loaded: Loaded, client: Client) -> None:
    uid = loaded.special["measured"]
    assert uid in {
        r["measurement_uid"] for r in all_pages(client, "service=whatsapp&function=voice")
    }
    assert uid not in {r["measurement_uid"] for r in all_pages(client, "function=video")}
    mine = next(r for r in all_pages(client, "service=whatsapp") if r["measurement_uid"] == uid)
    assert (mine["service"], mine["functions"]) == ("whatsapp", ["voice", "text"])
    for summary in all_pages(client, "function=web"):
        assert "web" in summary["functions"]
    # the demo measured zoom's web function (the block page the probe saw is not the index's)
    zoom = all_pages(client, "service=zoom&function=web")
    assert len(zoom) == 1 and zoom[0]["input"] == "zoom"


def test_there_is_no_verdict_filter(loaded: Loaded, client: Client) -> None:
    """Verdicts are the analysis's: the index has none to filter on, so asking is an error,
    never an empty answer."""
    answer = client.get("/api/v1/measurements?verdict=blocked")
    assert answer.status == 400 and answer.json()["error"] == "bad_query"


def test_json_headers_everywhere(loaded: Loaded, client: Client) -> None:
    uid = next(iter(loaded.stored))
    for path in (
        "/api/v1/measurements",
        f"/api/v1/measurements/{uid}",
        "/api/v1/measurements/nope",
        "/api/v1/measurements?limit=0",
        "/health",
    ):
        answer = client.get(path)
        assert answer.headers["content-type"] == "application/json", path
        assert answer.headers["x-content-type-options"] == "nosniff", path


def test_script_comes_back_as_an_exact_json_string(loaded: Loaded, client: Client) -> None:
    uid = loaded.special["script"]
    answer = client.get(f"/api/v1/measurements/{uid}")
    assert b'"input":"<script>alert(1)</script>"' in answer.body
    assert answer.json()["input"] == SCRIPT
    assert answer.json()["test_keys"]["body"] == HOSTILE
    listing = client.get("/api/v1/measurements?since=2030-01-01&until=2030-01-01%2000:00:01")
    assert b'"input":"<script>alert(1)</script>"' in listing.body
    assert listing.json()["results"][0]["input"] == SCRIPT


def test_no_probe_address_in_any_response_or_log(
    loaded: Loaded, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uid = loaded.special["address"]
    stored = client.get(f"/api/v1/measurements/{uid}")
    assert stored.json()["test_keys"]["client_resolver"] == "127.0.0.1"
    assert stored.json()["test_keys"]["requests"][0]["address"] == "127.0.0.1:443"
    seen = [*loaded.bodies, stored.body]
    seen += [client.get(f"/api/v1/measurements/{u}").body for u in loaded.stored]
    seen += [json.dumps(all_pages(client, limit=1000)).encode()]
    again = client.add(crafted()["address"], key="crafted-address")
    assert again.json()["status"] == "duplicate"
    seen += [again.body, client.get("/health").body, client.get("/metrics").body]
    seen += [client.get("/nowhere").body, client.post("/report/x", raw=b"{").body]
    for body in seen:
        assert CLIENT_ADDRESS.encode() not in body
        assert b"203.0.113.50" not in body
    assert caplog.records, "the access log should have recorded the requests"
    assert CLIENT_ADDRESS not in caplog.text
    assert "203.0.113.50" not in caplog.text

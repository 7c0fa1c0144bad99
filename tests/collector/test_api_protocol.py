"""The wire protocol of docs/design/002-collector.md over a real uvicorn on loopback: OONI's
report routes, the batch route, idempotency, errors in the doc's form, the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson
import pytest

from msgwatch.collector.models import REASONS
from tests.collector.liveserver import (
    REPORT_ID,
    Client,
    demo_measurements,
    envelope,
    make_settings,
    thread_server,
)

UID = re.compile(r"[0-9]{14}\.[0-9]{6}_[A-Z]{2}_[a-z0-9]+_[0-9a-f]{16}")


def test_open_report(client: Client) -> None:
    answer = client.post(
        "/report",
        {
            "probe_asn": "AS30722",
            "probe_cc": "IT",
            "software_name": "ooniprobe-cli",
            "software_version": "3.20.0",
            "test_name": "web_connectivity",
            "test_version": "0.4.3",
            "data_format_version": "0.2.0",
            "format": "json",
        },
    )
    assert answer.status == 200
    body = answer.json()
    assert set(body) == {"report_id", "backend_version", "supported_formats"}
    assert re.fullmatch(
        r"[0-9]{8}T[0-9]{6}Z_webconnectivity_IT_30722_n1_[A-Za-z0-9]{16}", body["report_id"]
    )
    assert body["supported_formats"] == ["json"]
    # the id it hands out is one the add route accepts
    added = client.post(f"/report/{body['report_id']}", {"format": "json", "content": envelope()})
    assert added.status == 200
    closed = client.post(f"/report/{body['report_id']}/close", raw=b"")
    assert (closed.status, closed.json()) == (200, {})


def test_add_with_idempotency_key(client: Client) -> None:
    measurement = demo_measurements()[0]
    first = client.add(measurement, key="probe-1.key-1")
    assert first.status == 200, first.body
    assert first.headers["content-type"] == "application/json"
    uid = first.json()["measurement_uid"]
    assert first.json()["status"] == "stored"
    assert UID.fullmatch(uid), uid
    assert uid.split("_")[1:3] == ["ZZ", "msgwatchservice"]
    again = client.add(measurement, key="probe-1.key-1")
    assert again.json() == {"measurement_uid": uid, "status": "duplicate"}
    # a different measurement under the same key is still the first one: the key decides
    other = client.add(envelope(), key="probe-1.key-1")
    assert other.json() == {"measurement_uid": uid, "status": "duplicate"}
    stored = client.get(f"/api/v1/measurements/{uid}")
    assert stored.status == 200
    assert stored.json()["test_keys"] == measurement["test_keys"]


def test_add_without_key_uses_the_content(client: Client) -> None:
    measurement = envelope(input="https://example.org/no-key")
    first = client.add(measurement)
    second = client.add(json.loads(json.dumps(measurement, indent=3)))
    assert first.json()["status"] == "stored"
    assert second.json() == {
        "measurement_uid": first.json()["measurement_uid"],
        "status": "duplicate",
    }
    # the key is sha256 of the canonical JSON: a batch item without a key meets the same one
    canonical = orjson.dumps(measurement, option=orjson.OPT_SORT_KEYS)
    key = "sha256:" + hashlib.sha256(canonical).hexdigest()
    batch = client.post("/api/v1/submit", {"measurements": [{"measurement": measurement}]})
    assert batch.json()["results"][0]["status"] == "duplicate"
    assert batch.json()["results"][0]["idempotency_key"] == key
    assert batch.json()["results"][0]["measurement_uid"] == first.json()["measurement_uid"]
    # ... and that namespace is the collector's: a client may not take a key in it (issue 9)
    other = envelope(input="https://example.org/not-yet-sent")
    taken = "sha256:" + hashlib.sha256(orjson.dumps(other, option=orjson.OPT_SORT_KEYS)).hexdigest()
    refused = client.post(
        "/api/v1/submit", {"measurements": [{"idempotency_key": taken, "measurement": envelope()}]}
    )
    assert refused.json()["results"][0]["error"] == "bad_idempotency_key"
    assert client.add(envelope(input="x"), key=taken).json()["error"] == "bad_idempotency_key"
    assert client.add(other).json()["status"] == "stored"  # not pre-empted


def test_probe_ip_and_cc_are_normalised(client: Client) -> None:
    answer = client.add(envelope(probe_ip="198.51.100.77", probe_cc="xyz"), key="normalise-1")
    uid = answer.json()["measurement_uid"]
    assert uid.split("_")[1] == "ZZ"
    stored = client.get(f"/api/v1/measurements/{uid}").json()
    assert stored["probe_ip"] == "127.0.0.1"
    assert stored["probe_cc"] == "ZZ"
    assert b"198.51.100.77" not in client.get(f"/api/v1/measurements/{uid}").body


def test_batch_item_by_item(client: Client) -> None:
    good = envelope(input="batch-good")
    items: list[Any] = [
        {"idempotency_key": "batch-1", "measurement": good},
        {"idempotency_key": "batch-2", "measurement": envelope(probe_asn="AS-1")},
        {"idempotency_key": "batch-1", "measurement": good},
        "nonsense",
        {"idempotency_key": "bad key!", "measurement": good},
        {
            "idempotency_key": "batch-3",
            "measurement": envelope(measurement_start_time="2024-01-02"),
        },
        {"idempotency_key": "batch-4", "measurement": envelope(input="batch-4")},
    ]
    answer = client.post("/api/v1/submit", {"measurements": items})
    assert answer.status == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [
        "stored", "rejected", "duplicate", "rejected", "rejected", "rejected", "stored",
    ]  # fmt: skip
    assert results[0]["measurement_uid"] == results[2]["measurement_uid"]
    assert results[1] == {
        "idempotency_key": "batch-2",
        "status": "rejected",
        "error": "bad_asn",
        "detail": results[1]["detail"],
    }
    assert results[3]["idempotency_key"] is None and results[3]["error"] == "not_an_object"
    assert results[4]["error"] == "bad_idempotency_key"
    assert results[5]["error"] == "bad_time"
    assert all(r["error"] in REASONS for r in results if r["status"] == "rejected")
    assert client.post("/api/v1/submit", {"measurements": []}).json() == {"results": []}


def test_batch_of_500(client: Client) -> None:
    items = [
        {"idempotency_key": f"five-hundred-{i}", "measurement": envelope(input=str(i))}
        for i in range(500)
    ]
    answer = client.post("/api/v1/submit", {"measurements": items})
    assert answer.status == 200
    results = answer.json()["results"]
    assert len(results) == 500 and all(r["status"] == "stored" for r in results)
    assert len({r["measurement_uid"] for r in results}) == 500


def test_errors_have_the_doc_form(client: Client) -> None:
    for answer, status, reason in (
        (client.get("/nowhere"), 404, "not_found"),
        (
            client.get("/api/v1/measurements/20240101000000.000000_IT_signal_0123456789abcdef"),
            404,
            "not_found",
        ),
        (client.get(f"/report/{REPORT_ID}"), 405, "not_found"),
        (client.get("/api/v1/measurements?limit=-1"), 400, "bad_query"),
        (client.post("/report/nope/close", raw=b""), 400, "bad_report_id"),
    ):
        assert answer.status == status
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-content-type-options"] == "nosniff"
        body = answer.json()
        assert set(body) == {"error", "detail"} and body["error"] == reason


def test_openapi_document(client: Client) -> None:
    answer = client.get("/openapi.json")
    assert answer.status == 200
    document = answer.json()
    paths = document["paths"]
    for path, method in (
        ("/report", "post"),
        ("/report/{report_id}", "post"),
        ("/report/{report_id}/close", "post"),
        ("/api/v1/submit", "post"),
        ("/api/v1/measurements", "get"),
        ("/api/v1/measurements/{measurement_uid}", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
    ):
        assert method in paths[path], path
    schemas = document["components"]["schemas"]
    batch_ref = paths["/api/v1/submit"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert batch_ref == {"$ref": "#/components/schemas/BatchRequest"}
    assert schemas["BatchRequest"]["properties"]["measurements"]["maxItems"] == 500
    assert "Measurement" in schemas and "test_keys" in schemas["Measurement"]["required"]
    add = paths["/report/{report_id}"]["post"]
    assert add["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AddMeasurementRequest"
    )
    assert any(p["name"] == "Idempotency-Key" for p in add["parameters"])
    assert add["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AddMeasurementResponse"
    )
    assert "ErrorBody" in schemas
    listing = paths["/api/v1/measurements"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert names == {
        "service",
        "function",
        "probe_asn",
        "probe_cc",
        "test_name",
        "since",
        "until",
        "limit",
        "cursor",
    }
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(document))
    assert set(refs) <= set(schemas)  # every reference resolves


def test_health(client: Client) -> None:
    answer = client.get("/health")
    assert answer.status == 200
    assert answer.json()["status"] == "ok"


class Faulty:
    """The real store, with chosen methods raising what a bug (not a full disk) would raise."""

    def __init__(self, store: Any, broken: set[str]) -> None:
        self.store = store
        self.broken = broken

    def __getattr__(self, name: str) -> Any:
        if name in self.broken:

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"injected failure of {name}")

            return fail
        return getattr(self.store, name)


@pytest.mark.parametrize("fast_path", [True, False])
def test_unexpected_store_failures_are_json(
    tmp_path: Any, fast_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from msgwatch.collector.store import open_store

    async def faulty_opener(data_dir: Any, database: Any) -> Any:
        return Faulty(await open_store(data_dir, database), {"put_many", "query", "health"})

    settings = make_settings(tmp_path / "data")
    with thread_server(settings, store_opener=faulty_opener, fast_path=fast_path) as server:
        client = server.client()
        # a store that fails in an unforeseen way acknowledges nothing: 503, like a full disk
        answer = client.add(envelope(), key="faulty-1")
        assert (answer.status, answer.json()["error"]) == (503, "storage_unavailable")
        batch = client.post("/api/v1/submit", {"measurements": [{"measurement": envelope()}]})
        assert (batch.status, batch.json()["error"]) == (503, "storage_unavailable")
        health = client.get("/health")
        assert (health.status, health.json()["status"]) == (503, "unavailable")
        # a bug anywhere else is a 500, still in the doc's JSON form
        listing = client.get("/api/v1/measurements")
        assert listing.status == 500
        assert listing.headers["content-type"] == "application/json"
        assert listing.json() == {"error": "internal_error", "detail": "an internal error"}
        assert client.get("/metrics").status == 200
    assert "injected failure of put_many" in caplog.text

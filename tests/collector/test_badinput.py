"""Hostile and broken input over a real uvicorn on 127.0.0.1: every answer a 4xx with a reason code,
never a 5xx, and the collector healthy and accepting afterwards."""

from __future__ import annotations

import json
import random
import socket
from typing import Any

import pytest

from msgwatch.collector import handlers
from msgwatch.collector.models import MAX_BATCH_BYTES, MAX_MEASUREMENT_BYTES, REASONS
from tests.collector.liveserver import (
    REPORT_ID,
    Answer,
    Client,
    ThreadServer,
    envelope,
)

ADD = f"/report/{REPORT_ID}"


def refused(answer: Answer, reason: str | None = None, status: int | None = None) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] in REASONS
    if reason is not None:
        assert body["error"] == reason, body
    if status is not None:
        assert answer.status == status


def content(measurement: Any) -> bytes:
    return json.dumps({"format": "json", "content": measurement}).encode()


GOOD = content(envelope())
UTF16_BODY = GOOD.decode().replace('"IT"', '"ÉT"').encode("utf-16")
LATIN1_BODY = GOOD.decode().replace("ooniprobe-cli", "ooniprobé").encode("latin-1")

CASES: list[tuple[str, str, bytes, dict[str, str], str, int]] = [
    # name, path, body, headers, reason, status
    ("empty", ADD, b"", {}, "malformed_json", 400),
    ("truncated", ADD, GOOD[: len(GOOD) // 2], {}, "malformed_json", 400),
    ("trailing garbage", ADD, GOOD + b"}", {}, "malformed_json", 400),
    ("two documents", ADD, GOOD + GOOD, {}, "malformed_json", 400),
    ("not json", ADD, b"hello, world", {}, "malformed_json", 400),
    ("nan", ADD, b'{"format":"json","content":NaN}', {}, "malformed_json", 400),
    ("utf-16", ADD, UTF16_BODY, {}, "bad_encoding", 400),
    ("utf-16 no bom", ADD, GOOD.decode().encode("utf-16-le"), {}, "bad_encoding", 400),
    ("latin-1", ADD, LATIN1_BODY, {}, "bad_encoding", 400),
    (
        "lone surrogate escape",
        ADD,
        content(envelope()).replace(b"3.20.0", b"\\ud800"),
        {},
        "malformed_json",
        400,
    ),
    ("array", ADD, b"[]", {}, "not_an_object", 400),
    ("content array", ADD, b'{"format":"json","content":[]}', {}, "not_an_object", 400),
    ("no content", ADD, b'{"format":"json"}', {}, "missing_key", 400),
    ("yaml", ADD, b'{"format":"yaml","content":{}}', {}, "unsupported_format", 400),
    (
        "nested 100k",
        ADD,
        b'{"format":"json","content":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        {},
        "too_deep",
        400,
    ),
    ("nested 100k unclosed", ADD, b"{" + b'"a":{' * 100_000, {}, "too_deep", 400),
    (
        "nested 65",
        ADD,
        content(envelope(test_keys={"x": json.loads("[" * 63 + "]" * 63)})),
        {},
        "too_deep",
        400,
    ),
    (
        "missing test name",
        ADD,
        content({k: v for k, v in envelope().items() if k != "test_name"}),
        {},
        "missing_key",
        400,
    ),
    ("bad asn", ADD, content(envelope(probe_asn="ASx")), {}, "bad_asn", 400),
    ("bad time", ADD, content(envelope(measurement_start_time="yesterday")), {}, "bad_time", 400),
    ("list test_keys", ADD, content(envelope(test_keys=[1, 2])), {}, "bad_type", 400),
    ("bad report id", "/report/20261124T103225Z_x_ZZ_0_n1_short", GOOD, {}, "bad_report_id", 400),
    ("traversal", "/report/..%2F..%2Fetc%2Fpasswd", GOOD, {}, "not_found", 404),
    ("long report id", "/report/" + "A" * 5000, GOOD, {}, "bad_report_id", 400),
    ("bad key", ADD, GOOD, {"Idempotency-Key": "a b"}, "bad_idempotency_key", 400),
    ("long key", ADD, GOOD, {"Idempotency-Key": "k" * 129}, "bad_idempotency_key", 400),
    (
        "multipart",
        ADD,
        b"--x\r\n\r\n--x--",
        {"Content-Type": "multipart/form-data; boundary=x"},
        "bad_encoding",
        415,
    ),
    (
        "declared utf-16",
        ADD,
        UTF16_BODY,
        {"Content-Type": "application/json; charset=utf-16"},
        "bad_encoding",
        415,
    ),
    (
        "form with garbage",
        ADD,
        b"a=1&b=2",
        {"Content-Type": "application/x-www-form-urlencoded"},
        "malformed_json",
        400,
    ),
    (
        "xml",
        ADD,
        b"<?xml version='1.0'?><a/>",
        {"Content-Type": "application/xml"},
        "malformed_json",
        400,
    ),
    ("batch not a list", "/api/v1/submit", b'{"measurements":{}}', {}, "bad_type", 400),
    ("batch missing", "/api/v1/submit", b"{}", {}, "missing_key", 400),
    (
        "batch 501",
        "/api/v1/submit",
        json.dumps({"measurements": [{}] * 501}).encode(),
        {},
        "batch_too_large",
        413,
    ),
    (
        "open report bad asn",
        "/report",
        b'{"probe_asn":"1","probe_cc":"IT","test_name":"x","software_name":"a","software_version":"1"}',
        {},
        "bad_asn",
        400,
    ),
    ("open report random", "/report", b"\x00\xff\xfe", {}, "bad_encoding", 400),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "reason", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_bodies(
    client: Client,
    name: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    reason: str,
    status: int,
) -> None:
    refused(client.request("POST", path, body, headers), reason, status)


def test_oversized_bodies(client: Client) -> None:
    huge = content(envelope(test_keys={"blob": "x" * MAX_MEASUREMENT_BYTES}))
    refused(client.request("POST", ADD, huge), "body_too_large", 413)
    # a measurement of just under 4 MiB with one huge string is fine
    unit = "é<script>"
    filler = unit * ((MAX_MEASUREMENT_BYTES - 2000) // (len(json.dumps(unit)) - 2))
    answer = client.request("POST", ADD, content(envelope(test_keys={"blob": filler})))
    assert answer.status == 200, answer.body[:200]
    # a batch over 32 MiB is refused as a whole, from its Content-Length, before it is read
    refused(
        client.request("POST", "/api/v1/submit", b" " * (MAX_BATCH_BYTES + 1)),
        "body_too_large",
        413,
    )


def raw_exchange(port: int, request: bytes, read_timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_chunked_body_over_the_limit_is_cut_off(server: ThreadServer) -> None:
    chunk = b"x" * 1_000_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    head = f"POST {ADD} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    answer = raw_exchange(server.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"error":"body_too_large"' in answer


def test_client_that_disappears_mid_body(server: ThreadServer) -> None:
    head = f"POST {ADD} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + GOOD[:500])
    # nothing to answer; the collector must simply carry on
    assert server.client().get("/health").status == 200


def test_client_that_trickles_its_body(
    server: ThreadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers promptly, then part of the body and silence: 408 once the body's time is up."""
    monkeypatch.setattr(handlers, "BODY_TIMEOUT", 0.5)
    head = f"POST {ADD} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + GOOD[:500])
        # to the end of the connection (the answer says ``connection: close``): one ``recv``
        # may return the head without the body when the machine is busy
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error":"body_timeout"' in answer
    assert server.client().get("/health").status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/report"),
        ("PUT", ADD),
        ("DELETE", "/api/v1/submit"),
        ("GET", "/api/v1/submit"),
        ("PATCH", f"{ADD}/close"),
        ("POST", "/api/v1/measurements"),
        ("POST", "/health"),
        ("DELETE", "/metrics"),
    ],
)
def test_wrong_methods(client: Client, method: str, path: str) -> None:
    answer = client.request(method, path, b"{}")
    refused(answer, "not_found", 405)
    assert answer.headers.get("allow")


@pytest.mark.parametrize(
    "path", ["/", "/report/x/y/z", "/api/v2/submit", "/%00", "/api/v1/measurements/" + "u" * 300]
)
def test_unknown_paths(client: Client, path: str) -> None:
    refused(client.get(path), None, None)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "since=yesterday",
        "until=2024-13-01",
        "cursor=not-a-cursor",
        "probe_cc=ITA",
        "probe_asn=ASX",
        "test_name=" + "x" * 300,
    ],
)
def test_bad_queries(client: Client, query: str) -> None:
    refused(client.get(f"/api/v1/measurements?{query}"), "bad_query", 400)


def test_random_bytes(client: Client) -> None:
    rng = random.Random(20261124)
    for _ in range(60):
        body = rng.randbytes(rng.randrange(0, 3000))
        path = rng.choice([ADD, "/api/v1/submit", "/report"])
        refused(client.request("POST", path, body))


def test_random_mutations_of_a_real_measurement(client: Client) -> None:
    rng = random.Random(7)
    for number in range(60):
        body = bytearray(GOOD)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        answer = client.request("POST", ADD, bytes(body), {"Idempotency-Key": f"mutation-{number}"})
        assert answer.status < 500, answer.body
        if answer.status != 200:
            refused(answer)


def test_still_healthy_and_accepting(server: ThreadServer) -> None:
    client = server.client()
    assert client.get("/health").status == 200
    answer = client.add(envelope(), key="after-the-storm")
    assert answer.status == 200 and answer.json()["status"] == "stored"
    uid = answer.json()["measurement_uid"]
    assert client.get(f"/api/v1/measurements/{uid}").json()["test_name"] == "signal"

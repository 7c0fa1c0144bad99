"""The archive on a tiny tmpfs: full, then read-only (with the SQLite and the PostgreSQL index). Each time a submission is answered
``503 storage_unavailable`` without a uid, ``/health`` says 503, and once there is room again (or
the file system is writable again) the same key is stored — it was never stored before.

Needs root (``mount -t tmpfs``); the mount is undone in the fixture's teardown.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.collector.liveserver import Client, envelope, make_settings, thread_server
from tests.collector.pgserver import fresh_database

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True)


@pytest.fixture
def tiny_archive(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    archive = data / "archive"
    archive.mkdir(parents=True)
    try:
        mount("-t", "tmpfs", "-o", "size=256k,mode=0755", "msgwatch-test", str(archive))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    try:
        yield data
    finally:
        result = subprocess.run(["umount", str(archive)], capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(archive)], capture_output=True)


def incompressible(rng: random.Random, size: int = 40_000) -> dict[str, Any]:
    blob = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    return envelope(test_keys={"blob": blob})


def fill_up(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def unavailable(answer: Any) -> None:
    assert answer.status == 503, answer.body[:300]
    body = answer.json()
    assert body["error"] == "storage_unavailable"
    assert "measurement_uid" not in body
    assert answer.headers["retry-after"]


def _settings(data: Path, backend: str, request: pytest.FixtureRequest) -> Any:
    if backend == "sqlite":
        return make_settings(data)
    return make_settings(data, database=fresh_database(request.getfixturevalue("postgres_url")))


BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgresql"])


@BACKENDS
def test_full_archive_then_room_again(
    tiny_archive: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(1)
    with thread_server(_settings(tiny_archive, backend, request)) as server:
        client: Client = server.client()
        stored: dict[str, str] = {}
        measurements = {}
        failed_key = None
        for number in range(40):
            key = f"fill-{number}"
            measurements[key] = incompressible(rng)
            answer = client.add(measurements[key], key=key)
            if answer.status != 200:
                unavailable(answer)
                failed_key = key
                break
            stored[key] = answer.json()["measurement_uid"]
        assert failed_key is not None, "the tmpfs never filled up"
        assert stored, "nothing fit at all"
        fill_up(tiny_archive / "archive" / "filler")  # the last few KB, as another writer would
        health = client.get("/health")
        assert health.status == 503, health.body
        assert health.json()["status"] == "unavailable"
        assert health.json()["error"] == "storage_unavailable"
        # a batch is refused as a whole: nothing acknowledged
        batch = client.post(
            "/api/v1/submit",
            {
                "measurements": [
                    {"idempotency_key": "fill-batch", "measurement": incompressible(rng)}
                ]
            },
        )
        unavailable(batch)
        # what was acknowledged before is still served
        for uid in stored.values():
            assert client.get(f"/api/v1/measurements/{uid}").status == 200

        unavailable(client.add(measurements[failed_key], key=failed_key))
        mount("-o", "remount,size=8m", str(tiny_archive / "archive"))
        assert client.get("/health").status == 200
        again = client.add(measurements[failed_key], key=failed_key)
        assert again.status == 200
        assert again.json()["status"] == "stored"  # it had not been stored by the failed attempt
        for key, uid in stored.items():
            assert client.add(measurements[key], key=key).json() == {
                "measurement_uid": uid,
                "status": "duplicate",
            }
        metrics = client.get("/metrics").body.decode()
        assert "msgwatch_collector_storage_failures_total 3\n" in metrics
        assert 'msgwatch_collector_rejected_total{reason="storage_unavailable"} 3\n' in metrics


@BACKENDS
def test_read_only_archive_then_writable_again(
    tiny_archive: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    archive = tiny_archive / "archive"
    settings = dataclasses.replace(_settings(tiny_archive, backend, request), admin_token="adm")
    with thread_server(settings) as server:
        client = server.client()
        first = client.add(envelope(), key="before")
        assert first.status == 200
        mount("-o", "remount,ro", str(archive))
        try:
            unavailable(client.add(envelope(input="during"), key="during"))
            health = client.get("/health")
            assert health.status == 503
            assert "read-only" not in health.body.decode()  # the public sees only the status
            health = client.get("/health", headers={"Authorization": "Bearer adm"})
            assert health.status == 503
            assert "read-only" in health.json()["detail"]  # the operator sees the cause
            # reads still work
            uid = first.json()["measurement_uid"]
            assert client.get(f"/api/v1/measurements/{uid}").status == 200
        finally:
            mount("-o", "remount,rw", str(archive))
        assert client.get("/health").status == 200
        answer = client.add(envelope(input="during"), key="during")
        assert (answer.status, answer.json()["status"]) == (200, "stored")

"""The graceful stop of a real ``msgwatch collector serve`` (server.py, "Graceful stop").

Under load: client threads submit without pause, each measurement under its own idempotency key,
and record what each request got. SIGTERM (or SIGINT) is sent to the collector. Then:

- the process exits 0, well within ``--graceful-seconds`` plus a margin;
- every request got a whole 200 (acknowledged), a 503 ``storage_unavailable`` or a connection
  error (reset, refused) — nothing else, and no failure at all before the signal;
- requests were still being answered after the signal (those in flight were let finish);
- after a restart every acknowledged ``measurement_uid`` is fetchable and is the one its key has
  (a resubmission answers ``duplicate`` with it); each key that failed, resubmitted, is stored
  once; the index then holds exactly one row per distinct key, no duplicates.

A trickled body (``test_trickled_body_is_cut_at_the_bound``): a request whose body is still
arriving when SIGTERM comes would hold the process for the body timeout (30 s, handlers.py);
the graceful bound wins: the process exits 0 after ``--graceful-seconds`` (not before: it did wait),
the trickler is answered 503 ``storage_unavailable`` in JSON (nothing stored), a request whose body
ends within the bound is stored and acknowledged, an idle keep-alive connection is closed at once,
and a new connection during the wait is refused while the process is still alive.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.server import uvicorn_config
from msgwatch.collector.settings import Settings
from tests.collector.liveserver import (
    REPORT_ID,
    Client,
    ProcessServer,
    demo_measurements,
    envelope,
    every_summary,
)
from tests.collector.pgserver import fresh_database

THREADS = 4
LOAD_SECONDS = 1.0
GRACE = 2
"""``--graceful-seconds`` of these tests."""
MARGIN = 3.0
"""Beyond the graceful bound: the last group commit, the store's close, the interpreter's exit."""


@pytest.mark.parametrize(("seconds", "bound"), [(10.0, 10), (0.5, 1), (2.2, 3), (0.0, 0)])
def test_the_bound_is_whole_seconds_rounded_up(seconds: float, bound: int, tmp_path: Path) -> None:
    """uvicorn takes whole seconds, and ``None`` would wait for ever: 0.5 s must not become that."""
    config = uvicorn_config(Settings(data_dir=tmp_path, graceful_seconds=seconds))
    assert config.timeout_graceful_shutdown == bound


class Load:
    """Client threads, each submitting new keys until a request fails after the signal."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.measurements = demo_measurements()
        self.lock = threading.Lock()
        self.acknowledged: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.answered_after_signal = 0
        self.unexpected: list[Any] = []
        self.signalled_at: float | None = None
        self.stop = threading.Event()

    def signalled(self) -> bool:
        with self.lock:
            return self.signalled_at is not None

    def worker(self, number: int) -> None:
        client = Client(self.port, timeout=10)
        sequence = 0
        while not self.stop.is_set():
            key = f"stop-{number}-{sequence}"
            measurement = self.measurements[(number + sequence) % len(self.measurements)]
            sequence += 1
            try:
                answer = client.add(measurement, key=key)
            except (OSError, http.client.HTTPException) as exc:
                client.close()
                with self.lock:
                    self.failed[key] = type(exc).__name__
                    if self.signalled_at is None:
                        self.unexpected.append((key, "failed before the signal", repr(exc)))
                break  # the collector is going away: this client is done
            with self.lock:
                if answer.status == 200:
                    self.acknowledged[key] = answer.json()["measurement_uid"]
                    if self.signalled_at is not None:
                        self.answered_after_signal += 1
                elif answer.status == 503 and answer.json()["error"] == "storage_unavailable":
                    self.failed[key] = "503"
                    break
                else:
                    self.unexpected.append((key, answer.status, answer.body[:200]))
                    break
        client.close()


@pytest.mark.parametrize(
    ("backend", "stop"),
    [
        ("sqlite", signal.SIGTERM),
        ("sqlite", signal.SIGINT),
        ("postgres", signal.SIGTERM),
    ],
    ids=["sqlite-SIGTERM", "sqlite-SIGINT", "postgres-SIGTERM"],
)
def test_stop_under_load(
    backend: str, stop: signal.Signals, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    options = ["--graceful-seconds", str(GRACE)]
    if backend == "postgres":
        options += ["--database", fresh_database(request.getfixturevalue("postgres_url"))]
    log = tmp_path / "collector.log"
    server = ProcessServer(tmp_path / "data", log, *options).start()
    assert server.process is not None
    load = Load(server.port)
    threads = [threading.Thread(target=load.worker, args=(n,), daemon=True) for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS)
        with load.lock:
            load.signalled_at = time.monotonic()
        server.process.send_signal(stop)
        code = server.process.wait(timeout=GRACE + MARGIN + 30)
        took = time.monotonic() - load.signalled_at
        assert code == 0, log.read_text()[-3000:]
        assert took < GRACE + MARGIN, f"the stop took {took:.1f} s"
        for thread in threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "a client was still running after the collector exited"

        assert not load.unexpected, load.unexpected
        assert len(load.acknowledged) > 20, "too little load to mean anything"
        assert load.answered_after_signal > 0, "no request in flight was let finish"
        assert set(load.failed).isdisjoint(load.acknowledged)
        assert len(load.failed) == THREADS  # each client stopped at its first failure
        assert set(load.failed.values()) <= {
            "503",
            "ConnectionRefusedError",
            "ConnectionResetError",
            "RemoteDisconnected",
            "BrokenPipeError",
        }, load.failed

        server.start()
        client = server.client()
        for uid in load.acknowledged.values():
            assert client.get(f"/api/v1/measurements/{uid}").status == 200, uid
        before = [s["measurement_uid"] for s in every_summary(client)]
        assert len(before) == len(set(before)), "duplicate rows"
        assert set(load.acknowledged.values()) <= set(before)
        for key, uid in load.acknowledged.items():  # each acknowledgement is the key's uid
            again = client.add(load.measurements[0], key=key)
            assert again.json() == {"measurement_uid": uid, "status": "duplicate"}
        stored_unacknowledged = 0
        for key in load.failed:  # not acknowledged: a retry stores it, once
            again = client.add(load.measurements[0], key=key)
            assert again.status == 200, again.body
            stored_unacknowledged += again.json()["status"] == "duplicate"
        after = [s["measurement_uid"] for s in every_summary(client)]
        assert len(after) == len(set(after)), "duplicate rows"
        assert len(after) == len(load.acknowledged) + len(load.failed)
        assert len(before) == len(load.acknowledged) + stored_unacknowledged
        print(  # noqa: T201 (the run's figures, shown with pytest -s)
            f"{backend} {stop.name}: exit 0 after {took:.2f} s, {len(load.acknowledged)} "
            f"acknowledged ({load.answered_after_signal} after the signal), failures "
            f"{sorted(load.failed.values())}, {stored_unacknowledged} stored unacknowledged"
        )
        assert server.terminate() == 0
    finally:
        load.stop.set()
        server.kill()
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]


# --- a trickled body -----------------------------------------------------------------------------


def _submission(key: str) -> tuple[bytes, bytes]:
    """The head and the body of ``POST /report/{id}`` for one small measurement."""
    body = json.dumps({"format": "json", "content": envelope()}).encode()
    head = (
        f"POST /report/{REPORT_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _read_one(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the next answer on ``sock``, read to its ``Content-Length`` (not to the
    end of the connection: an answer stands on its own)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended before a whole answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended before a whole answer: {data!r}"
        body += chunk
    return int(head.split()[1]), body


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the next answer on ``sock``."""
    status, body = _read_one(sock)
    return status, json.loads(body)


class Trickler:
    """A submission whose body comes one byte every ``interval`` seconds: never whole in time."""

    def __init__(self, port: int, key: str, interval: float = 0.5) -> None:
        self.head, self.body = _submission(key)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> Trickler:
        self.sock.sendall(self.head + self.body[:1])
        self.thread.start()
        return self

    def _send(self) -> None:
        for byte in self.body[1:-1]:  # never the last byte
            if self.stop.wait(self.interval):
                return
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_trickled_body_is_cut_at_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"
    server = ProcessServer(tmp_path / "data", log, "--graceful-seconds", str(GRACE)).start()
    assert server.process is not None
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    finishing = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    trickler = Trickler(server.port, "trickled")
    try:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_one(idle)[0] == 200  # now idle, kept alive
        head, body = _submission("finishing")
        finishing.sendall(head + body[:10])
        trickler.start()
        time.sleep(0.3)  # both requests are in flight: heads parsed, bodies incomplete

        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert idle.recv(65536) == b"", "an idle keep-alive connection was not closed"
        time.sleep(0.5)
        assert server.process.poll() is None, "the collector did not wait for its requests"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()

        finishing.sendall(body[10:])  # the rest, within the bound: stored and acknowledged
        status, answer = _read_answer(finishing)
        assert status == 200, answer
        assert answer["status"] == "stored"
        uid = answer["measurement_uid"]

        status, answer = _read_answer(trickler.sock)  # cut at the bound
        assert (status, answer["error"]) == (503, "storage_unavailable"), answer
        code = server.process.wait(timeout=GRACE + MARGIN + 30)
        took = time.monotonic() - signalled_at
        assert code == 0, log.read_text()[-3000:]
        assert GRACE - 0.2 < took < GRACE + MARGIN, f"the stop took {took:.1f} s"
        print(f"trickled body: exit 0 after {took:.2f} s (graceful bound {GRACE} s)")  # noqa: T201

        server.start()
        client = server.client()
        assert [s["measurement_uid"] for s in every_summary(client)] == [uid]
        assert client.add(envelope(), key="trickled").json()["status"] == "stored"
        assert server.terminate() == 0
    finally:
        trickler.close()
        idle.close()
        finishing.close()
        server.kill()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]

"""Shared helpers of the spool tests: a scripted collector on 127.0.0.1, fixture measurements.

:class:`FakeCollector` speaks the batch endpoint of docs/design/002-collector.md with an in-memory
store keyed by idempotency key. Each request consumes the next action of its script (then ``ok``):

    ok          answer the batch: stored / duplicate / rejected (a measurement with "reject_me")
    drop        store the batch, then close the connection without answering (a lost response)
    close       close without storing
    503, 500    {"error": "storage_unavailable"} with that status
    429[:N]     rate_limited, with Retry-After: N when given
    401         unauthorized
    html        200 with an HTML page (a captive portal)
    too_large   400 batch_too_large when the batch has more than one item, else ok
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.unit.servers import TEST_SERVICE

FIXTURE = Path(__file__).parent.parent / "data" / "minilab-demo.jsonl"


def fixture_measurements() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def small_catalogue(root: Path, udp_port: int | None = None) -> Path:
    """One service on loopback: text on a closed TCP port, voice (STUN) on ``udp_port`` — a
    closed port answers at once, a bound silent one makes the run last until its deadline."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.toml").write_text('schema = 1\nversion = "2026.11.24"\n')
    body = TEST_SERVICE.format(id="svc", tcp_port=closed_port(), udp_port=udp_port or closed_port())
    (root / "svc.toml").write_text(body)
    return root


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeCollector:
    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.stored: dict[str, dict[str, Any]] = {}
        self.store_count: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def next_action(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def store(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        with self.lock:
            for item in items:
                key, m = item["idempotency_key"], item["measurement"]
                if not isinstance(m, dict) or "reject_me" in m:
                    results.append({"idempotency_key": key, "status": "rejected",
                                    "error": "bad_type", "detail": "test rejection"})  # fmt: skip
                elif m.get("later"):
                    results.append({"idempotency_key": key, "status": "rejected",
                                    "error": "storage_unavailable", "detail": "later"})  # fmt: skip
                elif key in self.stored:
                    uid = self.stored[key]["uid"]
                    results.append({"idempotency_key": key, "status": "duplicate",
                                    "measurement_uid": uid})  # fmt: skip
                else:
                    uid = f"20261124000000.000000_ZZ_msgwatch_{len(self.stored):016x}"
                    self.stored[key] = {"uid": uid, "measurement": m}
                    self.store_count[key] = self.store_count.get(key, 0) + 1
                    results.append({"idempotency_key": key, "status": "stored",
                                    "measurement_uid": uid})  # fmt: skip
        return results


def _handler(fake: FakeCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None,
                  ctype: str = "application/json") -> None:  # fmt: skip
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def _error(self, status: int, reason: str, extra: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps({"error": reason, "detail": "x"}).encode(), extra)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body = json.loads(raw)
            items = body["measurements"]
            action = fake.next_action()
            with fake.lock:
                fake.requests.append({
                    "path": self.path, "action": action, "auth": self.headers.get("Authorization"),
                    "keys": [i["idempotency_key"] for i in items], "bytes": len(raw),
                })  # fmt: skip
            self.close_connection = True
            if action == "drop":
                fake.store(items)
                return  # no answer: the server closes the connection
            if action == "close":
                return
            if action in ("503", "500"):
                return self._error(int(action), "storage_unavailable")
            if action.startswith("429"):
                _, _, after = action.partition(":")
                return self._error(429, "rate_limited", {"Retry-After": after} if after else None)
            if action == "401":
                return self._error(401, "unauthorized")
            if action == "html":
                return self._send(200, b"<html>Welcome to the hotel wifi</html>", ctype="text/html")
            if action == "too_large" and len(items) > 1:
                return self._error(400, "batch_too_large")
            self._send(200, json.dumps({"results": fake.store(items)}).encode())

    return Handler


@contextmanager
def fake_collector(script: list[str] | None = None) -> Iterator[FakeCollector]:
    fake = FakeCollector(script)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()

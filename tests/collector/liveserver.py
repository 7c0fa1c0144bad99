"""Real collectors on loopback for the tests: in a thread (uvicorn, uvloop, httptools, the real
store) or as a ``msgwatch collector serve`` subprocess; and a small HTTP client on http.client that
can bind a chosen 127.0.0.x source address (to test that the client's address is scrubbed)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import uvicorn

from msgwatch.collector.app import create_app
from msgwatch.collector.server import uvicorn_config
from msgwatch.collector.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OONI_SAMPLES = Path("/work/shared/ooni-samples/real.jsonl")
REPORT_ID = "20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPtQ"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_measurements() -> list[dict[str, Any]]:
    lines = (DATA / "minilab-demo.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def ooni_lines() -> list[bytes]:
    return OONI_SAMPLES.read_bytes().splitlines() if OONI_SAMPLES.exists() else []


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    port: int
    source: str = "127.0.0.1"
    token: str | None = None
    timeout: float = 30.0
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout, source_address=(self.source, 0)
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        self.close()  # a kept-alive socket left to the collector is a ResourceWarning (an error)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token is not None:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                self.close()  # a keep-alive connection the server closed: once more, fresh
                if attempt == 2:
                    raise
                continue
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
            if answer.headers.get("connection", "").lower() == "close":
                self.close()
            return answer
        raise AssertionError("unreachable")

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, value: Any = None, raw: bytes | None = None, **headers: str
    ) -> Answer:
        body = raw if raw is not None else json.dumps(value).encode()
        return self.request(
            "POST", path, body, {k.replace("_", "-"): v for k, v in headers.items()}
        )

    def add(self, measurement: dict[str, Any], key: str | None = None) -> Answer:
        extra = {"Idempotency-Key": key} if key is not None else {}
        body = json.dumps({"format": "json", "content": measurement}).encode()
        return self.request("POST", f"/report/{REPORT_ID}", body, extra)


class ThreadServer:
    """``create_app(settings)`` served by a real uvicorn in a thread of the test process."""

    def __init__(self, settings: Settings, **app_options: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_options)
        # The production configuration, with a short graceful stop for the tests' teardown.
        config = uvicorn_config(replace(settings, graceful_seconds=2), app=self.app)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def port(self) -> int:
        return self.settings.port

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the collector did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def client(self, **options: Any) -> Client:
        return Client(self.port, **options)


@contextlib.contextmanager
def thread_server(settings: Settings, **app_options: Any) -> Iterator[ThreadServer]:
    server = ThreadServer(settings, **app_options).start()
    try:
        yield server
    finally:
        server.stop()


def serve_command(data_dir: Path, port: int, *options: str) -> list[str]:
    """``msgwatch collector serve`` on 127.0.0.1:``port`` with ``data_dir``."""
    return [sys.executable, "-m", "msgwatch", "collector", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data_dir), *options]  # fmt: skip


class ProcessServer:
    """``msgwatch collector serve …`` as a child process; its output goes to ``log``."""

    def __init__(self, data_dir: Path, log: Path, *options: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.log = log
        self.options = options
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ProcessServer:
        command = serve_command(self.data_dir, self.port, *self.options)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the collector exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("the collector did not start in time")

    def kill(self) -> None:
        """``kill -9``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def client(self, **options: Any) -> Client:
        return Client(self.port, **options)


def every_summary(client: Client) -> list[dict[str, Any]]:
    """Every summary of the read API, page after page."""
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = "/api/v1/measurements?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(path).json()
        results += page["results"]
        cursor = page["next_cursor"]
        if cursor is None:
            return results


def make_settings(data_dir: Path, **changes: Any) -> Settings:
    return Settings(data_dir=data_dir, host="127.0.0.1", port=free_port(), **changes)


def envelope(**changes: Any) -> dict[str, Any]:
    """A small valid measurement (OONI's signal test shape)."""
    measurement: dict[str, Any] = {
        "annotations": {"engine_name": "test"},
        "data_format_version": "0.2.0",
        "input": None,
        "measurement_start_time": "2024-01-02 03:04:05",
        "probe_asn": "AS30722",
        "probe_cc": "IT",
        "probe_ip": "127.0.0.1",
        "report_id": REPORT_ID,
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_keys": {"signal_backend_status": "ok", "signal_backend_failure": None},
        "test_name": "signal",
        "test_runtime": 1.5,
        "test_start_time": "2024-01-02 03:04:00",
        "test_version": "0.2.3",
    }
    measurement.update(changes)
    return measurement


class FakeClock:
    """A monotonic clock the tests move by hand (rate limits without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

"""``kill -9`` of a real ``msgwatch collector serve`` under sustained load, several times.

Client threads submit without pause, each measurement under its own idempotency key, and retry the
same key on any failure (refused connection, reset, timeout, 5xx) until it is acknowledged. The
collector is killed with SIGKILL at random moments and restarted. At the end, after one more kill
and restart (so the final state is a recovered one):

- every acknowledged ``measurement_uid`` is fetchable;
- the index holds exactly one measurement per distinct key that was submitted (each was retried
  until acknowledged), no more: a retry of a measurement stored before the kill was not stored twice;
- a key submitted again answers ``duplicate`` with the uid first acknowledged.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.collector.liveserver import Client, ProcessServer, demo_measurements, every_summary
from tests.collector.pgserver import fresh_database

THREADS = 4
KILLS = 3


class Load:
    def __init__(self, port: int) -> None:
        self.port = port
        self.measurements = demo_measurements()
        self.lock = threading.Lock()
        self.attempted: set[str] = set()
        self.acknowledged: dict[str, str] = {}
        self.retries = 0
        self.unexpected: list[Any] = []
        self.stop = threading.Event()

    def worker(self, number: int) -> None:
        client = Client(self.port, timeout=10)
        sequence = 0
        while not self.stop.is_set():
            key = f"crash-{number}-{sequence}"
            measurement = self.measurements[(number + sequence) % len(self.measurements)]
            sequence += 1
            with self.lock:
                self.attempted.add(key)
            while True:  # the same key until acknowledged, even after stop is set
                try:
                    answer = client.add(measurement, key=key)
                except (OSError, http.client.HTTPException):
                    client.close()
                    with self.lock:
                        self.retries += 1
                    time.sleep(0.05)
                    continue
                if answer.status == 200:
                    with self.lock:
                        self.acknowledged[key] = answer.json()["measurement_uid"]
                    break
                if answer.status >= 500:
                    with self.lock:
                        self.retries += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.unexpected.append((key, answer.status, answer.body[:200]))
                break
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_under_load(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    options = []
    if backend == "postgres":
        options = ["--database", fresh_database(request.getfixturevalue("postgres_url"))]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    log = tmp_path / "collector.log"
    server = ProcessServer(tmp_path / "data", log, *options).start()
    load = Load(server.port)
    threads = [threading.Thread(target=load.worker, args=(n,), daemon=True) for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.4, 1.5))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        time.sleep(rng.uniform(0.3, 0.8))
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"a client never got its acknowledgement (seed {seed})"
        server.kill()  # once more, idle this time: the final state is a recovered one
        server.start()

        assert not load.unexpected, load.unexpected
        assert load.attempted == set(load.acknowledged)
        assert len(load.acknowledged) > 20, "too little load to mean anything"
        assert load.retries > 0, "no kill happened during a submission"
        client = server.client()
        for uid in load.acknowledged.values():
            assert client.get(f"/api/v1/measurements/{uid}").status == 200, (uid, seed)
        summaries = every_summary(client)
        uids = [s["measurement_uid"] for s in summaries]
        assert len(uids) == len(set(uids)), f"duplicate rows (seed {seed})"
        assert len(uids) == len(load.attempted), (len(uids), len(load.attempted), seed)
        assert set(uids) == set(load.acknowledged.values())
        for key in rng.sample(sorted(load.acknowledged), 10):
            again = client.add(load.measurements[0], key=key)
            assert again.json() == {
                "measurement_uid": load.acknowledged[key],
                "status": "duplicate",
            }
        client.close()
        print(  # noqa: T201 (the run's figures, shown with pytest -s)
            f"{backend}: {len(load.acknowledged)} acknowledged, {load.retries} retries, "
            f"{KILLS + 1} kills (seed {seed})"
        )
        assert server.terminate() == 0  # SIGTERM: a graceful stop, a clean exit
    finally:
        load.stop.set()
        server.kill()
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]

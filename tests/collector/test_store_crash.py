"""``kill -9`` of a process doing sustained ``put_many``, several times, at random moments.

The worker (this module run as a script) opens the store and has 20 tasks call ``put_many`` with
one new key each, without pause; after each call returns it prints ``key uid``, flushed — so every
printed line is an acknowledgement. The test kills it with SIGKILL at a random moment (once even
before it has finished opening, i.e. possibly during recovery), starts it again on the same data
directory, and so on. Afterwards, in a store opened by the test (so after a last recovery):

- every acknowledged key is in the index with its acknowledged uid (putting it again answers
  ``duplicate`` with that uid) and ``get()`` returns its measurement;
- putting every acknowledged key again stores nothing (duplicates only);
- the index holds exactly the archive: the same uids, one per distinct key, and no torn member.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from msgwatch.collector.store import Query, Submission, open_store
from msgwatch.collector.store.archive import Archive, lines_of
from msgwatch.collector.store.records import parse_record
from msgwatch.collector.store.writer import DurableStore

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "data" / "minilab-demo.jsonl"
KILLS = 4
TASKS = 10


class Worker:
    def __init__(self, data_dir: Path, database: str | None, run: str) -> None:
        self.lines: list[str] = []
        self.opened = threading.Event()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.collector.test_store_crash",
                str(data_dir),
                database or "",
                run,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut by the kill: never an acknowledgement
            text = raw.decode().strip()
            if text == "open":
                self.opened.set()
            elif text:
                self.lines.append(text)

    def kill(self) -> dict[str, str]:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return dict(line.split() for line in self.lines)


def crash_repeatedly(data_dir: Path, database: str | None) -> dict[str, str]:
    acknowledged: dict[str, str] = {}
    rng = random.Random()
    for cycle in range(KILLS):
        worker = Worker(data_dir, database, f"run{cycle}")
        if cycle == 1:  # anywhere, possibly while opening and recovering
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            assert worker.opened.wait(30), "the worker did not open the store"
            time.sleep(rng.uniform(0.1, 0.35))
        acknowledged.update(worker.kill())
    return acknowledged


def check(data_dir: Path, database: str | None, acknowledged: dict[str, str]) -> None:
    measurements = [orjson.loads(line) for line in DEMO.read_bytes().splitlines()]

    async def main() -> None:
        store = await open_store(data_dir, database)
        assert isinstance(store, DurableStore)
        try:
            keys = sorted(acknowledged)
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                receipts = await store.put_many([Submission(k, measurements[0]) for k in chunk])
                assert all(r.duplicate for r in receipts), "a re-put stored something new"
                assert [r.measurement_uid for r in receipts] == [acknowledged[k] for k in chunk]
            for start in range(0, len(keys), 200):  # the reader threads decompress in parallel
                chunk = keys[start : start + 200]
                got = await asyncio.gather(*(store.get(acknowledged[k]) for k in chunk))
                for key, stored in zip(chunk, got, strict=True):
                    assert stored is not None and stored["test_name"] == "msgwatch_service", key
            indexed: set[str] = set()
            cursor = None
            while True:
                page = await store.query(Query(limit=1000, cursor=cursor))
                indexed |= {r["measurement_uid"] for r in page.results}
                if (cursor := page.next_cursor) is None:
                    break
        finally:
            await store.close()
        archive = Archive(data_dir)
        archived: dict[str, str] = {}
        for file in archive.files():
            scan = archive.scan(file, 0)
            for member in scan:
                for _, line in lines_of(member.data):
                    parsed = parse_record(line)
                    assert parsed is not None
                    assert parsed[1] not in archived, f"{parsed[1]} is twice in the archive"
                    archived[parsed[1]] = parsed[0]
            assert scan.torn_at is None and not scan.skipped
        assert indexed == set(archived.values())
        assert len(indexed) == len(archived)  # index count == distinct keys in the archive
        assert set(acknowledged) <= set(archived)

    asyncio.run(main())


def test_sigkill_under_sustained_writes_sqlite(tmp_path: Path) -> None:
    acknowledged = crash_repeatedly(tmp_path, None)
    assert len(acknowledged) > 100, "the worker acknowledged almost nothing"
    check(tmp_path, None, acknowledged)


def test_sigkill_under_sustained_writes_postgresql(tmp_path: Path, postgres_url: str) -> None:
    from tests.collector.pgserver import fresh_database

    database = fresh_database(postgres_url)
    acknowledged = crash_repeatedly(tmp_path, database)
    assert len(acknowledged) > 100, "the worker acknowledged almost nothing"
    check(tmp_path, database, acknowledged)


# --- the worker -------------------------------------------------------------------------------------


async def work(data_dir: Path, database: str | None, run: str) -> None:
    measurements: list[dict[str, Any]] = [
        orjson.loads(line) for line in DEMO.read_bytes().splitlines()
    ]
    store = await open_store(data_dir, database)
    out = sys.stdout.buffer
    out.write(b"open\n")
    out.flush()

    async def client(number: int) -> None:
        sequence = 0
        while True:
            key = f"{run}-{number}-{sequence}"
            measurement = measurements[(number + sequence) % len(measurements)]
            sequence += 1
            (receipt,) = await store.put_many([Submission(key, measurement)])
            out.write(f"{key} {receipt.measurement_uid}\n".encode())  # one write(2): whole lines
            out.flush()

    await asyncio.gather(*(client(n) for n in range(TASKS)))


if __name__ == "__main__":
    os.environ.setdefault("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    asyncio.run(work(Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3]))

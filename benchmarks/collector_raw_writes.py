"""The plain cost of the collector's durable writes, without HTTP: the store alone.

    .venv/bin/python benchmarks/collector_raw_writes.py                   # SQLite and PostgreSQL, 20 s
    .venv/bin/python benchmarks/collector_raw_writes.py --seconds 5 --backend sqlite

50 concurrent asyncio tasks (``--clients``) each call ``store.put_many([one submission])`` in a
loop, every submission under its own idempotency key, with realistic 10–30 KB measurements: the
msgwatch measurements of ``tests/data/minilab-demo.jsonl`` in that size range, each copy with its
timings and identifiers varied so that compression sees distinct measurements, not one repeated.
Every call returns only when its measurement is durable (archive member ``fsync``ed, index
committed), exactly as the collector acknowledges. Prints measurements/s and the p50/p99 latency of
a call; the first second is warm-up and not counted.

PostgreSQL: a throwaway server is started with ``running_postgres()`` (tests/collector/pgserver.py).

For ``benchmarks/collector_load.py`` (the HTTP load test, which divides its rate by this one):
``raw_write_rate(data_dir, database, seconds)`` → measurements/s, and :func:`measure` → all figures.
With a ``database`` URL the run uses a fresh database on that server, so the caller's database is
left untouched for its own collector.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from msgwatch.collector.store import Submission, open_store  # noqa: E402

DEMO = ROOT / "tests" / "data" / "minilab-demo.jsonl"
WARMUP_S = 1.0
SIZES = (10_000, 30_000)


@dataclass(frozen=True)
class RawWriteFigures:
    backend: str
    clients: int
    seconds: float
    measurements: int
    per_second: float
    p50_ms: float
    p99_ms: float
    mean_bytes: int

    def line(self) -> str:
        return (
            f"{self.backend:10s} clients={self.clients} seconds={self.seconds:g}: "
            f"{self.per_second:7.0f} measurements/s durable, p50 {self.p50_ms:6.1f} ms, "
            f"p99 {self.p99_ms:6.1f} ms (mean measurement {self.mean_bytes / 1000:.1f} KB)"
        )


def make_measurements(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` distinct 10–30 KB measurements varied from the demo run's."""
    rng = random.Random(seed)
    templates = [
        line for line in DEMO.read_bytes().splitlines() if SIZES[0] <= len(line) <= SIZES[1]
    ]
    if not templates:
        raise RuntimeError(f"no 10–30 KB measurement in {DEMO}")

    def vary(value: Any) -> Any:
        if isinstance(value, float):
            return round(value * rng.uniform(0.5, 1.5), 6)
        if isinstance(value, dict):
            return {k: vary(v) for k, v in value.items()}
        if isinstance(value, list):
            return [vary(v) for v in value]
        return value

    out: list[dict[str, Any]] = []
    for number in range(count):
        measurement = vary(orjson.loads(templates[number % len(templates)]))
        measurement["report_id"] = (
            f"20261124T103225Z_msgwatch_ZZ_0_n1_{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        )
        day, hour = 1 + rng.randrange(28), rng.randrange(24)
        measurement["measurement_start_time"] = (
            f"2026-11-{day:02d} {hour:02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
        )
        out.append(measurement)
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(
    data_dir: Path,
    database: str | None,
    seconds: float,
    clients: int,
    measurements: list[dict[str, Any]],
) -> tuple[int, list[float]]:
    store = await open_store(data_dir, database)
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    counted = 0
    started = time.perf_counter()
    counting_from = started + WARMUP_S
    stop_at = counting_from + seconds

    async def client(number: int) -> None:
        nonlocal counted
        sequence = 0
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            measurement = measurements[(number * 7919 + sequence) % len(measurements)]
            submission = Submission(f"bench-{run}-{number}-{sequence}", measurement)
            sequence += 1
            (receipt,) = await store.put_many([submission])
            done = time.perf_counter()
            if receipt.duplicate:
                raise AssertionError(f"{submission.idempotency_key} answered as a duplicate")
            if now >= counting_from and done <= stop_at:
                counted += 1
                latencies.append(done - now)

    try:
        await asyncio.gather(*(client(n) for n in range(clients)))
    finally:
        await store.close()
    return counted, latencies


def measure(
    data_dir: Path,
    database: str | None = None,
    seconds: float = 20.0,
    clients: int = 50,
    measurements: list[dict[str, Any]] | None = None,
) -> RawWriteFigures:
    """Run the write load against a store in ``data_dir`` (a fresh database when PostgreSQL)."""
    if database is not None:
        from tests.collector.pgserver import fresh_database

        database = fresh_database(database)
    pool = measurements if measurements is not None else make_measurements(1000)
    run = _event_loop_runner()
    counted, latencies = run(_drive(data_dir, database, seconds, clients, pool))
    return RawWriteFigures(
        backend="postgresql" if database else "sqlite",
        clients=clients,
        seconds=seconds,
        measurements=counted,
        per_second=counted / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        mean_bytes=sum(len(orjson.dumps(m)) for m in pool) // len(pool),
    )


def raw_write_rate(
    data_dir: Path, database: str | None = None, seconds: float = 20.0, clients: int = 50
) -> float:
    """Durable measurements per second of the store alone (what collector_load.py divides by)."""
    return measure(data_dir, database, seconds, clients).per_second


def _event_loop_runner() -> Any:
    """uvloop's runner when installed (the collector serves on uvloop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql", "both"], default="both", help="index"
    )
    args = parser.parse_args()
    os.environ.setdefault("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    pool = make_measurements(1000)
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="collector-raw-") as tmp:
            if name == "sqlite":
                figures = measure(Path(tmp), None, args.seconds, args.clients, pool)
            else:
                from tests.collector.pgserver import running_postgres

                with running_postgres() as url:
                    figures = measure(Path(tmp), url, args.seconds, args.clients, pool)
        print(figures.line(), flush=True)


if __name__ == "__main__":
    main()

"""Submission load on the collector: 50 concurrent clients on loopback, 10–30 KB measurements.

    .venv/bin/python benchmarks/collector_load.py        # SQLite and PostgreSQL, both routes, 60 s
    .venv/bin/python benchmarks/collector_load.py --seconds 20 --backend sqlite --route report
    .venv/bin/python benchmarks/collector_load.py --port 8080 --pid PID   # a running collector

The collector runs as a separate process (``msgwatch collector serve``, logging at info as in
production), started here with a fresh data directory; for PostgreSQL a throw-away server is started with ``running_postgres()`` from
``tests/collector/pgserver.py``. The load generator shares the machine's cores with it, so it is made
cheap: requests are pre-serialised bytes (only the idempotency key changes, spliced in), each client
is one keep-alive connection on raw asyncio streams, and responses are parsed by hand (status line,
``content-length``, body).

Routes: ``report`` is OONI's ``POST /report/{id}`` with an ``Idempotency-Key`` header; ``batch`` is
``POST /api/v1/submit`` with one item per request. Every acknowledgement (a ``measurement_uid``) is
durable by the collector's contract; the figures are acknowledged measurements per second and the
p50/p99 latency of an acknowledgement, the collector's CPU use (from ``/proc``), and the ratio to
the plain durable-write rate of the store alone, measured first by
``benchmarks/collector_raw_writes.py`` with the same clients and the same kind of measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "tests" / "data" / "minilab-demo.jsonl"
REPORT_ID = "20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPtQ"


# --- requests, pre-serialised ----------------------------------------------------------------------


def measurements(count: int = 1000) -> list[bytes]:
    """``count`` distinct 10–30 KB measurements, compact JSON: the demo run's, varied exactly as
    ``collector_raw_writes.py`` varies them, so both benchmarks compress the same kind of data."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from collector_raw_writes import make_measurements  # type: ignore[import-not-found]

    return [orjson.dumps(m) for m in make_measurements(count)]


class Requests:
    """Request bytes for one route; ``make(i)`` splices a fresh idempotency key into a template."""

    def __init__(self, route: str, port: int, prefix: str, pool: list[bytes]) -> None:
        self.route = route
        self.prefix = prefix.encode()
        self.templates: list[tuple[bytes, bytes, bytes]] = []
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        for measurement in pool:
            if route == "report":
                body = b'{"format":"json","content":' + measurement + b"}"
                head = (
                    f"POST /report/{REPORT_ID} HTTP/1.1\r\n".encode()
                    + host
                    + b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + b"Idempotency-Key: "
                )
                self.templates.append((head, b"\r\n\r\n" + body, b""))
            else:
                # the key's length is fixed (prefix + 12 digits), so Content-Length is known
                key_length = len(self.prefix) + 12
                before = b'{"measurements":[{"idempotency_key":"'
                after = b'","measurement":' + measurement + b"}]}"
                length = len(before) + key_length + len(after)
                head = (
                    b"POST /api/v1/submit HTTP/1.1\r\n"
                    + host
                    + b"Content-Type: application/json\r\n"
                    + f"Content-Length: {length}\r\n\r\n".encode()
                    + before
                )
                self.templates.append((head, after, b""))

    def make(self, number: int) -> bytes:
        head, tail, _ = self.templates[number % len(self.templates)]
        return head + self.prefix + b"%012d" % number + tail


# --- the clients -----------------------------------------------------------------------------------


@dataclass
class Tally:
    acknowledged: int = 0
    failed: int = 0
    cpu: float = 0.0  # the collector's CPU seconds per second of the measured window
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def client(
    port: int,
    requests: Requests,
    counter: Iterator[int],
    stop_at: float,
    measure_from: float,
    tally: Tally,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < stop_at:
            request = requests.make(next(counter))
            writer.write(request)
            status, body = await read_response(reader)
            done = time.perf_counter()
            if done < measure_from:
                continue
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status == 200 and b'"measurement_uid"' in body:
                tally.acknowledged += 1
                tally.latencies.append(done - now)
            else:
                tally.failed += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (Linux ``/proc``); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    port: int,
    route: str,
    clients: int,
    seconds: float,
    warmup: float,
    pool: list[bytes],
    pid: int | None = None,
) -> Tally:
    requests = Requests(route, port, f"bench-{uuid.uuid4().hex[:8]}-{route}.", pool)
    counter = iter(range(10**12))
    tally = Tally()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        before = cpu_seconds(pid)
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        tally.cpu = (cpu_seconds(pid) - before) / seconds

    await asyncio.gather(
        sample_cpu(),
        *(client(port, requests, counter, stop_at, measure_from, tally) for _ in range(clients)),
    )
    return tally


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the collector under test ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def collector(data_dir: Path, database: str | None) -> Iterator[tuple[int, int]]:
    """``msgwatch collector serve`` on a free port, logging as in production (the access log at
    info) into ``collector.log`` beside the data directory."""
    port = free_port()
    command = [
        sys.executable, "-m", "msgwatch", "collector", "serve", "--port", str(port),
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    if database:
        command += ["--database", database]
    log = (data_dir.parent / "collector.log").open("ab")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError("the collector exited")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the collector did not start") from None
                time.sleep(0.05)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def backend(name: str) -> Iterator[str | None]:
    if name == "sqlite":
        yield None
        return
    from tests.collector.pgserver import running_postgres

    with running_postgres() as url:
        yield url


def raw_write_rate(data_dir: Path, database: str | None, seconds: float, clients: int) -> float:
    """Measurements/s of the plain durable write (benchmarks/collector_raw_writes.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from collector_raw_writes import raw_write_rate as measure_raw

    return float(measure_raw(data_dir, database, seconds, clients))


def report(name: str, route: str, tally: Tally, clients: int, seconds: float, raw: float) -> None:
    rate = tally.acknowledged / seconds
    print(
        f"{name:10s} {route:6s} clients={clients} seconds={seconds:g}: "
        f"{rate:7.0f} measurements/s acknowledged (durable), "
        f"p50 {percentile(tally.latencies, 0.50) * 1000:6.1f} ms, "
        f"p99 {percentile(tally.latencies, 0.99) * 1000:6.1f} ms, "
        f"failed {tally.failed}, statuses {tally.statuses}, "
        f"collector CPU {tally.cpu:.2f} cores; "
        f"raw durable writes {raw:.0f}/s, ratio {rate / raw:.2f}",
        flush=True,
    )


def run(name: str, routes: list[str], clients: int, seconds: float, warmup: float) -> None:
    import uvloop

    pool = measurements()
    with backend(name) as server, tempfile.TemporaryDirectory(prefix="collector-load-") as tmp:
        raw_seconds = min(seconds, 20.0)
        raw = raw_write_rate(Path(tmp) / "raw", server, raw_seconds, clients)
        print(
            f"{name:10s} store alone (collector_raw_writes, {raw_seconds:g} s): "
            f"{raw:.1f} durable measurements/s",
            flush=True,
        )
        database = None
        if server is not None:
            from tests.collector.pgserver import fresh_database

            database = fresh_database(server)
        with collector(Path(tmp) / "data", database) as (port, pid):
            for route in routes:
                tally = uvloop.run(drive(port, route, clients, seconds, warmup, pool, pid))
                report(name, route, tally, clients, seconds, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--route", choices=["report", "batch", "both"], default="both")
    parser.add_argument("--port", type=int, help="drive an already running collector instead")
    parser.add_argument("--pid", type=int, help="that collector's process (for its CPU use)")
    args = parser.parse_args()
    routes = ["report", "batch"] if args.route == "both" else [args.route]
    if args.port:
        import uvloop

        pool = measurements()
        for route in routes:
            tally = uvloop.run(
                drive(args.port, route, args.clients, args.seconds, args.warmup, pool, args.pid)
            )
            print(
                f"{route}: {tally.acknowledged / args.seconds:.0f}/s, "
                f"p50 {percentile(tally.latencies, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(tally.latencies, 0.99) * 1000:.1f} ms, {tally.statuses}, "
                f"collector CPU {tally.cpu:.2f} cores"
            )
        return
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    os.environ.setdefault("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    for name in names:
        run(name, routes, args.clients, args.seconds, args.warmup)


if __name__ == "__main__":
    main()

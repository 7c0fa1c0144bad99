"""The collector under hostile clients (issue 9, items 3 and 4), on loopback, default limits.

    .venv/bin/python benchmarks/collector_hostile.py                 # the whole run, ~2 min
    .venv/bin/python benchmarks/collector_hostile.py --slow 1100 --seconds 30
    PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/collector_hostile.py   # another tree

Starts a real ``msgwatch collector serve --host 127.0.0.1`` with a fresh data directory and its
default limits (as the README's ``--host 0.0.0.0`` deployment has them) and the usual soft limit of
1,024 open files (``--nofile``: systemd's default, and most shells'), then, one after the other:

1. **huge heads**: four parallel requests, each with a 200 MB header field (the report's attack);
   what each client got back, and the collector's RSS afterwards;
2. **slow heads from one address**: ``--slow`` connections (1,100) from 127.0.2.1, each trickling a
   request head one header line per second and reconnecting whenever it is closed;
3. **slow heads from many addresses**: the same number spread over 110 addresses (10 each), which
   the per-client bound does not stop: the total bound and its eviction must.

During phases 2 and 3, four legitimate clients (127.0.3.x) submit measurements one after the
other, each on a fresh connection (as msgwatch's spool does); printed: their success rate and
latency (p50, p99, max), the attackers' connections and how many were cut, the collector's RSS
before and after, and its transport counters from ``/metrics``. The attackers run in one asyncio
process; the collector is a separate process on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.collector.liveserver import REPORT_ID, Client, envelope, free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(data_dir: Path, log: Path, nofile: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    soft_text, _, hard_text = nofile.partition(":")

    def limit_files() -> None:  # in the child: the open-file limit a deployment starts with
        hard = int(hard_text) if hard_text else resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(soft_text), hard))

    command = [sys.executable, "-m", "msgwatch", "collector", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=limit_files
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the collector exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the collector did not start")


def transport_metrics(port: int) -> str:
    try:
        text = Client(port, source="127.0.0.99", timeout=10).get("/metrics").body.decode()
    except OSError as exc:
        return f"(no /metrics: {exc})"
    wanted = re.compile(r"^msgwatch_collector_(connections|forwarded)\S* [^0]", re.M)
    return "\n".join(line for line in text.splitlines() if wanted.match(line)) or "(none)"


# --- phase 1: huge heads ---------------------------------------------------------------------


def huge_head(port: int, source: str, megabytes: int, out: list[str]) -> None:
    sock = socket.socket()
    sock.settimeout(60)
    sock.bind((source, 0))
    started = time.monotonic()
    sent = 0
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: c\r\nX-Big: ")
        block = b"a" * (1 << 20)
        for _ in range(megabytes):
            sock.sendall(block)
            sent += 1
        sock.sendall(b"\r\n\r\n")
        answer = sock.recv(200)
    except OSError as exc:
        answer = b""
        with contextlib.suppress(OSError):
            answer = sock.recv(200)
        if not answer:
            answer = f"{type(exc).__name__}".encode()
    finally:
        sock.close()
    first = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    out.append(f"{first!r} after {sent} MB sent, {time.monotonic() - started:.1f} s")


def phase_huge_heads(port: int, pid: int) -> None:
    print("== 4 parallel requests with a 200 MB header field")
    before = rss_mb(pid)
    out: list[str] = []
    threads = [
        threading.Thread(target=huge_head, args=(port, f"127.0.1.{i + 1}", 200, out))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for line in out:
        print(f"   client got {line}")
    time.sleep(1)
    print(f"   collector RSS {before:.0f} MB before, {rss_mb(pid):.0f} MB after")


# --- phases 2 and 3: slow heads, legitimate submissions --------------------------------------


class Slow:
    def __init__(self) -> None:
        self.connected = 0
        self.cut = 0
        self.failed = 0
        self.open = 0
        self.stop = False


async def slow_client(port: int, source: str, stats: Slow) -> None:
    while not stats.stop:
        try:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10
            )
            reader, writer = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError):
            stats.failed += 1
            await asyncio.sleep(1)
            continue
        stats.connected += 1
        stats.open += 1
        try:
            writer.write(b"POST /api/v1/submit HTTP/1.1\r\nHost: c\r\n")
            while not stats.stop:
                await writer.drain()
                try:  # one header line a second; an EOF (or reset) means we were cut
                    if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                        break
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")
        except OSError:
            pass
        finally:
            stats.open -= 1
            if not stats.stop:
                stats.cut += 1
            writer.close()
        await asyncio.sleep(0.5)


def legit(port: int, source: str, until: float, results: list[tuple[bool, float]]) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        body = json.dumps({"format": "json", "content": envelope(test_runtime=n)}).encode()
        client = Client(port, source=source, timeout=10)
        started = time.monotonic()
        try:
            ok = client.post(f"/report/{REPORT_ID}", raw=body, Connection="close").status == 200
        except OSError:
            ok = False
        finally:
            client.close()
        results.append((ok, time.monotonic() - started))
        time.sleep(0.05)


def phase_slow(port: int, pid: int, count: int, addresses: int, seconds: float) -> None:
    per = -(-count // addresses)
    print(f"== {count} slow connections from {addresses} address(es), {seconds:g} s")
    before = rss_mb(pid)
    stats = Slow()
    results: list[tuple[bool, float]] = []

    async def attack() -> None:
        tasks = []
        for i in range(count):
            source = f"127.0.{4 + i // per // 250}.{1 + (i // per) % 250}"
            tasks.append(asyncio.create_task(slow_client(port, source, stats)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # let them pile up, then measure
        print(f"   slow connections open after 3 s: {stats.open}")
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=legit, args=(port, f"127.0.3.{i + 1}", until, results))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.5)
        stats.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(attack())
    ok = [latency for good, latency in results if good]
    latencies = sorted(latency for _, latency in results)

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    print(
        f"   legitimate submissions: {len(ok)}/{len(results)} succeeded "
        f"({100 * len(ok) / max(1, len(results)):.1f} %), latency p50 {quantile(0.5) * 1000:.0f} "
        f"ms, p99 {quantile(0.99) * 1000:.0f} ms, max {quantile(1.0) * 1000:.0f} ms"
    )
    print(
        f"   slow connections: {stats.connected} made, {stats.cut} cut by the collector, "
        f"{stats.failed} connects failed"
    )
    print(f"   collector RSS {before:.0f} MB before, {rss_mb(pid):.0f} MB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1100, help="slow connections (1100)")
    parser.add_argument("--seconds", type=float, default=30, help="legitimate load per phase")
    parser.add_argument("--skip-huge", action="store_true", help="skip the 4 × 200 MB heads")
    parser.add_argument(
        "--nofile",
        default="1024",
        metavar="SOFT[:HARD]",
        help="the collector's open-file limit at start (1024: systemd's and most shells' soft "
        "limit; the hard limit is left as it is unless given)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msgwatch-hostile-") as tmp:
        log = Path(tmp) / "serve.log"
        process, port = start(Path(tmp) / "data", log, args.nofile)
        try:
            print(
                f"collector pid {process.pid}, open-file limit at start {args.nofile}, "
                f"RSS {rss_mb(process.pid):.0f} MB"
            )
            if not args.skip_huge:
                phase_huge_heads(port, process.pid)
            phase_slow(port, process.pid, args.slow, 1, args.seconds)
            time.sleep(2)
            phase_slow(port, process.pid, args.slow, 110, args.seconds)
            print("== the collector's transport counters (/metrics, non-zero)")
            print("   " + transport_metrics(port).replace("\n", "\n   "))
            warnings = [x for x in log.read_text().splitlines() if "WARNING" in x]
            print(f"== its log: {len(warnings)} warning lines, the first ones:")
            for line in warnings[:8]:
                print(f"   {line}")
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    sys.stdout.flush()


if __name__ == "__main__":
    main()

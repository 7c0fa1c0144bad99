"""The dashboard's speed over a year of a large observatory: each view's data query, then the time
Chromium takes to render each page (issue 12, "Performance").

    .venv/bin/python benchmarks/dashboard.py                      # the synthetic observatory (cached)
    .venv/bin/python benchmarks/dashboard.py --lake DIR --runs 30 --loads 10 --slow 5

1. **Data.** For each view of :class:`msgwatch.dashboard.data.Observatory` (overview, network,
   comparison, events, event, measurement): ``--runs`` parameter sets drawn with a seeded
   ``random.Random`` from the lake's own networks, series, events and measurements, and windows of
   the default (the last 30 days), 1, 7, 30, 90 or 365 days. *Cold*: the first call with those
   parameters on a fresh ``Observatory`` (DuckDB keeps nothing between calls; the operating
   system's file cache is not dropped); *warm*: the same call again. p50/p95 against 300 ms. Every
   SQL statement the calls run is timed (``Reader._run``); the ``--slow`` slowest are printed with
   their text, so a slow view can be traced to its query.
2. **Browser.** ``create_app`` under uvicorn in a thread on 127.0.0.1 (an ephemeral port); Chromium
   (``/usr/bin/chromium``, headless, the flags of the project's rules, a fresh user-data-dir) loads
   each page ``--loads`` times with drawn parameters; every request not to the server is aborted.
   The time is from navigation start to the ``load`` event, or to the moment every
   ``figure.chart`` holds its ``svg`` when that is later. p50/p95 against 1.5 s; the rows ``html
   received`` (navigation start to the page's last byte) show how much of it is the server's.

The dashboard's roll-up cache (in the temporary folder) starts empty: the first overview after a
pass reads hourly rows, then ``Observatory.warm()`` (what the app runs in a thread) builds the
roll-ups and the uid index, each timed on its own row; the calls after it read them. On a copy of
the lake the roll-ups alone are timed twice: built for every month, then after the newest month's
aggregates file changed as an incremental pass changes it (only that month's are built). The lake
defaults to benchmarks/synth_observatory.py's (210 networks, 15 countries, a year of hourly
buckets), generated on first use and reused after. Prints one table: view, p50, p95, target, met or
MISSED.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks import synth_observatory  # noqa: E402

from msgwatch.analysis import lake  # noqa: E402
from msgwatch.dashboard import data_rollup, data_sql  # noqa: E402
from msgwatch.dashboard.data import Observatory  # noqa: E402
from msgwatch.dashboard.filters import ViewFilters  # noqa: E402

DATA_TARGET = 0.300
PAGE_TARGET = 1.5
WINDOWS = (None, 1, 7, 30, 90, 365)  # days; None: the view's default
CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
)  # fmt: skip
READY = (
    """() => [...document.querySelectorAll('figure.chart')].every(f => f.querySelector('svg'))"""
)
ELAPSED = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return {load: nav ? nav.loadEventEnd : 0, now: performance.now(),
            response: nav ? nav.responseEnd : 0,
            charts: document.querySelectorAll('figure.chart svg').length,
            marks: document.querySelectorAll('figure.chart svg .mark').length};
}"""


@dataclass(frozen=True)
class Sample:
    """What the lake holds to draw parameters from."""

    first: dt.datetime
    last: dt.datetime
    networks: list[tuple[str, str]]
    series: list[tuple[str, str, str, str]]
    events: list[str]
    measurements: list[str]


@dataclass
class Timings:
    """Seconds per row of the result table, and the SQL statements seen."""

    rows: dict[str, list[float]] = field(default_factory=dict)
    statements: list[tuple[float, str, str]] = field(default_factory=list)
    label: str = ""  # what the statements run now belong to
    calls: dict[str, int] = field(default_factory=dict)  # label → calls or page loads

    def start(self, label: str) -> None:
        """Statements from now on belong to one more call of ``label``."""
        self.label = label
        self.calls[label] = self.calls.get(label, 0) + 1

    def add(self, name: str, seconds: float) -> None:
        self.rows.setdefault(name, []).append(seconds)


def sample(lake_dir: Path) -> Sample:
    """Networks, series, events and measurement uids of the lake (from its committed files)."""
    state = lake.read_state(lake_dir) or {}
    files = state.get("files", {})
    listed = files["aggregates"]  # one file per month (a single file in older lakes)
    aggregates = lake.read_parquet_sql(
        lake.absolute(lake_dir, [listed] if isinstance(listed, str) else listed)
    )
    events = lake.sql_text(os.fspath(lake_dir / files["events"]))
    verdicts = lake.read_parquet_sql(lake.absolute(lake_dir, files["verdicts"]))
    with duckdb.connect(":memory:") as c:
        span = c.execute(f"SELECT min(bucket), max(bucket) FROM {aggregates}")
        first, last = span.fetchone() or (None, None)
        series = c.execute(
            f"SELECT DISTINCT probe_cc, probe_asn, service, function FROM {aggregates} ORDER BY ALL"
        ).fetchall()
        ids = c.execute(f"SELECT event_id FROM read_parquet({events}) ORDER BY 1").fetchall()
        uids = c.execute(f"SELECT DISTINCT measurement_uid FROM {verdicts} ORDER BY 1").fetchall()
    return Sample(
        first, last, sorted({(s[0], s[1]) for s in series}), series,
        [i for (i,) in ids], [u for (u,) in uids],
    )  # fmt: skip


def window(rng: random.Random, s: Sample) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A drawn window: the default, or 1–365 days ending at a drawn day."""
    days = rng.choice(WINDOWS)
    if days is None:
        return None, None
    latest = s.last + dt.timedelta(hours=1)
    earliest_end = min(latest, s.first + dt.timedelta(days=days))
    span = max(0, int((latest - earliest_end).total_seconds() // 86400))
    until = latest - dt.timedelta(days=rng.randint(0, span))
    until = until.replace(hour=0) if until != latest else until
    return until - dt.timedelta(days=days), until


def filters(rng: random.Random, s: Sample, **fixed: str | None) -> ViewFilters:
    since, until = window(rng, s)
    return ViewFilters(since=since, until=until, **fixed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Call:
    """One call of an ``Observatory`` view, and the page path it stands for ("" for none)."""

    view: str
    args: tuple[Any, ...]
    path: str = ""

    def run(self, observatory: Observatory) -> Any:
        return getattr(observatory, self.view)(*self.args)


def data_calls(rng: random.Random, s: Sample, runs: int) -> dict[str, list[Call]]:
    """Per view, ``runs`` calls with drawn parameters."""
    calls: dict[str, list[Call]] = {}
    for _ in range(runs):
        cc = rng.choice(s.networks)[0]
        f = filters(rng, s, cc=rng.choice((None, None, cc)))
        drawn = [Call("overview", (f,), "/" + f.query_string())]
        net_cc, asn = rng.choice(s.networks)
        f = filters(rng, s)
        drawn.append(
            Call("network", (net_cc, asn, f), f"/network/{net_cc}/{asn}{f.query_string()}")
        )
        cc, asn, service, function = rng.choice(s.series)
        drawn.append(
            Call(
                "comparison", (cc, rng.choice((asn, asn, None)), service, function, filters(rng, s))
            )
        )
        f = filters(rng, s, cc=rng.choice((None, cc)), service=rng.choice((None, None, service)))
        drawn.append(Call("events", (f,), "/events" + f.query_string()))
        event = rng.choice(s.events)
        drawn.append(Call("event", (event,), f"/event/{event}"))
        uid = rng.choice(s.measurements)
        drawn.append(Call("measurement", (uid,), f"/measurement/{uid}"))
        for call in drawn:
            calls.setdefault(call.view, []).append(call)
    return calls


@contextlib.contextmanager
def recording(timings: Timings) -> Iterator[None]:
    """Time every SQL statement the dashboard runs (``Reader._run``, in any thread) while
    inside, under the timings' current label."""
    original = data_sql.Reader._run

    def timed(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        began = time.perf_counter()
        try:
            return original(sql, params)
        finally:
            timings.statements.append((time.perf_counter() - began, timings.label, sql))

    data_sql.Reader._run = staticmethod(timed)  # type: ignore[method-assign]
    try:
        yield
    finally:
        data_sql.Reader._run = staticmethod(original)  # type: ignore[method-assign]


def bench_data(lake_dir: Path, calls: dict[str, list[Call]], timings: Timings) -> None:
    """Each call cold (a fresh Observatory) and warm (the same call again)."""
    for view, items in calls.items():
        for call in items:
            observatory = Observatory(lake_dir)
            timings.start(f"data {view} (cold)")
            began = time.perf_counter()
            call.run(observatory)
            timings.add(f"data {view} (cold)", time.perf_counter() - began)
            timings.start(f"data {view} (warm)")
            began = time.perf_counter()
            call.run(observatory)
            timings.add(f"data {view} (warm)", time.perf_counter() - began)
        cold = timings.rows[f"data {view} (cold)"]
        print(
            f"  {view}: {len(cold)} calls, cold median {statistics.median(cold):.3f} s", flush=True
        )


@contextlib.contextmanager
def serving(lake_dir: Path) -> Iterator[str]:
    """The dashboard under uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    from msgwatch.dashboard.app import create_app
    from msgwatch.dashboard.pages_base import DashboardConfig

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(DashboardConfig(lake_dir=lake_dir))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def bench_pages(base: str, pages: dict[str, list[str]], timings: Timings) -> dict[str, int]:
    """Load each page in Chromium; returns the charts seen per page."""
    from playwright.sync_api import Route, sync_playwright

    def only_ours(route: Route) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            route.abort()

    charts: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="msgwatch-bench-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=list(FLAGS)
        )
        try:
            context.route("**/*", only_ours)
            page = context.new_page()
            page.goto(base + "/static/")  # the first load of the browser's own start
            for name, paths in pages.items():
                for path in paths:
                    timings.start(f"page {name}")
                    response = page.goto(base + path, wait_until="load", timeout=60_000)
                    status = response.status if response is not None else 0
                    page.wait_for_function(READY, timeout=60_000)
                    figures = page.evaluate(ELAPSED)
                    seconds = (
                        max(figures["load"], figures["now"] if figures["charts"] else 0) / 1000
                    )
                    label = f"page {name}" + ("" if status == 200 else f" [{status}]")
                    timings.add(label, seconds)
                    timings.add(f"{label}: html received", figures["response"] / 1000)
                    charts[name] = charts.get(name, 0) + figures["charts"]
        finally:
            context.close()
    return charts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{seconds * 1000:.0f}ms"


def table(timings: Timings) -> str:
    lines = [
        f"{'what':<40} {'n':>4} {'p50':>9} {'p95':>9} {'max':>9} {'target':>8}  result  "
        "SQL per call"
    ]
    sql: dict[str, list[float]] = {}
    for seconds, label, _ in timings.statements:
        sql.setdefault(label, []).append(seconds)
    for name, values in timings.rows.items():
        target = PAGE_TARGET if name.startswith("page") else DATA_TARGET
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        met = "met" if p95 <= target else "MISSED"
        if "warm()" in name:  # the background build, not a view's query: no target of its own
            met, target = "(bg)", float("nan")
        calls, statements = timings.calls.get(name, 0), sql.get(name, [])
        per_call = (
            f"{len(statements) / calls:.1f} queries, {sum(statements) / calls * 1000:.0f}ms"
            if calls
            else ""
        )
        lines.append(
            f"{name:<40} {len(values):>4} {p50 * 1000:>7.0f}ms {p95 * 1000:>7.0f}ms "
            f"{max(values) * 1000:>7.0f}ms {_ms(target):>8}  {met:<6}  {per_call}"
        )
    return "\n".join(lines)


def slowest(timings: Timings, count: int) -> str:
    lines = []
    for seconds, view, sql in sorted(timings.statements, reverse=True)[:count]:
        shown = " ".join(sql.split())
        shown = shown.replace(os.fspath(ROOT), "")
        lines.append(f"{seconds * 1000:7.0f} ms  {view}: {shown[:600]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="a lake (default: the synthetic observatory)")
    parser.add_argument("--runs", type=int, default=30, help="parameter sets per data view")
    parser.add_argument("--loads", type=int, default=10, help="loads per page")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--slow", type=int, default=5, help="slowest SQL statements to print")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    lake_dir = args.lake
    if lake_dir is None:
        lake_dir, summary, reused = synth_observatory.ensure(None, synth_observatory.Params())
        print(synth_observatory.describe(lake_dir, summary, reused))
    s = sample(lake_dir)
    print(f"lake {lake_dir}: {len(s.networks)} networks, {len(s.series)} series, "
          f"{len(s.events)} events, {len(s.measurements)} measurements with rows, "
          f"{s.first} → {s.last}")  # fmt: skip
    rng = random.Random(args.seed)
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="msgwatch-bench-tmp-") as tmp:
        tempfile.tempdir = tmp  # the dashboard's roll-up cache starts empty, as after a new pass
        try:
            run(args, lake_dir, s, rng, timings)
        finally:
            tempfile.tempdir = None
    return 0


PENDING_CALLS = 10
"""Calls per view timed while one month's roll-ups wait (:func:`rollups_after_a_pass`)."""


def rollups_after_a_pass(lake_dir: Path, calls: dict[str, list[Call]], timings: Timings) -> None:
    """The roll-ups of a copy of the lake built from none (every month), then again after the
    newest month's aggregates file changed as an incremental pass changes it (a new mtime: a new
    name in the cache); the roll-ups are one per month, so only that month's are built again.

    Between the two, the first :data:`PENDING_CALLS` calls of each view run cold on the copy,
    as the dashboard serves them after a pass until its ``warm()`` is done: the other months from
    their roll-ups, the rewritten month from its hourly rows (``data <view> (one month
    pending)``)."""
    with tempfile.TemporaryDirectory(prefix="msgwatch-bench-lake-") as tmp:
        copy = Path(tmp) / "lake"
        shutil.copytree(lake_dir, copy)
        with data_sql.Reader(copy) as reader:

            def warm(label: str) -> None:
                timings.start(label)
                began = time.perf_counter()
                built = data_rollup.warm(reader)
                timings.add(label, time.perf_counter() - began)
                if not built or any(level.pending for level in built.values()):
                    raise SystemExit(f"the roll-ups were not all built: {built}")

            warm("data warm(): roll-ups, every month")
            newest = max(reader.files("aggregates"))
            os.utime(newest, ns=(time.time_ns(), time.time_ns()))
            pending = data_rollup.ready(reader, reader.files("aggregates"))
            if not any(level.pending for level in pending.values()):
                raise SystemExit(f"no month is pending after the rewrite: {pending}")
            for view, items in calls.items():
                label = f"data {view} (one month pending)"
                for call in items[:PENDING_CALLS]:
                    timings.start(label)
                    began = time.perf_counter()
                    call.run(Observatory(copy))
                    timings.add(label, time.perf_counter() - began)
            warm("data warm(): roll-ups, one month rewritten")
        data_rollup.forget(copy)  # the copy's roll-ups leave the cache to the lake's own


def run(
    args: argparse.Namespace, lake_dir: Path, s: Sample, rng: random.Random, timings: Timings
) -> None:
    """The first view after a pass (roll-ups built), the data views, then the pages."""
    calls = data_calls(rng, s, args.runs)
    with recording(timings):
        timings.start("data first overview after a pass")
        began = time.perf_counter()
        Observatory(lake_dir).overview(ViewFilters())
        timings.add("data first overview after a pass", time.perf_counter() - began)
        timings.start("data warm() after a pass")
        began = time.perf_counter()
        Observatory(lake_dir).warm()  # what the app starts in a thread: roll-ups, uid index
        timings.add("data warm() after a pass", time.perf_counter() - began)
        rollups_after_a_pass(lake_dir, calls, timings)
        bench_data(lake_dir, calls, timings)
        if not args.no_browser:
            pages = {view: [c.path for c in items[: args.loads]] for view, items in calls.items()}
            pages = {view: paths for view, paths in pages.items() if paths and paths[0]}
            with serving(lake_dir) as base:
                charts = bench_pages(base, pages, timings)
            print(
                "charts rendered per page (all loads): "
                + ", ".join(f"{k} {v}" for k, v in charts.items())
            )
    print(table(timings))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores")
    if args.slow:
        print(f"\nthe {args.slow} slowest SQL statements:")
        print(slowest(timings, args.slow))


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end analysis throughput on a synthetic archive, against a bare parse of the same files.

    .venv/bin/python benchmarks/analysis_throughput.py                       # 200,000, and 50,000 for memory
    .venv/bin/python benchmarks/analysis_throughput.py --count 20000 --also 0 # a quick run
    .venv/bin/python benchmarks/analysis_throughput.py --data DATA            # an archive made already

For each archive size (``--count``, then ``--also`` when not 0) the run

1. writes a synthetic collector data directory with ``benchmarks/synth_archive.py`` (kept under
   ``--keep DIR`` when given, else in a temporary directory): ``--count`` over 14 days, ``--also``
   over as many days as keep the same measurements per day (50,000: 4 days), the same observatory
   watched for a shorter time, so the two peaks of memory compare sizes, not densities;
2. **bare parse**: decompresses every archive member, splits it into lines and ``orjson.loads``
   each record, in this process on one core → measurements/s, the ceiling of any reader;
3. **end to end**: ``run_pass`` (``msgwatch.analysis.passes``) with the collector's archive as its
   source (``msgwatch.collector.store.feed.ArchiveSource``), ``workers=2``: archive → observations →
   verdicts → aggregates → events, into a fresh output directory, in a child process so its memory
   is the pass's alone → measurements/s and the ratio to the bare parse (the issue's target: ≥ 0.7),
   the time spent in each phase (the progress callback's ``phase``, summed over its turns), and peak memory: the child's ``ru_maxrss``,
   the largest peak (``VmHWM``) of its other processes (the pool's workers, which are the
   forkserver's children) and the largest sum of their resident sizes, sampled every 0.2 s.

Prints the figures of each size, the pass report's stage times when it gives them, and OONI's
published figures for scale, quoted (not measured here).

``--rounds N`` (1 by default) measures each size N times and prints every round's ratio and the
figures of the round with the median ratio. Each pass is bracketed by two bare parses, one just
before and one just after it (consecutive rounds share the one between them: N rounds run N + 1
bare parses), and its ratio is taken against their mean time: on a shared or virtual machine the
speed of the cores drifts by tens of percent from one minute to the next (the same code gave ratios
from 0.39 to 0.48 within ten minutes on 2026-12-04), and a bare parse on both sides of the pass
cancels a drift that runs through it, where one before it only would not.

``--scaling N`` (20,000 by default, 0: off) runs the bare parse of the first ``N`` measurements in
one process, then in two at once: how much of a second core this machine gives (the pass runs on
two, the bare parse on one).

``--costs N`` (alone, or after the pass) says where the CPU goes: the first ``N`` measurements of
the archive taken through each step of the pass in this process, each step's CPU time
(``time.process_time``: user + system, DuckDB's threads included) per measurement, the best of
three rounds, beside the budget that the target ratio leaves on two cores. The worker's steps run
as a worker runs them, one measurement parsed, transformed and turned into rows before the next
(the judge then runs once more alone, for its share of the transform).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks.synth_archive import TRUTH_FILE, SynthConfig, write  # noqa: E402

from msgwatch.collector.store.archive import Archive, lines_of  # noqa: E402

TARGET_RATIO = 0.7
SAMPLE_S = 0.2
QUOTED = (
    "OONI's pipeline (quoted, not measured): ~5,000 measurements/s into observations and "
    "~15,000/s analysis (ooni/data#17, 2022-11; for the whole machine)",
    "oonidata's reader (quoted, not measured): ~4,400 measurements/s on this machine "
    "(issue 11, 'Performance: Throughput')",
)


@dataclass(frozen=True)
class Figures:
    count: int
    archive_bytes: int
    parse_seconds: float
    parsed: int
    pass_seconds: float
    pass_measurements: int
    rss_self_mb: float
    rss_worker_mb: float
    rss_together_mb: float
    cpu_seconds: float
    """CPU of the pass: its own process's (measured) and its other processes' (sampled)."""
    report: dict[str, Any]
    stages: dict[str, float]
    periods: int | None
    """Blocking periods the generator injected (``None``: not a synthetic archive)."""
    phase_peaks_mb: dict[str, float] = field(default_factory=dict)
    """The pass's process's peak resident memory in each phase (sampled)."""
    brackets: tuple[float, float] = (0.0, 0.0)
    """Seconds of the bare parse just before and just after the pass (``parse_seconds`` is their
    mean)."""

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.parse_seconds if self.parse_seconds else 0.0

    @property
    def pass_rate(self) -> float:
        return self.pass_measurements / self.pass_seconds if self.pass_seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.pass_rate / self.parse_rate if self.parse_rate else 0.0


def archive_lines(data_dir: Path) -> Iterator[tuple[str, bytes]]:
    """``(file, line)`` of every archive line, decompressed and split, in archive order."""
    archive = Archive(data_dir)
    for file in archive.files():
        for member in archive.scan(file, 0):
            for _, line in lines_of(member.data):
                yield file, line


def bare_parse(data_dir: Path, limit: int | None = None) -> tuple[int, float]:
    """``(measurements, seconds)``: every archive line (the first ``limit``) decompressed, split
    and parsed."""
    started = time.perf_counter()
    count = 0
    for _, line in itertools.islice(archive_lines(data_dir), limit):
        record = orjson.loads(line)
        count += isinstance(record.get("measurement"), dict)
    return count, time.perf_counter() - started


def scaling(data_dir: Path, limit: int) -> tuple[float, float, int]:
    """(seconds alone, seconds of two at once, measurements each parsed): the bare parse of the
    first ``limit`` lines in one child process, then in two children at the same time. Two cores
    that did the work of two give equal times; a machine whose second core slows the first (shared
    caches, a host's hyperthreads) gives a longer second figure: the pass, which needs both cores,
    pays the same. Raises ``RuntimeError`` when the children did not all parse the same."""

    def children(n: int) -> tuple[float, set[int]]:
        command = [sys.executable, __file__, "--parse-child", os.fspath(data_dir), str(limit)]
        running = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(n)]
        said = [p.communicate()[0].split() for p in running]
        return max(float(seconds) for _, seconds in said), {int(count) for count, _ in said}

    (alone, one), (both, two) = children(1), children(2)
    if len(one | two) != 1:
        raise RuntimeError(f"the children parsed different counts: {sorted(one | two)}")
    return alone, both, one.pop()


def run_pass_here(data_dir: Path, out_dir: Path, workers: int) -> dict[str, Any]:
    """One pass (in this process, the child): the report, wall time, each phase's time (from the
    progress callback's ``phase``), peak memory, and each phase's peak resident memory (sampled
    every :data:`SAMPLE_S`: which phase sets the peak, and whether it grows with the archive)."""
    from msgwatch.analysis.passes import PassConfig, PassProgress, run_pass
    from msgwatch.collector.store.feed import ArchiveSource

    stages: dict[str, float] = {}
    current: list[Any] = [None, time.perf_counter()]  # the phase going on, since when
    phase_peaks: dict[str, int] = {}
    sampling = threading.Event()

    def sample_phases() -> None:
        while not sampling.wait(SAMPLE_S):
            phase = current[0] or "starting"
            phase_peaks[phase] = max(phase_peaks.get(phase, 0), memory_kb(os.getpid())[0])

    sampler = threading.Thread(target=sample_phases, daemon=True)
    sampler.start()

    def progress(p: PassProgress) -> None:
        now = time.perf_counter()
        if current[0] is not None:
            stages[current[0]] = stages.get(current[0], 0.0) + now - current[1]
        current[:] = [p.phase, now]

    used = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = run_pass(
        PassConfig(
            sources=[ArchiveSource(data_dir)], out_dir=out_dir, workers=workers, progress=progress
        )
    )
    ended = time.perf_counter()
    sampling.set()
    sampler.join()
    progress(PassProgress(0, 0, 0, "", "end"))
    stages = {name: round(seconds, 2) for name, seconds in stages.items()}
    return {
        "seconds": ended - started,
        "stages": stages,
        "report": report.to_json(),
        "rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cpu_self": _cpu_since(used),
        "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "phase_peaks_kb": phase_peaks,
    }


def _cpu_since(before: resource.struct_rusage) -> float:
    """CPU seconds (user + system, every thread) this process spent since ``before``."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    return now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from ``/proc`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def descendants(root: int) -> list[int]:
    """``root`` and every process under it (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB (0, 0 when it is gone)."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return found["VmRSS"], found["VmHWM"]


@dataclass
class Peaks:
    """Peak memory of a process tree, sampled: each process's own peak, and the tree's sum; and
    each process's CPU time at its last sample (what it spent after that is missed: at most a
    sampling interval per process)."""

    per_process: dict[int, int] = field(default_factory=dict)
    together: int = 0
    cpu: dict[int, float] = field(default_factory=dict)

    def sample(self, root: int) -> None:
        total = 0
        for pid in descendants(root):
            rss, hwm = memory_kb(pid)
            total += rss
            self.per_process[pid] = max(self.per_process.get(pid, 0), hwm)
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu_seconds(pid))
        self.together = max(self.together, total)


def run_pass_child(data_dir: Path, out_dir: Path, workers: int) -> tuple[dict[str, Any], Peaks]:
    """:func:`run_pass_here` in a child process, its process tree's memory sampled meanwhile
    (the pool's workers are the forkserver's children, which ``ru_maxrss`` does not see)."""
    peaks = Peaks()
    with subprocess.Popen(
        [sys.executable, __file__, "--child", str(data_dir), str(out_dir), str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(SAMPLE_S):
                peaks.sample(child.pid)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        out, err = child.communicate()
        stop.set()
        watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"the pass failed:\n{err.decode(errors='replace')[-4000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    peaks.per_process.pop(child.pid, None)  # the child's own peak is its ru_maxrss
    peaks.cpu.pop(child.pid, None)  # and its own CPU its rusage
    return result, peaks


@contextlib.contextmanager
def place(keep: Path | None, name: str) -> Iterator[Path]:
    """``keep/name`` when keeping, else a temporary directory removed afterwards."""
    if keep is not None:
        path = keep / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"msgwatch-{name}-") as tmp:
        yield Path(tmp)


def injected(data_dir: Path) -> int | None:
    """How many blocking periods ``synth.json`` says were injected."""
    try:
        return len(orjson.loads((data_dir / TRUTH_FILE).read_bytes())["periods"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measure(
    data_dir: Path, out_dir: Path, workers: int, count: int, before: tuple[int, float] | None = None
) -> tuple[Figures, tuple[int, float]]:
    """The pass over one archive between two bare parses (``before``: one run already, just
    before); the figures, and the bare parse after the pass (the next round's before)."""
    archive_bytes = sum(Archive(data_dir).size(f) for f in Archive(data_dir).files())
    parsed, first = before if before is not None else bare_parse(data_dir)
    result, peaks = run_pass_child(data_dir, out_dir, workers)
    after = bare_parse(data_dir)
    report = result["report"]
    figures = Figures(
        count=count,
        archive_bytes=archive_bytes,
        parse_seconds=(first + after[1]) / 2,
        parsed=parsed,
        pass_seconds=float(result["seconds"]),
        pass_measurements=int(report.get("measurements", 0)),
        rss_self_mb=result["rss_self_kb"] / 1024,
        rss_worker_mb=max(peaks.per_process.values(), default=0) / 1024,
        rss_together_mb=peaks.together / 1024,
        cpu_seconds=float(result["cpu_self"]) + sum(peaks.cpu.values()),
        report=report,
        stages=result["stages"],
        phase_peaks_mb={k: round(v / 1024) for k, v in result.get("phase_peaks_kb", {}).items()},
        periods=injected(data_dir),
        brackets=(first, after[1]),
    )
    return figures, after


def show(f: Figures) -> None:
    print(
        f"\n== {f.parsed:,} measurements, archive {f.archive_bytes / 1e9:.2f} GB "
        f"({f.archive_bytes / max(f.parsed, 1) / 1e3:.1f} KB/measurement compressed)"
    )
    print(f"bare parse (gzip + split + orjson.loads, 1 process): {f.parse_rate:,.0f} measurements/s"
          f" ({f.parse_seconds:.1f} s: the mean of {f.brackets[0]:.1f} s just before the pass and "
          f"{f.brackets[1]:.1f} s just after it)")  # fmt: skip
    print(f"end to end (run_pass, ArchiveSource, workers=2):    {f.pass_rate:,.0f} measurements/s"
          f" ({f.pass_seconds:.1f} s; report: {f.pass_measurements:,} measurements)")  # fmt: skip
    verdict = "meets" if f.ratio >= TARGET_RATIO else "MISSES"
    print(f"ratio end to end / bare parse: {f.ratio:.2f} ({verdict} the target {TARGET_RATIO})")
    print(f"peak memory of the pass: {f.rss_self_mb:,.0f} MB (its process), "
          f"{f.rss_worker_mb:,.0f} MB (its largest worker), "
          f"{f.rss_together_mb:,.0f} MB (all its processes together, sampled)")  # fmt: skip
    print(
        f"peak memory of the pass's process by phase (MB, sampled): {json.dumps(f.phase_peaks_mb)}"
    )
    per = f.cpu_seconds / max(f.pass_measurements, 1) * 1000
    print(f"CPU of the pass: {f.cpu_seconds:,.1f} s in all its processes ({per:.2f} ms per "
          f"measurement; its other processes' sampled), {f.cpu_seconds / max(f.pass_seconds, 1e-9):.2f} "
          "cores on average")  # fmt: skip
    print(f"time per phase (s, summed from the progress callback): {json.dumps(f.stages)}")
    counts = {k: f.report.get(k) for k in ("observations", "verdicts", "aggregates", "events")}
    print(f"rows: {json.dumps(counts)}; problems: {f.report.get('problems')}; "
          f"blocking periods injected: {f.periods} (episodic and continuous, per country)")  # fmt: skip


def _cpu() -> float:
    """CPU seconds of this process, every thread (DuckDB's too), user and system."""
    return time.process_time()


def _best(step: Any, rounds: int = 3) -> tuple[float, Any]:
    """(CPU seconds of the fastest of ``rounds`` calls of ``step``, its last result)."""
    best, result = float("inf"), None
    for _ in range(rounds):
        started = _cpu()
        result = step()
        best = min(best, _cpu() - started)
    return best, result


def costs(data_dir: Path, limit: int, work: Path) -> list[tuple[str, float]]:
    """CPU milliseconds per measurement of each step of the pass, over the archive's first
    ``limit`` measurements: (step, ms)."""
    from msgwatch.analysis import lake
    from msgwatch.analysis.inputs.records import item_of
    from msgwatch.analysis.parse import parse
    from msgwatch.analysis.schema import ENVELOPE_COLUMNS, OBSERVATION_COLUMNS, VERDICT_COLUMNS
    from msgwatch.analysis.transform import Meta, transform
    from msgwatch.analysis.verdicts import judge
    from msgwatch.analysis.workers import (
        ChunkResult,
        _add_observations,
        _add_rows,
        _unwrap,
        prepare_worker,
        uid_of,
    )

    def read() -> list[Any]:  # the parent's share of the bare parse: gunzip, split, cut out
        lines = itertools.islice(archive_lines(data_dir), limit)
        return [item_of(bytes(line), file) for file, line in lines]

    prepare_worker()  # the allocator's and the collector's settings of the pass's workers
    t_read, items = _best(read)
    staged = ChunkResult()
    rounds: list[dict[str, float]] = []
    for _ in range(3):
        took = dict.fromkeys(("parse", "transform", "judge", "rows"), 0.0)
        staged = ChunkResult()  # day → NDJSON, day → rows
        # as a worker does: one item parsed, transformed and turned into rows before the next,
        # so that the allocator reuses what the last item freed (parsing a whole chunk first
        # would hold it all and cost twice the parse's CPU in fresh memory)
        for item in items:
            started = _cpu()
            value = parse(item.line)
            parsed = _cpu()
            item, measurement = _unwrap(item, value)
            meta = Meta(item.where, uid_of(item, measurement), item.probe_tag, item.received_at)
            out = transform(measurement, meta)
            transformed = _cpu()
            _add_observations(staged, out.envelope, out.parts)
            _add_rows(staged.verdicts, staged.verdict_rows, out.verdicts)
            took["rows"] += _cpu() - transformed
            judging = _cpu()
            judge(measurement)  # again, alone: its share of the transform
            took["judge"] += _cpu() - judging
            took["parse"] += parsed - started
            took["transform"] += transformed - parsed
            del value, measurement, out
        rounds.append(took)
    spent = {step: min(r[step] for r in rounds) for step in rounds[0]}

    def write() -> None:  # the pass's flush (lake.Flusher), into a folder of its own each time
        out = Path(tempfile.mkdtemp(dir=work))
        with lake.connect(out) as connection, lake.Flusher(connection) as flusher:
            stagers = [
                lake.Stager(out, out, "observations", OBSERVATION_COLUMNS, 1, ENVELOPE_COLUMNS),
                lake.Stager(out, out, "verdicts", VERDICT_COLUMNS, 1),
            ]
            stagers[0].add(staged.observations, staged.observation_rows)
            stagers[1].add(staged.verdicts, staged.verdict_rows)
            flusher.flush(stagers)
            flusher.wait()

    def bare() -> None:  # the bare parse's own parse, for the budget (not a step of the pass)
        for item in items:
            orjson.loads(item.line)

    t_write, _ = _best(write)
    t_bare, _ = _best(bare)
    per = 1000.0 / max(len(items), 1)
    return [
        ("read: gunzip, split, cut the record (parent)", t_read * per),
        ("parse: msgspec, events deferred (worker)", spent["parse"] * per),
        ("judge: verdicts (worker, inside transform)", spent["judge"] * per),
        ("observations, the rest of transform, unwrap, uid (worker)",
         (spent["transform"] - spent["judge"]) * per),
        ("rows as NDJSON (worker)", spent["rows"] * per),
        ("write: NDJSON into Parquet, DuckDB (parent)", t_write * per),
        (BARE_PARSE_STEP, t_bare * per),
    ]  # fmt: skip


BARE_PARSE_STEP = "orjson.loads of the whole line (the bare parse's, not the pass's)"


def show_costs(figures: list[tuple[str, float]], count: int) -> None:
    steps = [(name, ms) for name, ms in figures if name != BARE_PARSE_STEP]
    total = sum(ms for _, ms in steps)
    bare = steps[0][1] + dict(figures)[BARE_PARSE_STEP]
    budget = 2 / TARGET_RATIO * bare  # two cores at the target ratio against a one-core parse
    print(f"\n== where the CPU goes ({count:,} measurements; ms of CPU per measurement, best of 3)")
    for name, ms in steps:
        print(f"  {name:58} {ms:6.3f}")
    print(
        f"  {'all steps':58} {total:6.3f}  (the pass adds moving items and rows between processes)"
    )
    print(f"the bare parse is read + orjson.loads = {bare:.3f} ms; a ratio of {TARGET_RATIO} on 2 cores "
          f"leaves {budget:.3f} ms of CPU per measurement for everything, {total / budget:.2f}× "
          "of it is spent by the steps alone")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--parse-child"]:
        print(*bare_parse(Path(args[1]), int(args[2])))
        return 0
    if args[:1] == ["--child"]:
        data_dir, out_dir, workers = Path(args[1]), Path(args[2]), int(args[3])
        print(json.dumps(run_pass_here(data_dir, out_dir, workers)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--also", type=int, default=50_000, help="a second size (0: none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, help="an archive made already (no generation)")
    parser.add_argument("--keep", type=Path, help="keep the archives and outputs under this")
    parser.add_argument("--bare-only", action="store_true", help="skip the pass")
    parser.add_argument(
        "--rounds", type=int, default=1, metavar="N", help="measure each size N times (median)"
    )
    parser.add_argument(
        "--costs",
        type=int,
        default=0,
        metavar="N",
        help="CPU per step over the first N measurements (0: not measured)",
    )
    parser.add_argument("--costs-only", action="store_true", help="with --data: only --costs")
    parser.add_argument(
        "--scaling",
        type=int,
        default=20_000,
        metavar="N",
        help="the bare parse of N measurements alone and two at once (0: not measured)",
    )
    parsed = parser.parse_args(args)
    if parsed.data is not None and not any((parsed.data / "archive").glob("*/*.jsonl.gz")):
        parser.error(f"--data {parsed.data}: no collector archive there (archive/DAY/*.jsonl.gz)")
    if parsed.costs_only:
        if parsed.data is None or not parsed.costs:
            parser.error("--costs-only needs --data and --costs N")
        with place(None, "costs") as work:
            show_costs(costs(parsed.data, parsed.costs, work), parsed.costs)
        return 0
    sizes = [parsed.count] + ([parsed.also] if parsed.also and not parsed.data else [])
    results: list[Figures] = []
    for count in sizes:
        with place(parsed.keep, f"synth-{count}") as data_dir:
            if parsed.data is not None:
                data_dir = parsed.data
            else:
                days = max(1, round(SynthConfig.days * count / parsed.count))  # the same density
                made = write(data_dir / "data", SynthConfig(count=count, days=days))
                data_dir = data_dir / "data"
                print(f"synth_archive: {count:,} measurements over {days} days "
                      f"in {made['seconds']:.1f} s")  # fmt: skip
            if parsed.bare_only:
                n, seconds = bare_parse(data_dir)
                print(f"bare parse: {n:,} measurements, {n / seconds:,.0f}/s ({seconds:.1f} s)")
                continue
            rounds: list[Figures] = []
            between: tuple[int, float] | None = None  # the bare parse after the last pass
            for number in range(max(parsed.rounds, 1)):
                with place(parsed.keep, f"out-{count}") as out_dir:
                    shutil.rmtree(out_dir / "out", ignore_errors=True)  # a fresh pass each round
                    figures, between = measure(
                        data_dir, out_dir / "out", parsed.workers, count, between
                    )
                    rounds.append(figures)
                if parsed.rounds > 1:
                    print(f"round {number + 1}: ratio {rounds[-1].ratio:.2f} "
                          f"(bare parse {rounds[-1].parse_rate:,.0f}/s, "
                          f"pass {rounds[-1].pass_rate:,.0f}/s)")  # fmt: skip
            figures = sorted(rounds, key=lambda f: f.ratio)[(len(rounds) - 1) // 2]
            if len(rounds) > 1:
                ratios = " ".join(f"{f.ratio:.2f}" for f in rounds)
                print(f"ratios of {len(rounds)} rounds: {ratios}; the median round's figures:")
            show(figures)
            results.append(figures)
            if parsed.scaling:
                alone, both, _ = scaling(data_dir, parsed.scaling)
                print(f"the bare parse of {parsed.scaling:,} measurements: {alone:.1f} s alone, "
                      f"{both:.1f} s with a second one beside it on the other core "
                      f"(two cores do {2 * alone / both:.2f}× the work of one)")  # fmt: skip
            if parsed.costs:
                with place(None, "costs") as work:
                    show_costs(costs(data_dir, parsed.costs, work), parsed.costs)
    if len(results) == 2:
        a, b = results
        print(f"\npeak memory {b.parsed:,} vs {a.parsed:,} measurements: {b.rss_self_mb:,.0f} vs "
              f"{a.rss_self_mb:,.0f} MB (process), {b.rss_worker_mb:,.0f} vs "
              f"{a.rss_worker_mb:,.0f} MB (worker), {b.rss_together_mb:,.0f} vs "
              f"{a.rss_together_mb:,.0f} MB (together)")  # fmt: skip
    for line in QUOTED:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

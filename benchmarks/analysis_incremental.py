"""What one incremental pass costs as the lake grows: the pass time a scheduled analysis adds to
the latency of every event.

    .venv/bin/python benchmarks/analysis_incremental.py                    # lakes of 20,000 and 100,000
    .venv/bin/python benchmarks/analysis_incremental.py --sizes 5000 --new 20 --rounds 2
    .venv/bin/python benchmarks/analysis_incremental.py --days 365          # lakes spanning a year

For each size in ``--sizes`` the run

1. writes a synthetic collector data directory (``benchmarks/synth_archive.py``), and an empty
   JSONL feed beside it;
2. runs a full pass (``run_pass``, ``workers=2``) over both sources into a fresh output directory;
3. then ``--rounds`` times: appends ``--new`` measurements to the feed (archive records of the
   archive's first measurements, with new uids and times after everything in the lake: new data,
   never late data) and runs the incremental pass, timing it and each of its phases (the progress
   callback's ``phase``).

Prints, per size, the full pass's time and the median incremental pass with its phases, and at the
end how the incremental pass grows per 100,000 measurements already in the lake (between the two
largest sizes), and the lake size at which a pass would take 60 s — the slack that issue 11's
latency target ("one analysis interval plus one minute") leaves beside the interval itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks.synth_archive import SynthConfig, write  # noqa: E402

from msgwatch.analysis.inputs.jsonl import JsonlSource  # noqa: E402
from msgwatch.analysis.passes import PassConfig, PassProgress, run_pass  # noqa: E402
from msgwatch.collector.store.archive import Archive, lines_of  # noqa: E402
from msgwatch.collector.store.feed import ArchiveSource  # noqa: E402

SLACK_SECONDS = 60.0


@dataclass
class Timed:
    """One pass: its seconds, measurements and the seconds of each phase."""

    seconds: float
    measurements: int
    phases: dict[str, float] = field(default_factory=dict)


def timed_pass(data_dir: Path, feed: Path, out_dir: Path) -> Timed:
    """One pass over the archive and the feed, timed phase by phase."""
    phases: dict[str, float] = {}
    last: list[Any] = [time.monotonic(), None]

    def progress(p: PassProgress) -> None:
        now = time.monotonic()
        if last[1] is not None:
            phases[last[1]] = phases.get(last[1], 0.0) + now - last[0]
        last[0], last[1] = now, p.phase

    started = time.monotonic()
    report = run_pass(
        PassConfig(
            sources=[ArchiveSource(data_dir), JsonlSource([feed])],
            out_dir=out_dir,
            workers=2,
            progress=progress,
        )
    )
    return Timed(time.monotonic() - started, report.measurements, phases)


def _records(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """The archive's first ``count`` records, parsed."""
    found: list[dict[str, Any]] = []
    archive = Archive(data_dir)
    for file in archive.files():
        for member in archive.scan(file, 0):
            for _, line in lines_of(member.data):
                found.append(orjson.loads(line))
                if len(found) >= count:
                    return found
    return found


def _latest(data_dir: Path) -> dt.datetime:
    """The latest measurement time of the synthetic archive (its last day's end)."""
    days = sorted(p.name for p in (data_dir / "archive").iterdir() if p.is_dir())
    return dt.datetime.fromisoformat(days[-1]) + dt.timedelta(days=1)


def append_new(data_dir: Path, feed: Path, count: int, round_number: int) -> None:
    """Append ``count`` new measurements to ``feed``: archive records with new uids, keys and
    times in a fresh hour after the lake's end (one round, one hour)."""
    hour = _latest(data_dir) + dt.timedelta(hours=round_number)
    lines = []
    for i, record in enumerate(_records(data_dir, count)):
        suffix = f"r{round_number:03d}n{i:05d}"
        record["measurement_uid"] = str(record["measurement_uid"])[: -len(suffix)] + suffix
        record["idempotency_key"] = str(record["idempotency_key"])[: -len(suffix)] + suffix
        moment = hour + dt.timedelta(seconds=i * 3600 // max(count, 1))
        record["measurement"]["measurement_start_time"] = moment.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(orjson.dumps(record))
    with open(feed, "ab") as handle:
        handle.write(b"\n".join(lines) + b"\n")


@dataclass
class SizeFigures:
    size: int
    full: Timed
    rounds: list[Timed]

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.rounds)

    def median_phases(self) -> dict[str, float]:
        names = sorted({name for r in self.rounds for name in r.phases})
        return {
            name: round(statistics.median(r.phases.get(name, 0.0) for r in self.rounds), 2)
            for name in names
        }


def measure(root: Path, size: int, new: int, rounds: int, **synth: Any) -> SizeFigures:
    """A lake of ``size`` measurements (``synth``: more of :class:`SynthConfig`), then ``rounds``
    incremental passes of ``new`` each."""
    data_dir, out_dir, feed = root / f"data-{size}", root / f"out-{size}", root / f"feed-{size}"
    write(data_dir, SynthConfig(count=size, **synth))
    feed.mkdir()
    feed_file = feed / "feed.jsonl"
    feed_file.write_bytes(b"")
    full = timed_pass(data_dir, feed_file, out_dir)
    timed = []
    for number in range(1, rounds + 1):
        append_new(data_dir, feed_file, new, number)
        timed.append(timed_pass(data_dir, feed_file, out_dir))
    return SizeFigures(size, full, timed)


def growth(figures: list[SizeFigures]) -> tuple[float, float | None] | None:
    """(seconds per 100,000 measurements in the lake, lake size at which a pass takes
    :data:`SLACK_SECONDS`) between the two largest sizes; None with fewer than two sizes."""
    if len(figures) < 2:
        return None
    small, large = sorted(figures, key=lambda f: f.size)[-2:]
    slope = (large.median - small.median) / (large.size - small.size)
    if slope <= 0:
        return 0.0, None
    return slope * 100_000, large.size + (SLACK_SECONDS - large.median) / slope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000", help="lake sizes, comma-separated")
    parser.add_argument("--new", type=int, default=50, help="measurements per incremental pass")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--days", type=int, default=14, help="days the synthetic archive spans (its measurements"
        " spread evenly; the aggregates are stored one file per month)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    figures = []
    with tempfile.TemporaryDirectory(prefix="msgwatch-incremental-") as tmp:
        for size in sizes:
            f = measure(Path(tmp), size, args.new, args.rounds, days=args.days)
            figures.append(f)
            print(f"== lake of {size:,} measurements over {args.days} days")
            print(f"full pass: {f.full.seconds:.1f} s ({f.full.measurements:,} measurements)")
            print(
                f"incremental pass of {args.new} new measurements: median {f.median:.2f} s over "
                f"{len(f.rounds)} (each: {', '.join(f'{r.seconds:.2f}' for r in f.rounds)}); "
                f"phases (median s): {orjson.dumps(f.median_phases()).decode()}"
            )
            if any(r.measurements != args.new for r in f.rounds):
                print("  (a round did not analyse exactly its new measurements)")
    grown = growth(figures)
    if grown is not None:
        per, at = grown
        print(
            f"an incremental pass grows by {per:.2f} s per 100,000 measurements in the lake", end=""
        )
        print(f"; it would take {SLACK_SECONDS:.0f} s at about {at:,.0f}" if at else "", end="")
        print(
            " (what still grows with the lake: the newest month's aggregates file is rewritten"
            " whole, the verdict parts are listed to find the new periods' days, open events are"
            " summarised from their start)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

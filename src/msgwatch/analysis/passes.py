"""One analysis pass: sources → observations and verdicts → aggregates → events, committed at once.

:func:`run_pass` reads what is new in every source since the committed state, analyses it on the
workers (:mod:`.workers`), writes the rows as Parquet parts of a new pass number (in a
background thread, while the next rows are analysed: :class:`~.lake.Flusher`), recomputes the
aggregates over all verdicts (:mod:`.aggregates`), runs the event detector, then commits
``state.json`` (:mod:`.lake`). How a crash or a change of rules is met:

- **One pass at a time:** an exclusive ``flock`` on ``OUT/lock``; a second pass raises
  :class:`PassBusy` instead of waiting.
- **Crash:** nothing counts before ``state.json`` is replaced; the next pass first removes every
  file the committed state does not list and re-reads the sources from the committed checkpoints,
  so it ends with exactly the rows of an uninterrupted pass.
- **Rebuild** (``rebuild=True``, or a state whose ``schema_version``, ``rules_version`` or
  ``bucket_seconds`` differs from the code's and the config's): every source is read from the
  start, all rows re-judged, the detector restarted; the report says ``rebuilt``. A changed
  ``detector_version`` only restarts the detector.
- **Nothing new:** when the sources yield no item and no problem, no pass is made: the committed
  pass stands (its number is reported) and only moved checkpoints are committed.
- **Problems** of the latest pass that had any stay listed (``problems/pass-N.jsonl``) until a
  later pass has its own.
- **Events:** the detector gets the aggregate rows of buckets at or after its state's
  ``horizon`` with its state; all rows and no state on a rebuild, without a usable state, or when
  a new verdict falls before the horizon (late data). ``closed_until`` defaults to the start of
  the newest bucket seen (that bucket stays open).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from msgwatch.analysis import lake
from msgwatch.analysis.aggregates import (
    EMPTY_VERDICTS,
    aggregate_rows,
    evidence_source,
    needed_sql,
    newest_bucket,
    period_start,
    write_aggregates,
)
from msgwatch.analysis.events.detect import (
    DETECTOR_VERSION,
    DetectorParams,
    NeedsAllRows,
    RowsNeeded,
    detect,
    rows_needed,
)
from msgwatch.analysis.events.model import Detection
from msgwatch.analysis.events.series import bucket_number
from msgwatch.analysis.inputs import Item, Mark, Problem, Source, bytes_left
from msgwatch.analysis.inputs.prefetch import prefetch
from msgwatch.analysis.schema import (
    ENVELOPE_COLUMNS,
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    SCHEMA_VERSION,
    VERDICT_COLUMNS,
    checked_bucket_seconds,
)
from msgwatch.analysis.transform import RULES_VERSION
from msgwatch.analysis.workers import ChunkResult, analyse
from msgwatch.durable import flocked, write_durably

MAX_REPORTED_PROBLEMS: Final = 100


class PassBusy(RuntimeError):
    """Another pass holds the output directory's lock."""


@dataclass(frozen=True)
class PassProgress:
    """Where a pass is: items read and analysed, problems so far, the last place read."""

    read: int
    analysed: int
    problems: int
    where: str
    phase: str = "reading"  # reading, writing, aggregates, events, committing, done
    read_bytes: int = 0  # of the sources' files, as their Marks count them
    total_bytes: int | None = None  # what the sources had left to read at the start (None: unknown)


@dataclass(frozen=True)
class PassConfig:
    """What a pass reads, where it writes, and how."""

    sources: Sequence[Source]
    out_dir: Path
    bucket_seconds: int = 3600  # aggregates and events; ≥ 1
    workers: int = 2  # processes for parse + transform; 1 = in this process
    rebuild: bool = False  # forget the state: re-read every source, re-judge, re-detect
    max_line_bytes: int = 16 * 1024 * 1024
    progress: Callable[[PassProgress], None] | None = None
    closed_until: dt.datetime | None = None  # buckets before this are final
    flush_rows: int = 100_000  # staged rows written as Parquet parts past this many
    compact_parts: int = 16  # a day's committed parts merged into one when a pass finds this many
    detector: DetectorParams | None = None  # the detector's knobs (None: defaults for the bucket)


@dataclass
class PassReport:
    """What a pass did."""

    pass_number: int
    out_dir: str
    sources_read: int = 0
    items: int = 0
    measurements: int = 0
    observations: int = 0
    verdicts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: int = 0
    first_problems: list[tuple[str, str]] = field(default_factory=list)
    aggregates: int = 0
    aggregates_from: str | None = None
    """The first bucket this pass recounted (None: all of them, or none were new)."""
    aggregate_files_written: int = 0
    """Monthly aggregates files this pass wrote (the months from ``aggregates_from``'s on)."""
    events: int = 0
    events_carried: int = 0
    """Network events taken as they were from the committed pass (final: closed before its
    horizon), not summarised again."""
    seconds: float = 0.0
    rebuilt: bool = False
    rebuild_reason: str | None = None
    new_pass: bool = True  # False: nothing was new, the committed pass stands

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        data = asdict(self)
        data["first_problems"] = [
            {"where": where, "reason": reason} for where, reason in self.first_problems
        ]
        return data


def _part_day(relative: str) -> str:
    """The day of a table part's path (``verdicts/day=YYYY-MM-DD/…``); ``~``, after every date,
    for a path without one (such a part is always read)."""
    parts = relative.split("/")
    return parts[1].removeprefix("day=") if len(parts) > 2 else "~"


def rebuild_reason(state: dict[str, Any] | None, config: PassConfig) -> str | None:
    """Why the committed state cannot be continued (None: it can)."""
    if config.rebuild:
        return "asked"
    if state is None:
        return None
    for key, ours in (
        ("schema_version", SCHEMA_VERSION),
        ("rules_version", RULES_VERSION),
        ("bucket_seconds", config.bucket_seconds),
    ):
        if state.get(key) != ours:
            return f"{key} {state.get(key)!r} → {ours!r}"
    return None


def run_pass(config: PassConfig) -> PassReport:
    """Run one pass over ``config.sources`` into ``config.out_dir`` (see the module's rules)."""
    checked_bucket_seconds(config.bucket_seconds)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with flocked(config.out_dir / lake.LOCK, wait=False) as locked:
        if not locked:
            raise PassBusy(f"another pass is running in {config.out_dir}")
        return _Pass(config).run()


class _Pass:
    """The state of one running pass."""

    def __init__(self, config: PassConfig) -> None:
        self.config = config
        self.out = config.out_dir
        self.started = time.monotonic()
        self.state = lake.read_state(self.out)
        self.reason = rebuild_reason(self.state, config)
        self.fresh = self.state is None or self.reason is not None
        self.number = int((self.state or {}).get("pass", 0)) + 1
        self.report = PassReport(pass_number=self.number, out_dir=os.fspath(self.out))
        self.report.rebuilt = self.reason is not None
        self.report.rebuild_reason = self.reason
        old_sources = {} if self.fresh else (self.state or {}).get("sources", {})
        self.checkpoints: dict[str, Any] = dict(
            old_sources if isinstance(old_sources, dict) else {}
        )
        self.skipped: Counter[str] = Counter()
        self.where = ""
        self.read_bytes = 0  # the sources' Marks' sizes so far (progress)
        self.total_bytes: int | None = None  # what they had left at the start (progress)
        self.earliest: str | None = None

    def run(self) -> PassReport:
        """Read, write, aggregate, detect, commit."""
        lake.remove_unlisted(self.out, self.state)
        work = lake.prepare(self.out)
        problems_path = work / "problems.jsonl"
        with lake.connect(work) as connection, open(problems_path, "ab") as problems:
            stagers = {
                name: lake.Stager(self.out, work, name, columns, self.number, nested)
                for name, columns, nested in (
                    ("observations", OBSERVATION_COLUMNS, ENVELOPE_COLUMNS),
                    ("verdicts", VERDICT_COLUMNS, ()),
                )
            }
            with lake.Flusher(connection) as flusher:
                for result in analyse(
                    self._items(problems),
                    self.config.workers,
                    self.config.max_line_bytes,
                    work=work,
                ):
                    self._take(result, stagers, problems)
                    if sum(s.rows for s in stagers.values()) >= self.config.flush_rows:
                        flusher.flush(stagers.values())  # in the background: reading goes on
                self._progress("writing")
                flusher.flush(stagers.values())
                flusher.wait()
            problems.flush()
            if self.report.items == 0 and self.report.problems == 0 and not self.fresh:
                report = self._nothing_new()
                lake.remove_unlisted(self.out, self.state)
                return report
            files = self._files(connection, stagers, problems_path)
            self._aggregate(connection, files)
            self._detect(connection, files)
            new_state = self._state(files)
            self._progress("committing")
            lake.write_state(self.out, new_state)
        lake.remove_unlisted(self.out, new_state)
        self.report.skipped = dict(sorted(self.skipped.items()))
        self.report.seconds = round(time.monotonic() - self.started, 3)
        self._progress("done")
        return self.report

    def _items(self, problems: Any) -> Iterator[Item]:
        """Every source's items; problems go to the problems file, marks to the checkpoints."""
        if self.config.progress is not None:  # the bar's total: asked of the sources only for it
            left = [bytes_left(s, self.checkpoints.get(s.name)) for s in self.config.sources]
            self.total_bytes = None if None in left else sum(n for n in left if n is not None)
        for source in self.config.sources:
            self.report.sources_read += 1
            name = source.name
            try:
                for read in prefetch(functools.partial(source.read, self.checkpoints.get(name))):
                    if isinstance(read, Item):
                        self.report.items += 1
                        self.where = read.where
                        if self.report.items % 1024 == 0:
                            self._progress("reading")
                        yield read
                    elif isinstance(read, Problem):
                        self._problem(problems, read.where, read.reason)
                    elif isinstance(read, Mark):
                        self.checkpoints[name] = read.checkpoint
                        self.read_bytes += read.size
            except Exception as exc:  # a source's bug: reported, the other sources still read
                self._problem(problems, name, f"source_error: {type(exc).__name__}: {exc}"[:300])

    def _problem(self, problems: Any, where: str, reason: str) -> None:
        self.report.problems += 1
        if len(self.report.first_problems) < MAX_REPORTED_PROBLEMS:
            self.report.first_problems.append((where, reason))
        problems.write(
            orjson.dumps({"where": where, "reason": reason}, option=orjson.OPT_APPEND_NEWLINE)
        )

    def _take(self, result: ChunkResult, stagers: dict[str, lake.Stager], problems: Any) -> None:
        """Count a chunk's result and stage its rows."""
        self.report.measurements += result.measurements
        self.skipped.update(result.skipped)
        for where, reason in result.problems:
            self._problem(problems, where, reason)
        for table, rows in (
            ("observations", result.observation_rows),
            ("verdicts", result.verdict_rows),
        ):
            if table in result.files:  # handed back as files (workers.analyse's work folder)
                stagers[table].add_files(result.files[table], rows)
            else:
                stagers[table].add(getattr(result, table), rows)
        self.report.observations += sum(result.observation_rows.values())
        self.report.verdicts += sum(result.verdict_rows.values())
        if result.earliest is not None and (
            self.earliest is None or result.earliest < self.earliest
        ):
            self.earliest = result.earliest
        self._progress("reading")

    def _progress(self, phase: str) -> None:
        if self.config.progress is not None:
            analysed = self.report.measurements + self.report.problems
            total, done = self.total_bytes, self.read_bytes
            if total is not None:  # the reading is over after its phase, whatever was counted
                done = min(done, total) if phase == "reading" else total
            progress = PassProgress(
                self.report.items, analysed, self.report.problems, self.where, phase, done, total
            )
            self.config.progress(progress)

    def _old_files(self, key: str) -> list[str]:
        if self.fresh:
            return []
        value = (self.state or {}).get("files", {}).get(key, [])
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def _files(
        self, connection: Any, stagers: dict[str, lake.Stager], problems_path: Path
    ) -> dict[str, Any]:
        """The new state's file lists (old parts compacted; the problems file moved in)."""
        files: dict[str, Any] = {
            name: stager.compact(connection, self._old_files(name), self.config.compact_parts)
            + stager.written
            for name, stager in stagers.items()
        }
        if self.report.problems:
            relative = lake.pass_file("problems", self.number, ".jsonl")
            lake.write_new_file(self.out / relative, problems_path)
            files["problems"] = relative
        else:  # the latest problems stay listed
            latest = None if self.fresh else (self.state or {}).get("files", {}).get("problems")
            if isinstance(latest, str):
                files["problems"] = latest
        return files

    def _aggregate(self, connection: Any, files: dict[str, Any]) -> None:
        """The aggregates over all verdicts, one file per month (``aggregates/pass-N-YYYY-MM``),
        counted one period at a time (:func:`~msgwatch.analysis.aggregates.write_aggregates`):
        the periods from this pass's earliest new verdict's on recounted, the committed rows
        before it carried over, the months before its kept as committed files; all recounted on
        a fresh pass."""
        self._progress("aggregates")
        seconds = self.config.bucket_seconds
        verdict_files = lake.absolute(self.out, files["verdicts"])
        parts = [
            (_part_day(name), path)
            for name, path in zip(files["verdicts"], verdict_files, strict=True)
        ]
        committed = self._committed_aggregates()
        kept: list[str] = []
        if committed is None or self.earliest is None:
            written = write_aggregates(connection, parts, seconds, self.out, self.number)
        else:
            cutoff = period_start(self.earliest, seconds)
            month = cutoff.strftime("%Y-%m")
            kept = [name for name, of in committed if of < month]
            carried = [name for name, of in committed if of >= month]
            written = write_aggregates(
                connection,
                parts,
                seconds,
                self.out,
                self.number,
                since=cutoff,
                carried=lake.absolute(self.out, carried),
            )
            self.report.aggregates_from = cutoff.strftime("%Y-%m-%d %H:%M:%S")
        files["aggregates"] = kept + written
        self.report.aggregate_files_written = len(written)
        listed = lake.absolute(self.out, files["aggregates"])
        count = 0
        if listed:
            (count,) = connection.execute(
                f"SELECT count(*) FROM {lake.read_parquet_sql(listed)}"
            ).fetchone() or (0,)
        self.report.aggregates = int(count)

    def _committed_aggregates(self) -> list[tuple[str, str]] | None:
        """The committed aggregates files and their months, when this pass continues the
        committed state; None when it does not, or when a listed file is missing or has no month
        (a lake written before monthly files: recounted once)."""
        if self.fresh:
            return None
        listed = (self.state or {}).get("files", {}).get("aggregates")
        if not isinstance(listed, list):
            return None
        found: list[tuple[str, str]] = []
        for relative in listed:
            month = lake.aggregate_month(relative) if isinstance(relative, str) else None
            if month is None or not (self.out / relative).is_file():
                return None
            found.append((relative, month))
        return found

    def _detector_state(self) -> dict[str, Any] | None:
        """The committed detector state, when it can be continued (not on late data)."""
        if self.fresh:
            return None
        old = lake.read_json_file(self.out, (self.state or {}).get("files", {}).get("detector"))
        if not isinstance(old, dict):
            return None
        horizon = old.get("horizon")
        if isinstance(horizon, int) and self.earliest is not None:
            seconds = self.config.bucket_seconds
            since = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=horizon * seconds)
            if self.earliest < since.strftime("%Y-%m-%d %H:%M:%S"):
                return None  # late data: a verdict before the horizon, so detect from all
        return old

    def _detect(self, connection: Any, files: dict[str, Any]) -> None:
        """Run the detector over the aggregate rows it needs (all of them on a fresh pass or late
        data; else those :func:`rows_needed` says); write events and its state."""
        self._progress("events")
        params = self.config.detector or DetectorParams(bucket_seconds=self.config.bucket_seconds)
        state = self._detector_state()
        aggregates = lake.absolute(self.out, files["aggregates"])
        verdict_files = lake.absolute(self.out, files["verdicts"])  # the evidence's
        source = lake.read_parquet_sql(verdict_files) if verdict_files else f"({EMPTY_VERDICTS})"
        connection.execute(f"CREATE OR REPLACE TEMP VIEW verdicts AS SELECT * FROM {source}")
        windows = self.out / lake.WORK / "windows.ndjson"
        needed = rows_needed(params, state)
        where = None if needed is None else needed_sql(needed, params.bucket_seconds)

        def run(where: str | None, rows_from: RowsNeeded | None) -> Detection:
            newest = newest_bucket(connection, aggregates, where)
            return detect(
                aggregate_rows(connection, aggregates, where, by_scope=True),
                params,
                state,
                self.config.closed_until,
                evidence_source(connection, windows),
                RULES_VERSION,
                rows_from,
                by_scope=True,
                newest=None if newest is None else bucket_number(newest, params.bucket_seconds),
            )

        try:
            detection = run(where, needed)
        except NeedsAllRows:
            detection = run(None, None)
        self.report.events_carried = detection.carried
        self.report.events = len(detection.events)
        events = lake.pass_file("events", self.number, ".parquet")
        table = lake.staged_table(
            self.out / lake.WORK / "events.ndjson", detection.events, EVENT_COLUMNS
        )
        lake.copy_to_parquet(connection, table, self.out / events)
        listing = lake.pass_file("events", self.number, ".json")
        write_durably(self.out / listing, orjson.dumps(detection.events), mode=0o644)
        detector = lake.pass_file("detector", self.number, ".json")
        write_durably(self.out / detector, orjson.dumps(detection.state), mode=0o644)
        files.update(events=events, events_json=listing, detector=detector)

    def _state(self, files: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "rules_version": RULES_VERSION,
            "detector_version": DETECTOR_VERSION,
            "pass": self.number,
            "bucket_seconds": self.config.bucket_seconds,
            "sources": self.checkpoints,
            "files": files,
            "counts": {"aggregates": self.report.aggregates, "events": self.report.events},
            "committed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }

    def _nothing_new(self) -> PassReport:
        """No item, no problem: keep the committed pass; commit moved checkpoints only."""
        state = dict(self.state or {})
        if state.get("sources") != self.checkpoints:
            state["sources"] = self.checkpoints
            lake.write_state(self.out, state)
        self.state = state
        counts = state.get("counts", {})
        self.report.pass_number = int(state.get("pass", 0))
        self.report.new_pass = False
        self.report.aggregates = int(counts.get("aggregates", 0))
        self.report.events = int(counts.get("events", 0))
        self.report.seconds = round(time.monotonic() - self.started, 3)
        return self.report

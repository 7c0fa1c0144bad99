"""The aggregates of a window as one relation, whole weeks and days read from roll-ups.

A year of hourly aggregates is tens of millions of rows; the views of long windows read them
through roll-ups instead, built ahead once per committed aggregates file (one per month). Rules:

- A roll-up is one aggregates file grouped by a step (:data:`LEVELS`: a day; seven days from the
  epoch) and every other key, with ``measurements`` and ``control_ok`` summed, ``probes`` the
  maximum, ``bucket`` the step's start and ``last`` the latest hourly bucket of the group. A week
  that straddles two months has a row in each month's weekly roll-up: the readers sum
  ``measurements`` and ``control_ok`` and take the maximum of ``probes`` and ``last`` over rows,
  so the figures are those of the hourly rows.
- Roll-ups are written, sorted by bucket, to a private cache folder (:func:`cache_dir`: the
  user's own, mode 0700, in the system's temporary folder, outside the lake, which the dashboard
  never writes) under names made of the lake's path and the aggregates file's name, size and
  mtime. An incremental pass rewrites the months from its earliest new bucket's on (usually the
  last one or two), so only their roll-ups are built again; the others keep their names. When a
  lake is warmed, its roll-ups of files its committed state no longer lists (or whose size and
  mtime cannot be read) are removed, and other lakes' roll-ups are kept, whole lakes, the most
  recently built first, while they hold at most :data:`MAX_FILES` files. A cache folder that is
  not the user's own, or a build that fails, means no roll-up for that file: its hourly
  aggregates are read. A roll-up removed while a query reads it is dropped by the query's
  retry (:meth:`.Reader.query`).
- Only :func:`warm` builds (one build at a time, under a lock, on :data:`BUILD_THREADS` of
  DuckDB's threads; a second call finds the files and returns). Reads (:func:`relation`,
  :func:`ready`) never build and never wait for a build: they use the roll-ups already written
  (each appears whole, by rename) and read the hourly rows of the months not built yet.
- :func:`relation` is a window's rows with the aggregates' columns plus ``last`` (the row's own
  bucket for hourly rows): the whole weeks inside the window from the weekly roll-ups, the whole
  days left from the daily ones, the partial days at the edges from the hourly aggregates, so sums
  over it are exact. A roll-up level is used only when the caller's grain is a multiple of its step
  (:data:`ANY_GRAIN`: no time steps needed), the window holds a whole day and the lake's bucket
  divides a day; else every row is hourly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb

from msgwatch.analysis import lake
from msgwatch.dashboard.data_cache import stamp
from msgwatch.dashboard.data_sql import DAY, TIME_FORMAT, Reader, parse_time

COLUMNS: Final = (
    "bucket, probe_cc, probe_asn, service, function, verdict, mechanism, measurements, probes, "
    "control_ok"
)
WEEK: Final = 7 * DAY
LEVELS: Final = (DAY, WEEK)
"""The roll-ups' steps: days, and weeks of seven days from the epoch (a Thursday)."""
MAX_FILES: Final = 256
"""The most roll-up files the cache keeps of lakes other than the one warmed (whole lakes, the
most recently built first; two per month of a lake's aggregates)."""
ANY_GRAIN: Final = 0
"""The grain of a caller that needs no time steps (totals only)."""
BUILD_THREADS: Final = 1
"""DuckDB's threads for a build (it runs beside the views: one core stays theirs)."""
_LOCK: Final = threading.Lock()
_EPOCH: Final = dt.datetime(1970, 1, 1)


def cache_dir() -> Path | None:
    """The user's private cache folder (created 0700); None when it is not safely ours."""
    folder = Path(tempfile.gettempdir()) / f"msgwatch-dashboard-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    try:
        info = folder.lstat()
    except OSError:
        return None
    mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    return folder if mine and stat.S_IMODE(info.st_mode) & 0o077 == 0 else None


@dataclass(frozen=True)
class Level:
    """One roll-up step over the committed aggregates files: the roll-ups built (one per file),
    and the aggregates files whose roll-up is not built yet (their rows are read hourly)."""

    built: tuple[str, ...]
    pending: tuple[str, ...]


def relation(reader: Reader, window: tuple[str, str], grain: int) -> str | None:
    """The window's aggregate rows (with ``last``) as a parenthesised SELECT; None: no rows."""
    files = reader.files("aggregates")
    if not files:
        return None
    hourly = _hourly(files)
    levels: list[tuple[int, Level]] = []
    if DAY % reader.bucket_seconds == 0 and grain % DAY == 0 and _spans_a_day(window):
        found = ready(reader, files)
        levels = [(s, level) for s, level in found.items() if grain % s == 0]
    parts = _parts(window, sorted(levels, reverse=True), hourly)
    return "(" + " UNION ALL ".join(parts) + ")"


def _hourly(files: list[str] | tuple[str, ...]) -> str:
    return f"SELECT {COLUMNS}, bucket AS last FROM {lake.read_parquet_sql(list(files))}"


def _parts(window: tuple[str, str], levels: list[tuple[int, Level]], hourly: str) -> list[str]:
    """SELECTs covering the window: the coarsest level's whole steps, the rest finer."""
    since, until = window
    if not levels:
        return [f"{hourly} WHERE {_between(since, until)}"]
    (seconds, level), finer = levels[0], levels[1:]
    start, end = _aligned(since, seconds, up=True), _aligned(until, seconds, up=False)
    if start >= end:
        return _parts(window, finer, hourly)
    within = _between(start, end)
    parts = [f"SELECT {COLUMNS}, last FROM {lake.read_parquet_sql(list(level.built))} "
             f"WHERE {within}"]  # fmt: skip
    if level.pending:  # months not rolled up yet: their hours of the same whole steps
        parts.append(f"{_hourly(level.pending)} WHERE {within}")
    for low, high in ((since, start), (end, until)):
        if low < high:
            parts += _parts((low, high), finer, hourly)
    return parts


def _targets(reader: Reader, aggregates: list[str]) -> dict[str, dict[int, Path]] | None:
    """Each aggregates file's roll-up files (file → seconds → path), the files that cannot be
    read left out; None when there is no cache."""
    folder = cache_dir()
    if folder is None:
        return None
    lake_key = _hash(os.fspath(reader.lake_dir.resolve()))
    out: dict[str, dict[int, Path]] = {}
    for name in aggregates:
        found = stamp(name)
        if found:
            key = _hash(f"{name}\0{found}")
            out[name] = {s: folder / f"{lake_key}-{key}-{s}.parquet" for s in LEVELS}
    return out


def ready(reader: Reader, aggregates: list[str]) -> dict[int, Level]:
    """The roll-ups of the aggregates files already built, per step (only steps with at least
    one); never builds or waits."""
    targets = _targets(reader, aggregates) or {}
    out: dict[int, Level] = {}
    for seconds in LEVELS:
        built, pending = [], []
        for name in aggregates:
            path = targets.get(name, {}).get(seconds)
            if path is not None and path.exists():
                built.append(os.fspath(path))
            else:
                pending.append(name)
        if built:
            out[seconds] = Level(tuple(built), tuple(pending))
    return out


def warm(reader: Reader) -> dict[int, Level]:
    """Build the roll-ups of the committed aggregates files that are missing (one build at a
    time; idempotent); returns those there are then ({} when there are none: no aggregates, no
    cache, failed builds)."""
    files = reader.files("aggregates")
    targets = _targets(reader, files) if files else None
    if not targets:
        return {}
    folder = next(iter(next(iter(targets.values())).values())).parent
    with _LOCK:
        for name, paths in targets.items():
            if not all(p.exists() for p in paths.values()):
                _build([name], paths)
        keep = {path for paths in targets.values() for path in paths.values()}
        _prune(folder, _hash(os.fspath(reader.lake_dir.resolve())), keep)
    return ready(reader, files)


def _prune(folder: Path, lake_key: str, keep: set[Path]) -> None:
    """Remove the lake's roll-ups that are not in ``keep``; of other lakes' (finished test runs,
    moved or deleted lakes, another dashboard's), keep whole lakes, the most recently built first,
    while they hold at most :data:`MAX_FILES` files."""
    lakes: dict[str, list[tuple[float, Path]]] = {}
    for path in folder.glob("*.parquet"):
        with contextlib.suppress(OSError):
            lakes.setdefault(path.name.split("-", 1)[0], []).append((path.stat().st_mtime, path))
    doomed = [path for _, path in lakes.pop(lake_key, []) if path not in keep]
    held = 0
    for files in sorted(lakes.values(), key=lambda fs: max(fs)[0], reverse=True):
        held += len(files)
        if held > MAX_FILES:
            doomed += [path for _, path in files]
    for path in doomed:
        with contextlib.suppress(OSError):
            path.unlink()


def forget(lake_dir: Path) -> int:
    """Remove a lake's roll-ups from the cache; returns how many files went."""
    folder = cache_dir()
    if folder is None:
        return 0
    removed = 0
    for old in folder.glob(f"{_hash(os.fspath(Path(lake_dir).resolve()))}-*.parquet"):
        with contextlib.suppress(OSError):
            old.unlink()
            removed += 1
    return removed


def _build(aggregates: list[str], targets: dict[int, Path]) -> bool:
    """Write the roll-ups of the ``aggregates`` files (each from the next finer; temporary
    names, rename)."""
    work = Path(tempfile.mkdtemp(dir=next(iter(targets.values())).parent))
    try:
        source, last = lake.read_parquet_sql(aggregates), "bucket"
        with lake.connect(work) as connection:
            connection.execute(f"SET threads={BUILD_THREADS}")
            for seconds in sorted(targets):
                partial = work / f"{seconds}.parquet"
                select = (
                    f"SELECT {_step(seconds)} AS bucket, probe_cc, probe_asn, service, function, "
                    "verdict, mechanism, CAST(sum(measurements) AS BIGINT) AS measurements, "
                    "max(probes) AS probes, CAST(sum(control_ok) AS BIGINT) AS control_ok, "
                    f"max({last}) AS last "
                    f"FROM {source} GROUP BY ALL "
                    "ORDER BY bucket, probe_cc, probe_asn, service, function, verdict, mechanism"
                )
                connection.execute(
                    f"COPY ({select}) TO {lake.sql_text(os.fspath(partial))} (FORMAT PARQUET)"
                )
                source, last = lake.read_parquet_sql([os.fspath(partial)]), "last"
            for seconds, target in targets.items():
                os.replace(work / f"{seconds}.parquet", target)
        return True
    except (duckdb.Error, OSError):  # no roll-up: the hourly aggregates are read instead
        return False
    finally:
        for leftover in work.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        with contextlib.suppress(OSError):
            work.rmdir()


def _step(seconds: int) -> str:
    return f"time_bucket(INTERVAL {int(seconds)} SECOND, bucket, TIMESTAMP '1970-01-01')"


def _spans_a_day(window: tuple[str, str]) -> bool:
    return _aligned(window[0], DAY, up=True) < _aligned(window[1], DAY, up=False)


def _aligned(value: str, seconds: int, up: bool) -> str:
    """``value`` rounded to a multiple of ``seconds`` since the epoch (up or down)."""
    at = int((parse_time(value) - _EPOCH).total_seconds())
    step = -(-at // seconds) * seconds if up else at // seconds * seconds
    return (_EPOCH + dt.timedelta(seconds=step)).strftime(TIME_FORMAT)


def _between(low: str, high: str) -> str:
    return (
        f"bucket >= CAST({lake.sql_text(low)} AS TIMESTAMP) "
        f"AND bucket < CAST({lake.sql_text(high)} AS TIMESTAMP)"
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]

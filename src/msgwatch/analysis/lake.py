"""The analysis's output directory: its layout, file names, committed state and leftovers.

Layout (``OUT``)::

    state.json                                        the committed state, written last
    lock                                              flock: one pass at a time
    observations/day=YYYY-MM-DD/pass-NNNNNN-K.parquet
    verdicts/day=YYYY-MM-DD/pass-NNNNNN-K.parquet
    aggregates/pass-NNNNNN-YYYY-MM.parquet            one per month of buckets; a pass rewrites
                                                      only the months of its new buckets
    events/pass-NNNNNN.parquet + pass-NNNNNN.json
    detector/pass-NNNNNN.json                         the detector's state
    problems/pass-NNNNNN.jsonl
    .work/                                            staging, the chunks and rows handed to and
                                                      from the workers (analysis.handover) and
                                                      DuckDB's temporary files

Rules:

- Every file is written under a temporary name and renamed (:mod:`msgwatch.durable`); ``state.json``
  is replaced last, atomically, and lists every file of the committed lake. A reader that goes by
  the state never sees a half-written pass.
- A file under the lake's folders that the committed state does not list is garbage: a crashed
  pass's parts, or files a later pass replaced (older aggregates, events, detector states; the old
  files after a rebuild). :func:`remove_unlisted` removes them, at a pass's start (the crash's
  leftovers) and after its commit.
- A day's parts are merged into one (:meth:`Stager.compact`) once a pass finds
  ``compact_parts`` of them (the pass's config), so frequent small passes do not leave thousands of small files.
- ``state.json`` is read bounded and never through a link; one that is not a JSON object is
  treated as no state (the next pass rebuilds).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

from msgwatch.analysis.handover import DAY, day_name
from msgwatch.analysis.schema import Columns
from msgwatch.durable import read_bounded, replacing, write_durably

STATE: Final = "state.json"
LOCK: Final = "lock"
WORK: Final = ".work"
TABLE_DIRS: Final = ("observations", "verdicts")
PASS_DIRS: Final = ("aggregates", "events", "detector", "problems")
MAX_STATE_BYTES: Final = 256 * 1024 * 1024
DUCKDB_THREADS: Final = 2
FLUSH_THREADS: Final = 1
"""DuckDB's threads while a pass reads (:class:`Flusher`)."""
DUCKDB_MEMORY: Final = "512MB"  # the pass and every query: DuckDB spills to .work beyond it


def pass_name(number: int) -> str:
    """``pass-NNNNNN``."""
    return f"pass-{number:06d}"


def part_path(table: str, day: str, number: int, part: int) -> str:
    """The relative path of one Parquet part of a day's rows."""
    return f"{table}/day={day}/{pass_name(number)}-{part}.parquet"


def pass_file(folder: str, number: int, suffix: str) -> str:
    """The relative path of a per-pass file (``aggregates/pass-NNNNNN.parquet``, …)."""
    return f"{folder}/{pass_name(number)}{suffix}"


def aggregate_part(number: int, month: str) -> str:
    """The relative path of one month's aggregates, written by pass ``number``
    (``aggregates/pass-NNNNNN-YYYY-MM.parquet``)."""
    return f"aggregates/{pass_name(number)}-{month}.parquet"


_AGGREGATE_PART = re.compile(r"aggregates/pass-[0-9]{6,}-([0-9]{4}-[0-9]{2})\.parquet")


def aggregate_month(relative: str) -> str | None:
    """The month (``YYYY-MM``) of an aggregates part's buckets, None for any other name (such as
    the single ``aggregates/pass-NNNNNN.parquet`` of a lake written before monthly parts)."""
    found = _AGGREGATE_PART.fullmatch(relative)
    return found.group(1) if found else None


def read_state(out_dir: Path) -> dict[str, Any] | None:
    """The committed state, or None when there is none (or it is unreadable)."""
    try:
        data = read_bounded(out_dir / STATE, MAX_STATE_BYTES)
    except OSError:
        return None
    if data is None:
        return None
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None


def read_json_file(out_dir: Path, relative: Any) -> Any:
    """A JSON file of the lake by its relative path (None when missing, too big or not JSON)."""
    if not isinstance(relative, str) or ".." in Path(relative).parts:
        return None
    try:
        data = read_bounded(out_dir / relative, MAX_STATE_BYTES)
        return None if data is None else orjson.loads(data)
    except (OSError, orjson.JSONDecodeError):
        return None


def write_new_file(target: Path, source: Path) -> None:
    """Copy ``source`` to ``target`` durably (temporary name, fsync, rename)."""
    with open(source, "rb") as handle:
        write_durably(target, iter(lambda: handle.read(1 << 20), b""), mode=0o644)


def write_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Commit ``state`` (temporary file, fsync, rename, directory fsync)."""
    write_durably(out_dir / STATE, orjson.dumps(state, option=orjson.OPT_INDENT_2), mode=0o644)


def listed_files(state: dict[str, Any] | None) -> set[str]:
    """Every relative path the state lists."""
    files = (state or {}).get("files")
    found: set[str] = set()
    if not isinstance(files, dict):
        return found
    for value in files.values():
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def _lake_files(out_dir: Path) -> Iterator[str]:
    """The relative paths (``table/day=…/name``) of everything under the lake's folders that is
    not a folder: files, and links of any kind (never followed). ``os.walk`` over strings: a
    year's lake holds thousands of parts, and a pass lists them twice."""
    for folder in (*TABLE_DIRS, *PASS_DIRS):
        for top, folders, names in os.walk(os.path.join(out_dir, folder)):
            relative = os.path.relpath(top, out_dir).replace(os.sep, "/")
            links = [f for f in folders if os.path.islink(os.path.join(top, f))]
            yield from (f"{relative}/{name}" for name in (*names, *links))


def remove_unlisted(out_dir: Path, state: dict[str, Any] | None) -> int:
    """Remove the lake's files the state does not list, empty day folders and the work folder;
    returns how many files went."""
    keep = listed_files(state)
    removed = 0
    for relative in list(_lake_files(out_dir)):
        if relative not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out_dir, relative))
                removed += 1
    for folder in TABLE_DIRS:
        root = out_dir / folder
        if root.is_dir():
            for day in root.iterdir():
                with contextlib.suppress(OSError):
                    day.rmdir()  # only when empty
    shutil.rmtree(out_dir / WORK, ignore_errors=True)
    return removed


def prepare(out_dir: Path) -> Path:
    """Create the lake's folders; returns a fresh, empty work folder."""
    for folder in (*TABLE_DIRS, *PASS_DIRS):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    work = out_dir / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    return work


def absolute(out_dir: Path, relative: list[str]) -> list[str]:
    """The files' absolute paths, as text (for DuckDB)."""
    return [os.fspath(out_dir / name) for name in relative]


def connect(temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's limits (threads, memory, temporary folder).

    Without ``temp_dir`` a query that outgrows the memory limit spills into the system's temporary
    folder (``msgwatch-duckdb-<uid>``), never into DuckDB's default, ``.tmp`` in the working
    directory (a reader's working directory may be a checkout or read-only).

    Parquet footers are cached for the connection's life (``parquet_metadata_cache``): a pass
    reads every verdict part more than once (the aggregates' dedup, the events' evidence), and
    the lake's files are never rewritten under a name a committed state listed.
    """
    connection = duckdb.connect(":memory:")
    connection.execute("SET parquet_metadata_cache=true")
    connection.execute(f"SET threads={DUCKDB_THREADS}")
    connection.execute(f"SET memory_limit='{DUCKDB_MEMORY}'")
    if temp_dir is None:
        temp_dir = Path(tempfile.gettempdir()) / f"msgwatch-duckdb-{os.getuid()}"
    connection.execute("SET temp_directory=?", [os.fspath(temp_dir)])
    return connection


def sql_text(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def typed_select(columns: Columns, source: str) -> str:
    """``SELECT`` of ``columns`` in order from ``source``."""
    names = ", ".join(f'"{name}"' for name, _ in columns)
    return f"SELECT {names} FROM {source}"


def read_json_sql(path: Path | list[str], columns: Columns) -> str:
    """DuckDB's ``read_json`` of NDJSON files (one, or a list read in its order) with the
    table's column types."""
    spec = ", ".join(f"{sql_text(name)}: {sql_text(kind)}" for name, kind in columns)
    return _read_json([os.fspath(path)] if isinstance(path, Path) else path, spec)


def _read_json(paths: list[str], spec: str) -> str:
    """DuckDB's ``read_json`` of NDJSON files in their order, with the columns of ``spec``."""
    listed = ", ".join(sql_text(p) for p in paths)
    return (
        f"read_json([{listed}], format='newline_delimited', "
        f"columns={{{spec}}}, maximum_object_size=67108864)"
    )


def read_nested_sql(paths: list[str], columns: Columns, shared: tuple[str, ...]) -> str:
    """The rows of NDJSON files of measurement lines (``{"m": {shared columns}, "r": [{the
    others}, ...]}``, :func:`msgwatch.analysis.workers.measurement_line`), one per element of
    ``r``, as a ``SELECT`` of ``columns`` in order with the table's types (a column a line does
    not name is NULL)."""
    outer = ", ".join(f'"{name}" {kind}' for name, kind in columns if name in shared)
    inner = ", ".join(f'"{name}" {kind}' for name, kind in columns if name not in shared)
    spec = f"'m': {sql_text(f'STRUCT({outer})')}, 'r': {sql_text(f'STRUCT({inner})[]')}"
    source = _read_json(paths, spec)
    picked = ", ".join(
        f'{"m" if name in shared else "r"}."{name}" AS "{name}"' for name, _ in columns
    )
    return f"SELECT {picked} FROM (SELECT m, unnest(r) AS r FROM {source})"


def empty_select(columns: Columns) -> str:
    """A ``SELECT`` of no rows with the table's columns and types."""
    casts = ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind in columns)
    return f"SELECT {casts} WHERE false"


def staged_table(staging: Path, rows: list[dict[str, Any]], columns: Columns) -> str:
    """A ``SELECT`` of ``rows`` with the table's types, staged as NDJSON at ``staging``."""
    if not rows:
        return empty_select(columns)
    staging.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
    return typed_select(columns, read_json_sql(staging, columns))


def read_parquet_sql(files: list[str]) -> str:
    """DuckDB's ``read_parquet`` of the files (no hive columns: ``day`` is in the rows)."""
    listed = ", ".join(sql_text(name) for name in files)
    return f"read_parquet([{listed}], hive_partitioning=false, union_by_name=true)"


def copy_to_parquet(
    connection: duckdb.DuckDBPyConnection,
    select: str,
    target: Path,
    row_group_size: int | None = None,
) -> None:
    """Write the rows of ``select`` to ``target`` (temporary name, fsync, rename), in row groups
    of ``row_group_size`` rows when given (DuckDB's default: 122,880)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    options = "FORMAT PARQUET"
    if row_group_size is not None:
        options += f", ROW_GROUP_SIZE {int(row_group_size)}"
    with replacing(target) as tmp:
        connection.execute(f"COPY ({select}) TO {sql_text(os.fspath(tmp))} ({options})")


class Stager:
    """Rows of one table staged as NDJSON per day, written as Parquet parts when flushed. With
    ``nested`` (the columns the rows of a measurement share) the staged lines are measurement
    lines (:func:`read_nested_sql`), else one row each.

    A flush writes each staged day as ``<table>/day=<day>/pass-NNNNNN-K.parquet`` (``K`` counts the
    day's parts in this pass) and empties the staging, so memory and staging space are bounded by
    the flush size, not the input's."""

    def __init__(
        self,
        out_dir: Path,
        work: Path,
        table: str,
        columns: Columns,
        number: int,
        nested: tuple[str, ...] = (),
    ):
        self.out_dir, self.table, self.columns, self.number = out_dir, table, columns, number
        self.nested = nested
        self.folder = work / table
        self.folder.mkdir()
        self.staged: dict[str, int] = {}  # day → rows staged
        self.spilled: dict[str, list[str]] = {}  # day → files of rows taken (add_files)
        self.parts: dict[str, int] = {}  # day → parts written
        self.written: list[str] = []  # relative paths of the parts written

    @property
    def rows(self) -> int:
        """Rows staged and not yet written."""
        return sum(self.staged.values())

    def add(self, chunks: dict[str, list[bytes]], rows: dict[str, int]) -> None:
        """Append NDJSON rows per day (pieces of whole lines)."""
        for day, pieces in chunks.items():
            name = day_name(day)  # odd days share "unknown"; their rows are counted by their own
            with open(self.folder / f"{name}.ndjson", "ab") as handle:
                handle.writelines(pieces)
            self.staged[name] = self.staged.get(name, 0) + rows.get(day, 0)

    def add_files(self, files: dict[str, str], rows: dict[str, int]) -> None:
        """Take files of NDJSON rows per day (a worker's, :mod:`.handover`); ``rows`` counts them by
        the rows' own ``day``. The files are removed once written. A pass stages either bytes
        (:meth:`add`) or files: a day's own staging file is written before its taken files."""
        for day, path in files.items():
            self.spilled.setdefault(day_name(day), []).append(path)
        for day, count in rows.items():
            name = day_name(day)
            self.staged[name] = self.staged.get(name, 0) + count

    def detach(self) -> list[tuple[list[str], str]]:
        """Hand over the staged days as ``(staging files, part)`` pairs and empty the staging.

        Each day's staging file is renamed out of the way (the files :meth:`add_files` took follow
        it) and its part name reserved (listed in :attr:`written`), so new rows can be staged
        while :func:`write_parts` writes these."""
        batch: list[tuple[list[str], str]] = []
        for day in sorted(set(self.staged) | set(self.spilled)):
            part = self.parts.get(day, 0)
            relative = part_path(self.table, day, self.number, part)
            staging = self.folder / f"{day}.ndjson"
            sources: list[str] = []
            if staging.exists():
                held = self.folder / f"{day}.{part}.ndjson"
                staging.rename(held)
                sources.append(os.fspath(held))
            sources += self.spilled.pop(day, [])
            if not sources or not self.staged.get(day):  # a bug: never a silent loss
                raise RuntimeError(f"{self.table} {day}: rows counted and files staged disagree")
            self.parts[day] = part + 1
            self.written.append(relative)
            batch.append((sources, relative))
        self.staged.clear()
        return batch

    def write_parts(
        self, connection: duckdb.DuckDBPyConnection, batch: list[tuple[list[str], str]]
    ) -> None:
        """Write a :meth:`detach` ed batch as Parquet parts (removing its staging files); safe in
        another thread with its own connection (``connection.cursor()``), since it touches no
        state of the stager."""
        for sources, relative in batch:
            select = (
                read_nested_sql(sources, self.columns, self.nested)
                if self.nested
                else typed_select(self.columns, read_json_sql(sources, self.columns))
            )
            copy_to_parquet(connection, select, self.out_dir / relative)
            for source in sources:
                os.unlink(source)

    def flush(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Write every staged day as a Parquet part and empty the staging."""
        self.write_parts(connection, self.detach())

    def compact(
        self, connection: duckdb.DuckDBPyConnection, old: list[str], threshold: int
    ) -> list[str]:
        """``old`` (the committed parts) with every day of ``threshold`` parts or more merged
        into one new part of this pass (the old parts go once the state is committed)."""
        by_day: dict[str, list[str]] = {}
        for name in old:
            by_day.setdefault(name.split("/")[1].removeprefix("day="), []).append(name)
        kept: list[str] = []
        for day, parts in by_day.items():
            if len(parts) < max(threshold, 2) or not DAY.fullmatch(day):
                kept += parts
                continue
            part = self.parts.get(day, 0)
            relative = part_path(self.table, day, self.number, part)
            source = read_parquet_sql(absolute(self.out_dir, parts))
            copy_to_parquet(connection, typed_select(self.columns, source), self.out_dir / relative)
            self.parts[day] = part + 1
            kept.append(relative)
        return kept


class Flusher:
    """Flushes stagers in one background thread, so the pass goes on reading and analysing while
    DuckDB writes the last batch (DuckDB lets go of the GIL while a statement runs).

    One flush at a time: :meth:`flush` first waits for the previous one, so at most two batches of
    staged rows exist at once. An error of the background write is raised by the next
    :meth:`flush` or :meth:`wait`; leaving the ``with`` block waits for the thread either way.

    While it is open the database runs on :data:`FLUSH_THREADS` thread(s), and on
    :data:`DUCKDB_THREADS` again once it is left: the pass's workers already keep the cores busy,
    and a second DuckDB thread for the write only adds its coordination and fresh memory (about a
    fifth more CPU per row written, ``benchmarks/analysis_throughput.py --costs``)."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._cursor = connection.cursor()  # the same database, its own connection for the thread
        self._cursor.execute(f"SET threads={FLUSH_THREADS}")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="msgwatch-flush")
        self._running: Future[None] | None = None

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        try:
            self._cursor.execute(f"SET threads={DUCKDB_THREADS}")
        except duckdb.Error:
            if exc[0] is None:
                raise
            # leaving on an error already: that error is the one to see, not this one
        finally:
            self._cursor.close()

    def flush(self, stagers: Iterable[Stager]) -> None:
        """Start writing what ``stagers`` hold (after the previous flush has ended)."""
        self.wait()
        batches = [(stager, stager.detach()) for stager in stagers]
        self._running = self._pool.submit(self._write, batches)

    def wait(self) -> None:
        """Wait for the flush in flight; raise its error."""
        running, self._running = self._running, None
        if running is not None:
            running.result()

    def _write(self, batches: list[tuple[Stager, list[tuple[list[str], str]]]]) -> None:
        for stager, batch in batches:
            stager.write_parts(self._cursor, batch)

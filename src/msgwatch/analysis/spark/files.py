"""Local inputs: listed on the driver, read on the executors by the DuckDB pass's own reader (no pyspark).

Spark's text source ends the whole job on one truncated gzip file (``EOFException``: the task
fails, then the stage), gives no line numbers, decodes invalid UTF-8 with replacement characters
and drops over-long lines uncounted. Inputs that every executor can open at the same path (a path
or a ``file:`` URI: the local file system, or one every machine mounts) are therefore read the way
the DuckDB pass reads them: :func:`list_files` expands the globs on the driver, and
:func:`analyse_files` reads each file on an executor with
:class:`msgwatch.analysis.inputs.jsonl.JsonlSource` and analyses its lines as
:func:`msgwatch.analysis.spark.rows.analyse_partition` does.

Rules:

- A glob with another scheme (``hdfs://``, ``s3a://``…) makes the whole run use Spark's text
  source (:mod:`msgwatch.analysis.spark.job`), with its limits (docs/analysis-spark.md).
- Every problem the DuckDB pass's JSONL and OONI sources report is reported with the same
  ``where`` (file and line) and reason: a truncated or damaged gzip member, a line over the limit,
  bytes that are not UTF-8, a line that is not a measurement; the file's other lines are analysed.
  A collector's archive file is read as JSONL too: its problems say ``file:line``, where the
  DuckDB pass's archive source says ``file@member offset:line``. A partition keeps its first 100
  problems and counts the rest.
- An input that exists is taken as written (its name may hold glob characters); otherwise it is a
  glob, and one matching nothing is a problem (``unreadable: no such files``). A directory given as
  a JSONL input stands for its ``.jsonl`` and ``.jsonl.gz`` files; OONI files are kept by the day
  of their ``raw/YYYYMMDD/`` folder (``ooni_since`` and ``ooni_until``, both read). Paths are made
  absolute on the driver: a file named twice (by two globs, or relative and absolute)
  is read once.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from msgwatch.analysis.inputs import Item, Problem
from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.spark.config import SparkConfig
from msgwatch.analysis.spark.rows import Counts, Tagged, tagged
from msgwatch.analysis.workers import CHUNK_ITEMS, analyse_chunk

OONI_DAY = re.compile(r"/raw/(\d{8})/")
"""The day of an OONI bucket file, in its path (both reading routes filter on it)."""


def local_path(pattern: str) -> str | None:
    """The file-system path of a glob (``file:`` URIs unwrapped and decoded); None for another
    scheme."""
    parts = urlsplit(pattern)
    if parts.scheme == "":
        return pattern
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return unquote(parts.path)
    return None


def _matches(path: str) -> list[Path]:
    """An existing path as written (a name may hold ``[`` or ``*``), else the glob's matches;
    absolute (symbolic links kept, as the DuckDB pass refuses them), so every executor opens the
    same file and a file named twice is one."""
    if os.path.lexists(path):
        return [Path(os.path.abspath(path))]
    return [Path(os.path.abspath(match)) for match in sorted(glob.glob(path))]


def list_files(config: SparkConfig) -> tuple[list[str], list[tuple[str, str]]] | None:
    """Every input file (in the inputs' order) and the problems of globs matching nothing; None
    when an input is not on a file system the executors share (Spark's text source reads then)."""
    patterns = []
    for kind, pattern in config.input_globs():
        path = local_path(pattern)
        if path is None:
            return None
        patterns.append((kind, pattern, path))
    files: dict[str, None] = {}
    problems: list[tuple[str, str]] = []
    for kind, pattern, path in patterns:
        matches = _matches(path)
        if not matches:
            problems.append((pattern, "unreadable: no such files"))
        for found in matches:
            listed = JsonlSource([found]).files() if found.is_dir() else [found]
            for file in listed:
                if kind != "ooni" or _in_days(config, str(file)):
                    files.setdefault(str(file), None)
    return list(files), problems


def _in_days(config: SparkConfig, path: str) -> bool:
    match = OONI_DAY.search(path)
    day = match.group(1) if match else ""
    if config.ooni_since and day < config.ooni_since.strftime("%Y%m%d"):
        return False
    return not (config.ooni_until and day > config.ooni_until.strftime("%Y%m%d"))


def analyse_files(paths: Iterable[str], max_line_bytes: int, keep: int = 100) -> Iterator[Tagged]:
    """The tagged rows of a partition of file paths (see :mod:`msgwatch.analysis.spark.rows`),
    the files' reading problems in one more ``("n", counts)``."""
    chunk: list[Item] = []
    problems: list[tuple[str, str]] = []  # the first ``keep``; the rest only counted
    count = 0
    for path in paths:
        for read in JsonlSource([Path(path)], max_line_bytes).read(None):
            if isinstance(read, Item):
                chunk.append(read)
                if len(chunk) >= CHUNK_ITEMS:
                    yield from tagged(analyse_chunk(chunk, max_line_bytes), keep)
                    chunk = []
            elif isinstance(read, Problem):
                count += 1
                if len(problems) < keep:
                    problems.append((read.where, read.reason))
    if chunk:
        yield from tagged(analyse_chunk(chunk, max_line_bytes), keep)
    if count:
        counts = Counts(problems=count)
        counts.first_problems = problems
        yield "n", counts

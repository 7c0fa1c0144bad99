"""JSONL files as a source: bare measurements or the collector's archive records, incrementally.

``JsonlSource(paths)`` reads each path in the order given (a directory stands for the ``*.jsonl``
and ``*.jsonl.gz`` files directly inside it, sorted by name). Its name is ``jsonl:<abs path>``
for one path and ``jsonl:<abs path>,<abs path>…`` for several; give each file its own source
(:func:`jsonl_sources`) so that adding a file to a command line does not rename the others'
state.

Its checkpoint is ``{abs file path: mark}`` where a file's mark is ``inode``, ``offset`` and
``line`` (where reading stopped), ``head`` (sha256 of its first ``head_len`` bytes: at most
64 KiB, and no more than was read of a plain file), ``gzip``, and ``size`` and ``mtime_ns`` taken
after the file was read to its end (None in a mark inside a file). On the next read:

- **unchanged** (same inode, size, mtime and head): nothing is read;
- **appended** (a plain file with the same inode and head, not shorter than ``offset``): read
  from ``offset``, numbering lines from ``line``. A last line without a newline is yielded but
  not counted as consumed: when the file grows it is read again, completed;
- **anything else** (replaced, rewritten, truncated, or a gzip file that changed): read again from
  the start.

A Mark follows every file read, and every :data:`MARK_EVERY` lines inside a plain file, so a crash
re-reads little. Lines go through :func:`.records.item_of` (archive records are unwrapped without
parsing the measurement); problems come from :mod:`.lines`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msgwatch.analysis.inputs import Checkpoint, Mark, Problem, Read
from msgwatch.analysis.inputs.lines import (
    MAX_LINE_BYTES,
    Line,
    file_identity,
    is_gzip,
    read_lines,
)
from msgwatch.analysis.inputs.records import item_of

HEAD_BYTES = 64 * 1024
MARK_EVERY = 50_000
SUFFIXES = (".jsonl", ".jsonl.gz")


def jsonl_sources(paths: Sequence[Path], max_line_bytes: int = MAX_LINE_BYTES) -> list[JsonlSource]:
    """One source per path (each keeps its own state)."""
    return [JsonlSource([p], max_line_bytes) for p in paths]


class JsonlSource:
    """JSONL files (see the module's rules)."""

    def __init__(self, paths: Sequence[Path], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if not paths:
            raise ValueError("JsonlSource needs at least one path")
        self.paths = [Path(os.path.abspath(p)) for p in paths]
        self.max_line_bytes = max_line_bytes

    @property
    def name(self) -> str:
        return "jsonl:" + ",".join(str(p) for p in self.paths)

    def files(self) -> list[Path]:
        """The files to read: each path, a directory's JSONL files in name order."""
        out: list[Path] = []
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                out += sorted(
                    p for p in path.iterdir() if p.name.endswith(SUFFIXES) and not p.is_symlink()
                )
            else:
                out.append(path)
        return out

    def bytes_left(self, checkpoint: Checkpoint | None) -> int:
        """The bytes still to read after ``checkpoint``: a plain file's from its offset, a changed
        gzip file's whole (as :meth:`read` reads them and its Marks count them)."""
        state: dict[str, Any] = dict(checkpoint) if isinstance(checkpoint, dict) else {}
        left = 0
        for path in self.files():
            identity = file_identity(path, HEAD_BYTES)
            if identity is None:
                continue
            gzip = is_gzip(path)
            offset, _ = _resume_at(path, state.get(str(path)), identity[0], gzip)
            if offset is not None:
                left += identity[0].st_size - (0 if gzip else offset)
        return left

    def read(self, checkpoint: Checkpoint | None) -> Iterator[Read]:
        state: dict[str, Any] = dict(checkpoint) if isinstance(checkpoint, dict) else {}
        for path in self.files():
            yield from self._read_file(path, state)
        yield Mark(dict(state))

    def _read_file(self, path: Path, state: dict[str, Any]) -> Iterator[Read]:
        key = str(path)
        identity = file_identity(path, HEAD_BYTES)
        if identity is None:
            yield Problem(key, "unreadable: missing, a symbolic link or not a regular file")
            return
        gzip = is_gzip(path)
        offset, line = _resume_at(path, state.get(key), identity[0], gzip)
        if offset is None:
            return  # unchanged
        mark: dict[str, Any] = {"inode": identity[0].st_ino, "offset": offset, "line": line}
        counted = offset  # the bytes up to here are in a Mark's size (a plain file's)
        count = 0
        for read in read_lines(
            path, key, max_line_bytes=self.max_line_bytes, start=offset, first_line=line
        ):
            if not isinstance(read, Line):
                yield read
                continue
            yield item_of(read.data, f"{key}:{read.number}")
            if read.terminated:  # a last line still being written is read again when completed
                mark["offset"], mark["line"] = read.end, read.number + 1
            count += 1
            if not gzip and count % MARK_EVERY == 0:
                state[key] = _file_mark(path, mark, gzip, final=False)
                yield Mark(dict(state), mark["offset"] - counted)
                counted = mark["offset"]
        state[key] = _file_mark(path, mark, gzip, final=True)
        yield Mark(dict(state), identity[0].st_size if gzip else max(0, mark["offset"] - counted))


def _resume_at(path: Path, before: Any, info: os.stat_result, gzip: bool) -> tuple[int | None, int]:
    """``(offset, line)`` to read from; offset None when nothing changed."""
    if not isinstance(before, dict) or before.get("inode") != info.st_ino:
        return 0, 1
    head_len, offset, line = before.get("head_len"), before.get("offset"), before.get("line")
    if not (isinstance(head_len, int) and isinstance(offset, int) and isinstance(line, int)):
        return 0, 1
    if bool(before.get("gzip")) != gzip or _head(path, head_len) != before.get("head"):
        return 0, 1
    unchanged = before.get("size") == info.st_size and before.get("mtime_ns") == info.st_mtime_ns
    if gzip:
        return (None, line) if unchanged else (0, 1)
    if info.st_size < offset:
        return 0, 1  # truncated or rewritten shorter
    if info.st_size == offset and before.get("mtime_ns") not in (None, info.st_mtime_ns):
        return 0, 1  # rewritten in place to the same length
    return (None, line) if unchanged else (offset, line)


def _head(path: Path, length: int) -> str | None:
    identity = file_identity(path, length)
    return None if identity is None else identity[1]


def _file_mark(path: Path, mark: dict[str, Any], gzip: bool, *, final: bool) -> dict[str, Any]:
    """A file's checkpoint at ``mark``; size and mtime (taken after reading) only when ``final``."""
    identity = file_identity(path, 0)
    size = mtime = None
    if final and identity is not None:
        size, mtime = identity[0].st_size, identity[0].st_mtime_ns
    covered = size if gzip else mark["offset"]
    head_len = min(HEAD_BYTES, covered or 0)
    return {
        **mark,
        "size": size,
        "mtime_ns": mtime,
        "head": _head(path, head_len) or "",
        "head_len": head_len,
        "gzip": gzip,
    }

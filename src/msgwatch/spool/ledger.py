"""The ledger of acknowledgements: ``submitted.jsonl`` and its previous generation, bounded.

Rules (the spool's rules 2, 3 and 5; docs/spool.md):

- A line ``{"key", "uid", "status", "collector", "time"}`` per acknowledgement, appended and
  ``fsync``ed (:meth:`Ledger.append`) *before* the spool unlinks the pending files it names; a
  torn last line (a crash in a write) is left as it is and the next append starts on a fresh line.
- Reading is line by line and never raises for what a line holds: a line longer than
  :data:`MAX_LEDGER_LINE`, or one that is not a record with a valid key, is skipped.
- The repair after a crash reads only the tails (:data:`LEDGER_TAIL_BYTES`) of
  ``submitted.jsonl`` and of the previous generation (:meth:`Ledger.tail_keys`).
- **Bounded**: at a *safe point* (no pending file's key is only in the ledger: the spool calls
  :meth:`Ledger.rotate` right after its repair and at the end of an acknowledgement) a
  ``submitted.jsonl`` of :attr:`Ledger.max_bytes` or more is renamed to ``submitted-<T>.jsonl``,
  the previous generation, where ``T`` is how many acknowledgements that file and every generation
  before it held. The rename is the one commit point: ``T`` travels in the name, so no second file
  has to agree with it. Older generations are then unlinked; a crash before that leaves two, and
  the larger ``T`` wins. :meth:`Ledger.count` adds ``T`` to the records of ``submitted.jsonl``: it
  never reads more than that one file.
- Written and rotated only under the spool's ``submit.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from msgwatch.durable import fsync_dir, open_regular
from msgwatch.spool.identity import KEY_RE

MAX_LEDGER_LINE = 64 * 1024
LEDGER_TAIL_BYTES = 512 * 1024
"""How much of each ledger generation's end the repair reads (more than one batch of lines: a
batch is at most 500)."""
LEDGER_MAX_BYTES = 1024 * 1024
"""``submitted.jsonl`` is rotated at a safe point once it is this large (about 7,000 lines)."""
MAX_LEDGER_TOTAL = 10**18 - 1
GENERATION_RE = re.compile(r"submitted-([0-9]{1,18})\.jsonl")


def utc_now(clock: float | None = None) -> str:
    """``clock`` (default: now) as ISO 8601 UTC to the second, ``...Z``."""
    moment = dt.datetime.fromtimestamp(time.time() if clock is None else clock, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _ledger_record(line: bytes) -> dict[str, Any] | None:
    """One ledger line as a record with a valid ``key``; None for a damaged line."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    key = record.get("key") if isinstance(record, dict) else None
    return record if isinstance(key, str) and KEY_RE.fullmatch(key) else None


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of one ledger file, each at most :data:`MAX_LEDGER_LINE` bytes (a longer one is
    skipped whole); nothing when the file is missing or not a regular file."""
    handle = open_regular(path)
    if handle is None:
        return
    with handle:
        while True:
            line = handle.readline(MAX_LEDGER_LINE)
            if not line:
                return
            if not line.endswith(b"\n") and len(line) >= MAX_LEDGER_LINE:
                while (rest := handle.readline(MAX_LEDGER_LINE)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an oversized line
                continue
            yield line


def _records(path: Path) -> Iterator[dict[str, Any]]:
    for line in _lines(path):
        record = _ledger_record(line)
        if record is not None:
            yield record


def _tail_keys(path: Path) -> list[str]:
    """The keys in the last :data:`LEDGER_TAIL_BYTES` of one ledger file."""
    handle = open_regular(path)
    if handle is None:
        return []
    with handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - LEDGER_TAIL_BYTES))
        tail = handle.read(LEDGER_TAIL_BYTES)
    keys = []
    for line in tail.split(b"\n"):
        record = _ledger_record(line)  # None for the first, cut line and a torn last one
        if record is not None:
            keys.append(record["key"])
    return keys


class Ledger:
    """``submitted.jsonl`` and its previous generation in the spool's directory ``root``."""

    def __init__(self, root: Path, max_bytes: int = LEDGER_MAX_BYTES) -> None:
        self.root = root
        self.path = root / "submitted.jsonl"
        self.max_bytes = max_bytes
        """``submitted.jsonl`` is rotated at the next safe point once it is this large."""

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append one line per record and ``fsync`` it (and the directory when the file is new)."""
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":  # a torn last line: start on a fresh one
                    lines = "\n" + lines
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            fsync_dir(self.root)

    def generations(self) -> list[tuple[int, Path]]:
        """The previous generations ``submitted-<T>.jsonl`` (regular files), smallest ``T`` first;
        more than one only after a crash in the middle of a rotation."""
        found: list[tuple[int, Path]] = []
        if not self.root.is_dir():
            return found
        for entry in os.scandir(self.root):
            match = GENERATION_RE.fullmatch(entry.name)
            with contextlib.suppress(OSError):
                if match and entry.is_file(follow_symlinks=False):
                    found.append((int(match.group(1)), Path(entry.path)))
        found.sort()
        return found

    def previous(self) -> tuple[int, Path | None]:
        """``(T, path)`` of the newest previous generation; ``(0, None)`` before any rotation."""
        generations = self.generations()
        return generations[-1] if generations else (0, None)

    def records(self) -> Iterator[dict[str, Any]]:
        """The records still on disk: the previous generation's, then ``submitted.jsonl``'s;
        damaged lines are skipped."""
        _, previous = self.previous()
        if previous is not None:
            yield from _records(previous)
        yield from _records(self.path)

    def count(self) -> int:
        """Acknowledgements ever recorded: the previous generation's ``T`` plus the records of
        ``submitted.jsonl`` (which rotation keeps near :attr:`max_bytes`)."""
        total, _ = self.previous()
        return total + sum(1 for _ in _records(self.path))

    def tail_keys(self) -> list[str]:
        """The keys in the tails of ``submitted.jsonl`` and of the previous generation, each once:
        what a crash between a line and its unlink may have left pending."""
        _, previous = self.previous()
        keys = _tail_keys(self.path)
        if previous is not None:
            keys += _tail_keys(previous)
        return list(dict.fromkeys(keys))

    def rotate(self) -> bool:
        """At a safe point: rename a ``submitted.jsonl`` of :attr:`max_bytes` or more to
        ``submitted-<T>.jsonl``, ``fsync`` the directory, then unlink older generations. Returns
        True when it rotated."""
        generations = self.generations()
        rotated = False
        try:
            info = os.lstat(self.path)
            due = stat.S_ISREG(info.st_mode) and info.st_size >= self.max_bytes
        except FileNotFoundError:
            due = False
        if due:
            before = generations[-1][0] if generations else 0
            count = sum(1 for _ in _records(self.path))
            total = min(before + count, MAX_LEDGER_TOTAL)
            target = self.root / f"submitted-{total}.jsonl"
            os.rename(self.path, target)  # the commit point
            fsync_dir(self.root)
            generations = [g for g in generations if g[1] != target] + [(total, target)]
            rotated = True
        stale = [path for _, path in generations[:-1]]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if stale:
            fsync_dir(self.root)
        return rotated

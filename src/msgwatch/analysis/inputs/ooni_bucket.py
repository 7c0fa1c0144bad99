"""OONI's published raw measurements, read from a local copy of its public bucket.

Layout: ``raw/YYYYMMDD/HH/CC/TESTNAME/<name>.jsonl.gz`` (``TESTNAME`` as OONI writes it: the test
name without underscores, ``webconnectivity``). ``root`` may be the directory holding ``raw/`` or
``raw/`` itself.

Rules:

- **Time order**: days, hours, countries, test names and files are each walked in sorted order.
- **Filters** select directories, never lines: ``since`` (inclusive) and ``until`` (exclusive) on
  the day directory, ``ccs`` on the country (upper case), ``test_names`` on the test directory
  (compared without underscores, lower case). Unknown test names are not filtered here (the
  transform counts them).
- **Nothing outside the layout is read**: a name that does not fit it (a ``.tar.gz`` postcan, a
  stray file, a directory named otherwise) is a problem ``unexpected_path``; a symbolic link is
  never followed (``unexpected_path: symbolic link``).
- **Checkpoint**: the bucket's files never change once published, so per hour the relative path of
  the last file read whole is enough (``{"hours": {"YYYYMMDD/HH": path}}``): a later pass reads the
  files of that hour that sort after it, and new hours. Hours read whole and more than
  :data:`FOLD_HOURS` before the newest hour read are folded into ``"until"`` (every hour up to it
  is done), so the checkpoint stays small over years of data.
- The source's name carries its ``since``, country and test filters
  (``ooni:<abs root>?since=20240101&cc=IR,RU&test=…``): another selection of the same directory
  keeps its own checkpoint (``until`` is left out: extending it carries on from the checkpoint).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from msgwatch.analysis.inputs import Checkpoint, Mark, Problem, Read
from msgwatch.analysis.inputs.lines import MAX_LINE_BYTES, Line, read_lines
from msgwatch.analysis.inputs.records import item_of

FOLD_HOURS = 48
_DAY = re.compile(r"^\d{8}$")
_HOUR = re.compile(r"^([01]\d|2[0-3])$")
_CC = re.compile(r"^[A-Z]{2}$")
_TEST = re.compile(r"^[a-z0-9_]{1,64}$")
_FILE = re.compile(r"^[A-Za-z0-9._-]{1,200}\.jsonl\.gz$")


def folder_name(test_name: str) -> str:
    """The directory OONI files a test under: its name without underscores, lower case."""
    return test_name.replace("_", "").lower()


class OoniBucketSource:
    """A local copy of OONI's raw bucket (see the module's rules)."""

    def __init__(
        self,
        root: Path,
        since: date | None = None,
        until: date | None = None,
        ccs: set[str] | None = None,
        test_names: set[str] | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        root = Path(os.path.abspath(root))
        self.root = root / "raw" if (root / "raw").is_dir() else root
        self.since = since.strftime("%Y%m%d") if since else None
        self.until = until.strftime("%Y%m%d") if until else None
        self.ccs = {c.upper() for c in ccs} if ccs else None
        self.tests = {folder_name(t) for t in test_names} if test_names else None
        self.max_line_bytes = max_line_bytes

    @property
    def name(self) -> str:
        query = []
        if self.since:
            query.append("since=" + self.since)
        if self.ccs:
            query.append("cc=" + ",".join(sorted(self.ccs)))
        if self.tests:
            query.append("test=" + ",".join(sorted(self.tests)))
        return f"ooni:{self.root}" + ("?" + "&".join(query) if query else "")

    def bytes_left(self, checkpoint: Checkpoint | None) -> int:
        """The size of the files :meth:`read` would read after ``checkpoint`` (the same walk)."""
        left = 0
        for found in self._walk(_State.load(checkpoint)):
            if not isinstance(found, Problem):
                left += _size(self.root / found[1])
        return left

    def read(self, checkpoint: Checkpoint | None) -> Iterator[Read]:
        state = _State.load(checkpoint)
        for read in self._walk(state):
            if isinstance(read, Problem):
                yield read
                continue
            hour, rel = read
            path = self.root / rel
            for line in read_lines(path, str(path), max_line_bytes=self.max_line_bytes):
                yield (
                    item_of(line.data, f"{path}:{line.number}") if isinstance(line, Line) else line
                )
            state.hours[hour] = rel
            yield Mark(state.dump(), _size(path))
        yield Mark(state.dump())

    def _walk(self, state: _State) -> Iterator[tuple[str, str] | Problem]:
        """``(hour, relative path)`` of each file still to read, in order; problems."""
        for day in self._entries(self.root, _DAY, ""):
            if isinstance(day, Problem):
                yield day
                continue
            if (self.since and day < self.since) or (self.until and day >= self.until):
                continue
            for hour in self._entries(self.root / day, _HOUR, day):
                if isinstance(hour, Problem):
                    yield hour
                    continue
                key = f"{day}/{hour}"
                if state.until is not None and key <= state.until:
                    continue
                yield from self._hour(key, state.hours.get(key))
                state.whole.add(key)  # its files were all read before the walk came back

    def _hour(self, key: str, done: str | None) -> Iterator[tuple[str, str] | Problem]:
        for cc in self._entries(self.root / key, _CC, key):
            if isinstance(cc, Problem) or (self.ccs and cc not in self.ccs):
                if isinstance(cc, Problem):
                    yield cc
                continue
            for test in self._entries(self.root / key / cc, _TEST, f"{key}/{cc}"):
                if isinstance(test, Problem) or (self.tests and test not in self.tests):
                    if isinstance(test, Problem):
                        yield test
                    continue
                folder = f"{key}/{cc}/{test}"
                for name in self._entries(self.root / folder, _FILE, folder, files=True):
                    if isinstance(name, Problem):
                        yield name
                    elif done is None or _after(f"{folder}/{name}", done):
                        yield key, f"{folder}/{name}"

    def _entries(
        self, directory: Path, pattern: re.Pattern[str], rel: str, *, files: bool = False
    ) -> Iterator[str | Problem]:
        """The names in ``directory`` that fit ``pattern`` (directories, or files), sorted."""
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Problem(str(directory), f"unreadable: {exc.strerror or exc}")
            return
        for entry in entries:
            where = str(self.root / rel / entry.name) if rel else str(self.root / entry.name)
            if entry.is_symlink():
                yield Problem(where, "unexpected_path: symbolic link")
                continue
            try:
                kind_ok = entry.is_file() if files else entry.is_dir()
            except OSError:
                kind_ok = False
            if not kind_ok or not pattern.match(entry.name):
                yield Problem(where, "unexpected_path")
                continue
            yield entry.name


class _State:
    """The checkpoint: hours folded into ``until``, the last file read per later hour."""

    def __init__(self, until: str | None, hours: dict[str, str]) -> None:
        self.until = until
        self.hours = hours
        self.whole: set[str] = set()

    @classmethod
    def load(cls, checkpoint: Any) -> _State:
        if not isinstance(checkpoint, dict):
            return cls(None, {})
        until = checkpoint.get("until")
        hours = checkpoint.get("hours")
        return cls(
            until if isinstance(until, str) else None,
            {k: v for k, v in hours.items() if isinstance(v, str)}
            if isinstance(hours, dict)
            else {},
        )

    def dump(self) -> dict[str, Any]:
        seen = self.whole | set(self.hours)
        if seen:
            newest = max(seen)
            foldable = sorted(h for h in self.whole if _hours_between(h, newest) > FOLD_HOURS)
            for hour in foldable:
                if all(h >= hour or h in self.whole for h in self.hours):
                    self.until = max(self.until or hour, hour)
            if self.until is not None:
                cut = self.until
                self.hours = {h: p for h, p in self.hours.items() if h > cut}
                self.whole = {h for h in self.whole if h > cut}
        return {"until": self.until, "hours": dict(self.hours)}


def _after(path: str, done: str) -> bool:
    """Whether ``path`` comes after ``done`` in the walk's order (component by component)."""
    return path.split("/") > done.split("/")


def _hours_between(earlier: str, later: str) -> float:
    """Hours from one ``YYYYMMDD/HH`` to another."""
    fmt = "%Y%m%d/%H"
    return (datetime.strptime(later, fmt) - datetime.strptime(earlier, fmt)).total_seconds() / 3600


def _size(path: Path) -> int:
    """A file's size, 0 when it cannot be read (a progress figure only)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0

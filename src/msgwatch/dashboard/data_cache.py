"""Values computed once per committed state of the lake and kept in memory.

Rules:

- A value is keyed by what the caller names and the committed files it is computed from
  (:func:`state_key`: their absolute names, sizes and mtimes), so a new pass (new or rewritten
  files) computes it anew and an old state's value is never served for a new one.
- A :class:`StateCache` keeps at most its ``limit`` values; when full, all go (old states').
- It is thread-safe: one computation at a time per cache, under its lock; a caller of a key being
  computed waits and gets that value. A computation that raises leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from msgwatch.dashboard.data_sql import Reader

T = TypeVar("T")
MAX_ENTRIES: Final = 64


class StateCache(Generic[T]):
    """Values by state key, at most ``limit``."""

    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self._limit = limit
        self._values: dict[str, T] = {}
        self._lock = threading.Lock()

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The value of ``key``, computed (once) when missing."""
        with self._lock:
            if key not in self._values:
                value = compute()
                if len(self._values) >= self._limit:
                    self._values.clear()
                self._values[key] = value
            return self._values[key]

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._values.clear()


def state_key(reader: Reader, *tables: str) -> str:
    """The committed state of the tables' files: names, sizes and mtimes."""
    files = [f for table in tables for f in reader.files(table)]
    return "\0".join(f"{f}\0{stamp(f)}" for f in files)


def stamp(path: str) -> str:
    """A file's size and mtime, or "" when it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return f"{info.st_size}:{info.st_mtime_ns}"

"""Aggregate rows to per-series buckets, and the bucket arithmetic both engines share.

Rules:

- A bucket's number is ``floor(epoch(bucket) / bucket_seconds)``; times are naive UTC (text
  ``YYYY-MM-DD HH:MM:SS`` or ``datetime``, as the engines hand them).
- ``total`` = ok + failing (interference: blocked, throttled, degraded); inconclusive and
  not_measured rows say nothing and are left out. A bucket whose total is 0 is no bucket (a gap).
- A missing key part (None) is read as "" so that series still sort.
- A malformed row (bad time, negative count) raises ``ValueError`` naming the column: aggregate rows
  are the analysis's own output, so a bad one is a bug, not hostile input.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from msgwatch.analysis.events.model import SeriesBucket, SeriesKey
from msgwatch.measurement import vocab

_EPOCH = dt.datetime(1970, 1, 1)
_FAILING = frozenset(vocab.INTERFERENCE)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_time(value: Any) -> dt.datetime:
    """A naive UTC datetime from a row's time value."""
    if isinstance(value, dt.datetime):
        when: dt.datetime = value
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        return when
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("T", " ").removesuffix("Z"))
    raise ValueError(f"bucket: not a time: {value!r}")


def bucket_number(when: dt.datetime, seconds: int) -> int:
    """The bucket a time falls in."""
    return int((when - _EPOCH).total_seconds()) // seconds


def bucket_time(number: int, seconds: int) -> dt.datetime:
    """The start of a bucket."""
    return _EPOCH + dt.timedelta(seconds=number * seconds)


def time_text(number: int | None, seconds: int) -> str | None:
    """A bucket's start as row text (None stays None)."""
    return None if number is None else bucket_time(number, seconds).strftime(TIME_FORMAT)


class Buckets:
    """One series' buckets by number: [total, failing, mechanisms, verdicts, control_ok]."""

    __slots__ = ("by_number",)

    def __init__(self) -> None:
        self.by_number: dict[int, list[Any]] = {}

    def add(self, number: int, verdict: str, mechanism: str, count: int, control_ok: int) -> None:
        """Count one aggregate row into its bucket."""
        cell = self.by_number.get(number)
        if cell is None:
            cell = self.by_number[number] = [0, 0, {}, {}, 0]
        cell[0] += count
        if verdict in _FAILING:
            cell[1] += count
            cell[2][mechanism] = cell[2].get(mechanism, 0) + count
            cell[3][verdict] = cell[3].get(verdict, 0) + count
            cell[4] += control_ok

    def ordered(self) -> list[int]:
        """The bucket numbers, oldest first."""
        return sorted(self.by_number)

    def bucket(self, key: SeriesKey, number: int, seconds: int) -> SeriesBucket:
        """One bucket as the model's SeriesBucket."""
        total, failing, mechs, verdicts, control_ok = self.by_number[number]
        return SeriesBucket(
            key, bucket_time(number, seconds), total, failing, mechs, verdicts, control_ok
        )

    def window(self, start: int, end: int | None) -> list[list[Any]]:
        """The cells of buckets in [start, end) (end None = to the last)."""
        return [c for n, c in self.by_number.items() if n >= start and (end is None or n < end)]


def collect(rows: Iterable[Mapping[str, Any]], seconds: int) -> dict[SeriesKey, Buckets]:
    """Group aggregate rows into per-series buckets (ok and failing only)."""
    series: dict[SeriesKey, Buckets] = {}
    numbers: dict[Any, int] = {}  # a bucket's time → its number (rows share a few buckets)
    for row in rows:
        verdict = row["verdict"]
        if verdict != vocab.OK and verdict not in _FAILING:
            continue
        count = int(row["measurements"] or 0)
        control_ok = int(row.get("control_ok") or 0)
        if count < 0 or control_ok < 0:
            raise ValueError(f"measurements/control_ok: negative count in {dict(row)!r}")
        if count == 0:
            continue
        key: SeriesKey = (
            str(row["probe_cc"] or ""),
            str(row["probe_asn"] or ""),
            str(row["service"] or ""),
            str(row["function"] or ""),
        )
        found = series.get(key)
        if found is None:
            found = series[key] = Buckets()
        when = row["bucket"]
        number = numbers.get(when)
        if number is None:
            number = numbers[when] = bucket_number(to_time(when), seconds)
        found.add(
            number,
            verdict,
            row["mechanism"] or "",
            count,
            control_ok,
        )
    return series

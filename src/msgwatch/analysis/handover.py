"""Chunks and their rows handed between the pass and its workers through files, not the pool's pipes.

A chunk sent to a worker process through :class:`~concurrent.futures.ProcessPoolExecutor` is
pickled, pushed through a pipe 64 KiB at a time and unpickled, and so are the rows that come back:
about 95 KB of JSON per lab measurement out and 30 KB of NDJSON rows back, each crossing costing
copies and context switches on both sides. Written to a file in the pass's work folder and read
back, the same bytes cost one copy each way, and the pipe carries only the file's name and each
item's small fields (where, uid, tag, time), and the result's counts and file names.

Rules:

- :func:`pack`: the pass writes a chunk's lines one after another to
  ``<work>/inbox/c<run>-<NNNNNNN>.lines`` and hands the worker a :class:`Packed`: the file's name
  and each item without its line (the line's length instead). ``run`` is random, one per call of
  :func:`msgwatch.analysis.workers.analyse`, and every file is created exclusively: a worker of a
  pass killed mid-chunk that finishes after the next pass began can neither overwrite nor
  truncate that pass's files (its own land beside them and are never listed).
- :func:`unpack`: the worker reads the file, removes it and rebuilds the items.
- :func:`spill`: the worker writes each table's rows of each day to
  ``<work>/<table>/c<run>-<NNNNNNN>-<day>.ndjson``, and its result names those files instead of
  carrying the rows; the pass's stager (:class:`~msgwatch.analysis.lake.Stager`) writes them into
  the day's Parquet part. A day that is not ``YYYY-MM-DD`` is ``unknown``, as the stager names it.
- Everything lives in the pass's work folder (mode 0700), which a pass removes when it ends and
  the next pass empties when it begins: nothing there is ever listed by the lake. An inbox file
  is a copy of lines the source already holds on this machine (the collector's archive, a JSONL
  file, an OONI folder), kept from :func:`pack` to :func:`unpack`, or until the pass cancels the
  chunk; only a pass that dies (killed, a worker lost) leaves inbox files to the next pass. The
  rows are scrubbed of the probe's address before they are spilled, as before.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from msgwatch.analysis.inputs import Item

INBOX: Final = "inbox"
DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""A day partition's name (the lake's, :mod:`.lake`, and the files handed back)."""

Slot = tuple[str, str | None, str | None, str | None, int]
"""An item without its line: (where, probe_tag, measurement_uid, received_at, the line's length)."""


@dataclass(frozen=True)
class Packed:
    """A chunk whose lines wait in :attr:`path`, one after another."""

    run: str
    number: int
    path: str
    slots: list[Slot]


def day_name(day: str) -> str:
    """``day`` if it is ``YYYY-MM-DD``, else ``unknown`` (it becomes part of a file name)."""
    return day if DAY.fullmatch(day) else "unknown"


def pack(work: Path, run: str, number: int, items: list[Item]) -> Packed:
    """Write ``items``' lines to the inbox; the chunk without them."""
    folder = work / INBOX
    folder.mkdir(exist_ok=True)
    path = folder / f"c{run}-{number:07d}.lines"
    with open(path, "xb") as handle:
        handle.writelines(item.line for item in items)
    slots = [(i.where, i.probe_tag, i.measurement_uid, i.received_at, len(i.line)) for i in items]
    return Packed(run, number, os.fspath(path), slots)


def unpack(packed: Packed) -> list[Item]:
    """The chunk's items, read back from its file (which is removed)."""
    with open(packed.path, "rb") as handle:
        data = handle.read()
    os.unlink(packed.path)
    items: list[Item] = []
    at = 0
    for where, tag, uid, received, length in packed.slots:
        items.append(Item(data[at : at + length], where, tag, uid, received))
        at += length
    return items


def spill(
    work: Path, table: str, run: str, number: int, days: dict[str, list[bytes]]
) -> dict[str, str]:
    """Write a chunk's NDJSON rows of one table (pieces per day), a file per day; day → file."""
    merged: dict[str, list[bytes]] = {}
    for day, pieces in days.items():
        merged.setdefault(day_name(day), []).extend(pieces)
    files: dict[str, str] = {}
    for day, parts in merged.items():
        path = work / table / f"c{run}-{number:07d}-{day}.ndjson"
        with open(path, "xb") as handle:
            handle.writelines(parts)
        files[day] = os.fspath(path)
    return files

"""Where measurements come from: sources that yield raw lines, problems and checkpoints.

A :class:`Source` reads its measurements as raw JSON lines (:class:`Item`), never parsing them
(the pass parses on its workers); what it cannot read becomes a :class:`Problem` with where it was,
and it never raises for bad data. After the items of each unit it has read completely (a file, an
archive member), it yields a :class:`Mark` carrying its checkpoint: JSON that, given back to
:meth:`Source.read`, resumes after that unit. A source always ends with a Mark. The pass commits the
last Mark it saw only after everything before it is written, so a crash re-reads at most the
units after the committed checkpoint, and a second pass over unchanged data reads nothing.

For progress, a Mark's ``size`` is the bytes of the source's files read since its previous Mark,
and a source may say how many it has left after a checkpoint (an optional ``bytes_left`` method,
read through :func:`bytes_left`): the files' bytes on disk, compressed or not, as the sizes count
them. Neither affects what is read.

- :mod:`.jsonl`: JSONL files (``.jsonl`` or ``.jsonl.gz``), bare measurements or archive records.
- :mod:`.ooni_bucket`: OONI's public bucket layout ``raw/YYYYMMDD/HH/CC/TESTNAME/*.jsonl.gz``.
- :mod:`.lines`: the bounded streaming line reader both use (gzip members, huge lines, bad bytes).
- :mod:`.records`: archive records unwrapped without parsing the measurement inside.
- The collector's archive is read by ``msgwatch.collector.store.feed.ArchiveSource`` (the store's
  own code reads the store), which implements this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

Checkpoint = Any
"""JSON (dicts, lists, text, numbers): a source's own position, opaque to the pass."""


@dataclass(frozen=True)
class Item:
    """One measurement's JSON text, as read (a bare measurement or a collector archive record)."""

    line: bytes
    where: str  # "<file>:<line>" or "<archive file>@<member offset>:<line>"
    probe_tag: str | None = None  # the per-network probe tag, when the source knows it
    measurement_uid: str | None = None  # the collector's uid, when the source knows it
    received_at: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something that could not be read: where, and why (a short token, then detail)."""

    where: str
    reason: str  # e.g. "line_too_long", "truncated_gzip", "not_utf8", "unreadable: <errno text>"


@dataclass(frozen=True)
class Mark:
    """Everything yielded before this is one complete unit: resume from ``checkpoint``."""

    checkpoint: Checkpoint
    size: int = 0  # bytes of the source's files read since its previous Mark (for progress)


Read = Item | Problem | Mark


class Source(Protocol):
    """A stream of measurements with checkpoints."""

    @property
    def name(self) -> str:
        """A stable id (the checkpoint's key in the pass state), e.g. ``jsonl:/abs/path``."""
        ...

    def read(self, checkpoint: Checkpoint | None) -> Iterator[Read]:
        """Items, problems and marks after ``checkpoint`` (``None``: from the beginning)."""
        ...


def bytes_left(source: Source, checkpoint: Checkpoint | None) -> int | None:
    """The bytes of ``source``'s files still to read after ``checkpoint``, as its Marks' sizes
    count them (a source's optional ``bytes_left`` method); None when it cannot say. The figure
    is the total of a progress bar, nothing else: a source that fails to give it is shown
    without one, so any error here is a None."""
    method = getattr(source, "bytes_left", None)
    if method is None:
        return None
    try:
        value = method(checkpoint)
    except Exception:  # a progress bar's total never fails a pass
        return None
    return value if isinstance(value, int) and value >= 0 else None

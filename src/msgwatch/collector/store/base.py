"""The storage contract shared by the HTTP layer and the back-ends (docs/design/002-collector.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from msgwatch.collector.store.records import Record

TimeBound = str | dt.date | dt.datetime | None
"""A bound of a scan on ``measurement_start_time`` (:func:`.scan.time_bound` reads it)."""


@dataclass(frozen=True)
class Submission:
    """One validated, normalised measurement and the key that makes its retries harmless."""

    idempotency_key: str
    measurement: dict[str, Any]
    report_id: str | None = None


@dataclass(frozen=True)
class Receipt:
    measurement_uid: str
    duplicate: bool


@dataclass(frozen=True)
class Query:
    """Filters of the read API; ``None`` means any. Times compare with ``measurement_start_time``;
    ``service`` and ``function`` with what the measurement measured (one of its functions of that
    service: :mod:`msgwatch.collector.summary`). There is no verdict filter: the index holds none."""

    service: str | None = None
    function: str | None = None
    probe_asn: str | None = None
    probe_cc: str | None = None
    test_name: str | None = None
    since: str | None = None  # "YYYY-MM-DD HH:MM:SS", inclusive
    until: str | None = None  # "YYYY-MM-DD HH:MM:SS", exclusive
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    results: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


class StoreUnavailable(Exception):
    """The archive or the index cannot be written: nothing was acknowledged (HTTP 503).

    ``fix``, when the cause is known, says what an operator does about it (``collector serve``
    prints it when the store cannot be opened)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


class BadCursor(ValueError):
    """A cursor the store did not issue (HTTP 400 bad_query)."""


class Store(Protocol):
    async def put_many(self, items: Sequence[Submission]) -> list[Receipt]:
        """Store every item; on return each receipt's measurement is durable (archive fsync'd,
        index committed). Raises :class:`StoreUnavailable` with nothing acknowledged."""
        ...

    async def get(self, measurement_uid: str) -> dict[str, Any] | None: ...

    async def query(self, query: Query) -> Page: ...

    def scan(self, since: TimeBound = None, until: TimeBound = None) -> AsyncIterator[Record]:
        """Every stored measurement in range, in archive order, each once (rules: :mod:`.scan`)."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...

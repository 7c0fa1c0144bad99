"""The dashboard's data: every view's values (:mod:`.model`) from the analysis's lake.

Rules:

- :class:`Observatory` reads the committed lake afresh on every call (a new pass shows at the next
  request); a directory without a committed pass raises
  :class:`msgwatch.analysis.query.LakeMissing` at the call. The span, every country's networks and
  the uid → day index are computed once per committed state (:mod:`.data_cache`).
- :meth:`Observatory.warm` builds ahead what long windows and measurement pages read (the
  roll-ups, :mod:`.data_rollup`; the uid index, :mod:`.data_uids`); it is idempotent and
  thread-safe, and views never wait for it: until the roll-ups exist they read hourly rows.
- Every figure is aggregated in DuckDB over the window only (:mod:`.data_sql`); no table is loaded
  into Python. Long windows read whole weeks and days from roll-ups of the aggregates
  (:mod:`.data_rollup`); observations and verdicts only the day partitions of the window.
- The window (:meth:`Observatory.window`) fills what the filters leave unset: until = the lake's
  last bucket + one bucket, since = until − 30 days, clipped to the lake's first bucket; a range
  is at most 400 days. An empty lake's window ends at the current hour.
- The grain (:meth:`Observatory.grain_seconds`): ``bucket`` the lake's own, ``hour``, ``day``;
  ``auto`` the lake's bucket for ranges ≤ 2 days, hour for ≤ 31 days, else day; never finer than
  the lake's bucket.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Final

from msgwatch.dashboard import (
    data_events,
    data_measurement,
    data_overview,
    data_rollup,
    data_series,
    data_uids,
)
from msgwatch.dashboard.data_cache import StateCache, state_key
from msgwatch.dashboard.data_sql import TIME_FORMAT, Reader, grain, parse_time
from msgwatch.dashboard.filters import MAX_RANGE_DAYS, ViewFilters
from msgwatch.dashboard.measurements import MeasurementSource
from msgwatch.dashboard.model import (
    Comparison,
    EventRow,
    EventView,
    MeasurementView,
    NetworkView,
    Overview,
)

DEFAULT_DAYS: Final = 30
_SPANS: Final = StateCache[tuple[str, str] | None]()
_NETWORKS: Final = StateCache[dict[str, tuple[str, ...]]]()
_UIDS: Final = StateCache[data_uids.UidIndex | None](limit=2)


class Observatory:
    """Every view's data, read from the lake at ``lake_dir`` (and raw measurements, if given)."""

    def __init__(self, lake_dir: Path, measurements: MeasurementSource | None = None) -> None:
        self.lake_dir = Path(lake_dir)
        self.measurements = measurements

    def _reader(self) -> Reader:
        return Reader(self.lake_dir)

    def span(self) -> tuple[str, str] | None:
        """The first and last bucket in the lake; None when it has none."""
        with self._reader() as reader:
            return self._span(reader)

    def _span(self, reader: Reader) -> tuple[str, str] | None:
        def compute() -> tuple[str, str] | None:
            def build(r: Reader) -> str | None:
                source = r.source("aggregates")
                return None if source is None else f"SELECT min(bucket), max(bucket) FROM {source}"

            rows = reader.query(build)
            first, last = rows[0] if rows else (None, None)
            return None if first is None else (str(first), str(last))

        return _SPANS.get(state_key(reader, "aggregates"), compute)

    def warm(self) -> None:
        """Build ahead what the views read (roll-ups, span, networks, uid index); idempotent,
        thread-safe, and no view waits for it."""
        with self._reader() as reader:
            data_rollup.warm(reader)
            self._span(reader)
            self._networks(reader)
            self._uids(reader)

    def _networks(self, reader: Reader) -> dict[str, tuple[str, ...]]:
        key = state_key(reader, "aggregates")
        return _NETWORKS.get(key, lambda: data_overview.all_networks(reader))

    def _uids(self, reader: Reader) -> data_uids.UidIndex | None:
        key = state_key(reader, "verdicts", "observations")
        return _UIDS.get(key, lambda: data_uids.build_index(reader))

    def window(self, f: ViewFilters) -> tuple[str, str]:
        """(since, until) of the view: the filters' or filled from the lake."""
        with self._reader() as reader:
            return self._window(reader, f)

    def _window(self, reader: Reader, f: ViewFilters) -> tuple[str, str]:
        span = self._span(reader)
        bucket = dt.timedelta(seconds=reader.bucket_seconds)
        limit = dt.timedelta(days=MAX_RANGE_DAYS)
        if span is None:
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
            first, end = None, now + dt.timedelta(hours=1)
        else:
            first, end = parse_time(span[0]), parse_time(span[1]) + bucket
        until = f.until
        if until is None:
            until = end if f.since is None or end > f.since else f.since + bucket
            if f.since is not None:
                until = min(until, f.since + limit)
        since = f.since
        if since is None:
            since = until - dt.timedelta(days=DEFAULT_DAYS)
            if first is not None and since < first < until:
                since = first
        return since.strftime(TIME_FORMAT), until.strftime(TIME_FORMAT)

    def grain_seconds(self, f: ViewFilters) -> int:
        """The seconds of one time step of the view's series."""
        with self._reader() as reader:
            return self._grain(reader, f, self._window(reader, f))

    @staticmethod
    def _grain(reader: Reader, f: ViewFilters, window: tuple[str, str]) -> int:
        return grain(reader.bucket_seconds, window, f.grain)

    def overview(self, f: ViewFilters) -> Overview:
        """Country × service × function over the window, with the newest events."""
        with self._reader() as reader:
            return data_overview.overview(reader, f, self._window(reader, f))

    def network(self, cc: str, asn: str, f: ViewFilters) -> NetworkView:
        """One network's heatmap (service-function × time) and its events."""
        with self._reader() as reader:
            window = self._window(reader, f)
            return data_series.network(reader, cc, asn, window, self._grain(reader, f, window), f)

    def comparison(
        self, cc: str, asn: str | None, service: str, function: str, f: ViewFilters
    ) -> Comparison:
        """A series (a network, or the whole country with ``asn`` None) against its controls."""
        subject = data_series.SeriesKey(cc, asn, service, function)
        with self._reader() as reader:
            window = self._window(reader, f)
            return data_series.comparison(reader, subject, window, self._grain(reader, f, window))

    def events(
        self, f: ViewFilters, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[EventRow], str | None]:
        """Events overlapping the window, newest start first, and the next page's cursor."""
        with self._reader() as reader:
            return data_events.events(reader, f, self._window(reader, f), limit, cursor)

    def event(self, event_id: str) -> EventView | None:
        """One event's finding: its members, comparisons and verdict rows; None when unknown."""
        with self._reader() as reader:
            span = self._span(reader)
            return data_events.event_view(reader, event_id, None if span is None else span[1])

    def measurement(self, uid: str, time: str | None = None) -> MeasurementView | None:
        """One measurement's steps, verdicts and replays; None when the lake has no row of it.
        ``time`` (its start time, ``YYYY-MM-DD HH:MM:SS``) names the day to read; a malformed one
        raises BadQuery."""
        hint = data_uids.hint_days(time)
        with self._reader() as reader:
            return data_measurement.measurement(
                reader, uid, self.measurements, hint, lambda: self._uids(reader)
            )

    def networks(self, cc: str) -> list[str]:
        """The country's networks (ASNs) in the lake, sorted."""
        return list(self.all_networks().get(cc, ()))

    def all_networks(self) -> dict[str, tuple[str, ...]]:
        """Every country's networks (ASNs) in the lake, sorted."""
        with self._reader() as reader:
            return self._networks(reader)

"""The overview: every country × service × function over the window, in one aggregate query.

Rules:

- The aggregates are filtered by the window and the filters' cc, asn, service and function; the
  ``verdict`` filter keeps the cells whose state is that verdict (and the events of it).
- A cell's counts are over the window; its state is the state (:data:`.data_sql.STATE_SQL`) of its
  latest measured bucket (the lake's own, read from the hourly aggregates), all its networks
  together; its mechanism the one most of its failing
  rows show; ``networks`` the networks measured, ``networks_failing`` those whose own latest
  measured bucket is failing (blocked, throttled, degraded).
- A cell's events are the events ongoing at the view's end (started before until, not ended
  before it) of its country and service-function (a country event's by its members' lists);
  ``pattern`` is the first of them's (country events first, then by id).
- ``events`` are the newest :data:`MAX_EVENTS` events overlapping the window.
- The networks of every country (:func:`all_networks`) are one grouped query.
"""

from __future__ import annotations

from typing import Final

from msgwatch.analysis import lake
from msgwatch.dashboard import data_eventrows, data_rollup
from msgwatch.dashboard.data_sql import COUNTS_SQL, FAILING_SQL, STATE_SQL, Reader, Where, filters
from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import Cell, Counts, EventRow, Overview

MAX_EVENTS: Final = 20
MAX_ONGOING: Final = 5000
_KEY: Final = "probe_cc, service, function"


def _sql(rows: str, hourly: str, clause: str) -> str:
    keys = " AND ".join(f"t.{k} = n.{k}" for k in ("probe_cc", "service", "function"))
    return f"""
WITH a AS (SELECT * FROM {rows} WHERE {clause}),
net AS (SELECT {_KEY}, probe_asn, {COUNTS_SQL}, max(last) AS last FROM a GROUP BY ALL),
tail AS (SELECT h.* FROM {hourly} h JOIN net n ON {keys.replace("t.", "h.")}
         AND h.probe_asn = n.probe_asn AND h.bucket = n.last),
net_state AS (SELECT {_KEY}, {STATE_SQL} AS state
              FROM (SELECT {_KEY}, probe_asn, {COUNTS_SQL} FROM tail GROUP BY ALL)),
cell AS (SELECT {_KEY}, sum(m) AS m, sum(f) AS f, sum(o) AS o, max(p) AS p, sum(c) AS c,
         max(last) AS last, count(*) AS networks FROM net GROUP BY ALL),
cell_state AS (SELECT {_KEY}, {STATE_SQL} AS state FROM (
               SELECT t.probe_cc, t.service, t.function, {COUNTS_SQL} FROM tail t
               JOIN cell n ON {keys} AND t.bucket = n.last GROUP BY ALL)),
failing AS (SELECT {_KEY}, count(*) FILTER (WHERE state IN {FAILING_SQL}) AS failing
            FROM net_state GROUP BY ALL),
mech AS (SELECT {_KEY}, arg_max(mechanism, (n, mechanism)) AS mechanism FROM (
           SELECT {_KEY}, mechanism, sum(measurements) AS n FROM a
           WHERE verdict IN {FAILING_SQL} AND mechanism <> '' GROUP BY ALL) GROUP BY ALL)
SELECT {_KEY}, cell.m, cell.f, cell.o, cell.p, cell.c, cell_state.state, cell.last,
       cell.networks, failing.failing, mech.mechanism
FROM cell JOIN cell_state USING ({_KEY}) JOIN failing USING ({_KEY})
LEFT JOIN mech USING ({_KEY})
ORDER BY {_KEY}"""


def overview(reader: Reader, f: ViewFilters, window: tuple[str, str]) -> Overview:
    """The overview of the window."""
    clause = filters(f, ("cc", "asn", "service", "function"))

    def build(r: Reader) -> str | None:
        rows = data_rollup.relation(r, window, data_rollup.ANY_GRAIN)
        hourly = r.source("aggregates")
        return None if rows is None or hourly is None else _sql(rows, hourly, clause.sql)

    ongoing = _ongoing(reader, f, window[1])
    cells = []
    for cc, service, function, m, fl, o, p, c, state, last, nets, failing, mech in reader.query(
        build, clause.params
    ):
        if f.verdict is not None and state != f.verdict:
            continue
        events = [e for e in ongoing if _covers(e, cc, service, function)]
        cells.append(
            Cell(
                probe_cc=cc,
                service=service,
                function=function,
                state=state,
                mechanism=mech,
                pattern=events[0].pattern if events else None,
                counts=Counts(int(m), int(fl), int(o), int(p), int(c)),
                networks=int(nets),
                networks_failing=int(failing),
                last_measured=last,
                events=tuple(e.event_id for e in events),
            )
        )
    newest = data_eventrows.select(reader, data_eventrows.overlapping(*window, f), MAX_EVENTS)
    return Overview(
        since=window[0],
        until=window[1],
        cells=tuple(cells),
        countries=tuple(sorted({c.probe_cc for c in cells})),
        services=tuple(sorted({c.service for c in cells})),
        functions=tuple(sorted({c.function for c in cells})),
        events=tuple(newest),
    )


def _ongoing(reader: Reader, f: ViewFilters, until: str) -> list[EventRow]:
    """The events ongoing at ``until`` (country events first, then by id)."""
    clause = Where(
        '"start" < CAST(? AS TIMESTAMP) AND ("end" IS NULL OR "end" >= CAST(? AS TIMESTAMP))'
        + (" AND probe_cc = ?" if f.cc else ""),
        (until, until, *([f.cc] if f.cc else [])),
    )
    found = data_eventrows.select(reader, clause, MAX_ONGOING)
    return sorted(found, key=lambda e: (e.level != "country", e.event_id))


def _covers(event: EventRow, cc: str, service: str, function: str) -> bool:
    """Whether the event is of the cell (a country event's by its members' lists)."""
    if event.probe_cc != cc:
        return False
    members = event.members or {}
    services = [event.service] if event.service else members.get("services") or []
    functions = [event.function] if event.function else members.get("functions") or []
    return service in services and function in functions


def all_networks(reader: Reader) -> dict[str, tuple[str, ...]]:
    """Every country's networks in the lake, sorted: one grouped query, over the weekly roll-ups
    built (:func:`.data_rollup.ready`) and the hourly aggregates of the months without one."""

    def build(r: Reader) -> str | None:
        files = r.files("aggregates")
        if not files:
            return None
        weekly = data_rollup.ready(r, files).get(data_rollup.WEEK)
        groups = [weekly.built, weekly.pending] if weekly else [files]
        source = " UNION ALL ".join(
            f"SELECT probe_cc, probe_asn FROM {lake.read_parquet_sql(list(g))}" for g in groups if g
        )
        return (
            f"SELECT probe_cc, probe_asn FROM ({source}) "
            "WHERE probe_cc IS NOT NULL AND probe_asn IS NOT NULL GROUP BY ALL ORDER BY ALL"
        )

    found: dict[str, list[str]] = {}
    for cc, asn in reader.query(build):
        found.setdefault(cc, []).append(asn)
    return {cc: tuple(asns) for cc, asns in found.items()}

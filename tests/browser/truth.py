"""What the fixture observatory implies the pages show, counted from its measurements and from
the analysis's own tables (read here with DuckDB, independently of the dashboard's code).

The fixture's story runs 72 hours from 2026-05-20 00:00 (tests/dashboard/fixture.py); the lab's
own measurements are months later, so the tests pin the window to the story with ``since`` and
``until`` (:data:`WINDOW`). Three days is an hourly grain (contract.md: "auto" is hour for ≤ 31
days), so a series of the story has one point per hour with measurements.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import orjson

from tests.dashboard import fixture

SINCE = fixture.START.strftime("%Y-%m-%d")
UNTIL = (fixture.START + dt.timedelta(hours=fixture.HOURS)).strftime("%Y-%m-%d")
WINDOW = f"since={SINCE}&until={UNTIL}"
_RANGE = (fixture.START, fixture.START + dt.timedelta(hours=fixture.HOURS))
AFTER = (_RANGE[1], dt.datetime(9999, 1, 1))
"""After the story: the lab's own measurements (the default window, the last 30 days)."""


def _rows(lake: Path, table: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    pattern = "*.parquet" if table == "events" else "*/*.parquet"
    source = f"read_parquet('{lake / table / pattern}', hive_partitioning = true)"
    with duckdb.connect() as con:
        return con.execute(sql.replace("{source}", source), list(params)).fetchall()


def cells(
    lake: Path,
    service: str | None = None,
    cc: str | None = None,
    window: tuple[dt.datetime, dt.datetime] = _RANGE,
) -> set[tuple[str, str, str]]:
    """The window's (cc, service, function) triples with verdicts (the story's by default)."""
    rows = _rows(
        lake,
        "verdicts",
        "SELECT DISTINCT probe_cc, service, function FROM {source}"
        " WHERE measurement_start_time >= ? AND measurement_start_time < ?"
        " AND (? IS NULL OR service = ?) AND (? IS NULL OR probe_cc = ?)",
        *window,
        service,
        service,
        cc,
        cc,
    )
    return {(r[0], r[1], r[2]) for r in rows}


def heat_marks(lake: Path, asn: str) -> int:
    """The network's (service, function, hour) triples with verdicts in the story window."""
    rows = _rows(
        lake,
        "verdicts",
        "SELECT count(DISTINCT (service, function, date_trunc('hour', measurement_start_time)))"
        " FROM {source} WHERE probe_asn = ? AND measurement_start_time >= ?"
        " AND measurement_start_time < ? AND verdict <> 'not_measured'",
        asn,
        *_RANGE,
    )
    return int(rows[0][0])


def events(lake: Path, asn: str | None = None) -> list[dict[str, Any]]:
    """The events (all, or one network's), as id, level and asn."""
    rows = _rows(
        lake,
        "events",
        "SELECT event_id, level, probe_asn FROM {source} WHERE ? IS NULL OR probe_asn = ?"
        " ORDER BY event_id",
        asn,
        asn,
    )
    return [{"event_id": r[0], "level": r[1], "probe_asn": r[2]} for r in rows]


def uid(lake: Path, asn: str, verdict: str, service: str = "whatsapp") -> str:
    """The first measurement of ``asn`` and ``service`` with a ``verdict`` row."""
    rows = _rows(
        lake,
        "verdicts",
        "SELECT measurement_uid FROM {source} WHERE probe_asn = ? AND verdict = ?"
        " AND service = ? ORDER BY measurement_start_time, measurement_uid LIMIT 1",
        asn,
        verdict,
        service,
    )
    return str(rows[0][0])


def measurement_of(lake: Path, measurements: Path, uid: str) -> dict[str, Any]:
    """The raw measurement of ``uid`` (found by its network, start time and service)."""
    asn, start, service = _rows(
        lake,
        "verdicts",
        "SELECT DISTINCT probe_asn, strftime(measurement_start_time, '%Y-%m-%d %H:%M:%S'),"
        " service FROM {source} WHERE measurement_uid = ?",
        uid,
    )[0]
    with measurements.open("rb") as lines:
        for line in lines:
            if start.encode() not in line:  # cheap: most of the 200 MB is never parsed
                continue
            raw: dict[str, Any] = orjson.loads(line)
            found = (raw.get("probe_asn"), raw.get("measurement_start_time"), raw.get("input"))
            if found == (asn, start, service):
                return raw
    raise LookupError(uid)


def replay_marks(raw: dict[str, Any]) -> list[int]:
    """Per replay pair of the raw measurement (an original and the control of the same direction,
    profile, round and attempt), the intervals of both: the marks of its chart."""
    sides: dict[tuple[Any, ...], dict[str, int]] = {}
    for replay in raw["test_keys"].get("msgwatch_replays") or []:
        role = str(replay.get("role"))
        variant = role.removeprefix("replay_").removeprefix("down_")
        if variant not in ("original", "control"):
            continue
        key = ("down" in role, replay["profile"], replay.get("round"), replay.get("attempt"))
        sides.setdefault(key, {})[variant] = len(replay.get("intervals") or [])
    return sorted(
        pair["original"] + pair.get("control", 0) for pair in sides.values() if "original" in pair
    )

"""One measurement: its observations as steps, its verdict rows and its call replays.

Rules:

- The lake's rows of the uid are read from the day partitions of the measurement's day: first the
  caller's hint's (a page link's time), then the raw measurement's start time's (a
  :class:`~msgwatch.dashboard.measurements.MeasurementSource`), then the uid → day index's
  (:mod:`.data_uids`; a uid it lacks is not in the lake). A day that holds no row of the uid is
  passed over. Without an index: the verdicts of every day, then the observations of their day.
- Steps are the observation rows in trace order (``t0``, then transaction id; rows without a
  time last), at most :data:`MAX_STEPS`; a measurement the lake has no row of is None.
- Replays (:mod:`.data_replays`) come only from the raw measurement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from msgwatch.dashboard import data_replays
from msgwatch.dashboard.data_sql import TIME_FORMAT, Reader
from msgwatch.dashboard.data_uids import Days, day_range
from msgwatch.dashboard.measurements import MeasurementSource
from msgwatch.dashboard.model import MeasurementView, Step

MAX_STEPS: Final = 2000
MAX_ANSWERS_CHARS: Final = 16 * 1024
HEAD: Final = ("measurement_uid", "measurement_start_time", "probe_cc", "probe_asn", "test_name",
               "source")  # fmt: skip
VERDICT_FIELDS: Final = ("measurement_uid", "measurement_start_time", "service", "function",
                         "verdict", "mechanism", "confidence", "rule_id", "control_ok",
                         "explanation")  # fmt: skip
STEP_FIELDS: Final = ("kind", "target", "role", "hostname", "ip", "port", "transport", "failure",
                      "t0", "transaction_id", "status_code", "answers", "loss", "throughput_kbps",
                      "bytes_sent", "bytes_received", "packets_sent", "packets_received",
                      "detail")  # fmt: skip


Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
"""A measurement's verdict rows and observation rows."""


def measurement(
    reader: Reader,
    uid: str,
    source: MeasurementSource | None,
    hint: Days | None = None,
    index: Callable[[], Mapping[str, Days] | None] = lambda: None,
) -> MeasurementView | None:
    """The measurement's view; None when the lake has no row of it."""
    raw = source.get(uid) if source is not None else None
    for days in dict.fromkeys(d for d in (hint, _days(raw)) if d is not None):
        rows = _read(reader, uid, days)
        if rows[0] or rows[1]:
            return _view(rows, raw)
    known = index()
    if known is not None:
        indexed = known.get(uid)
        return None if indexed is None else _view(_read(reader, uid, indexed), raw)
    verdict_rows = _rows(reader, "verdicts", uid, None, VERDICT_FIELDS)
    day = _days({"measurement_start_time": verdict_rows[0][1]}) if verdict_rows else None
    return _view((verdict_rows, _rows(reader, "observations", uid, day, STEP_FIELDS)), raw)


def _read(reader: Reader, uid: str, days: Days) -> Rows:
    verdict_rows = _rows(reader, "verdicts", uid, days, VERDICT_FIELDS)
    return verdict_rows, _rows(reader, "observations", uid, days, STEP_FIELDS)


def _view(rows: Rows, raw: dict[str, Any] | None) -> MeasurementView | None:
    verdict_rows, step_rows = rows
    if not verdict_rows and not step_rows:
        return None
    head = (verdict_rows or step_rows)[0]
    width = len(HEAD)
    return MeasurementView(
        measurement_uid=head[0],
        measurement_start_time=head[1],
        probe_cc=head[2],
        probe_asn=head[3],
        test_name=head[4],
        source=head[5],
        steps=tuple(step(dict(zip(STEP_FIELDS, row[width:], strict=True))) for row in step_rows),
        verdicts=tuple(dict(zip(VERDICT_FIELDS, row[width:], strict=True)) for row in verdict_rows),
        replays=data_replays.replays(raw) if raw is not None else (),
        raw=raw,
    )


def _days(raw: dict[str, Any] | None) -> Days | None:
    """The day partition of a measurement's start time, if it has a readable one."""
    value = (raw or {}).get("measurement_start_time")
    if not isinstance(value, str):
        return None
    try:
        start = dt.datetime.strptime(value[:19].replace("T", " "), TIME_FORMAT)
    except ValueError:
        return None
    return day_range(start.date().isoformat(), start.date().isoformat())


def _rows(
    reader: Reader, table: str, uid: str, days: Days | None, fields: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in (*HEAD, *fields))
    order = (
        "t0 ASC NULLS LAST, transaction_id ASC NULLS LAST, kind"
        if table == "observations"
        else "service, function"
    )

    def build(r: Reader) -> str | None:
        source = r.source(table, *(days or (None, None)))
        if source is None:
            return None
        return (
            f"SELECT {names} FROM {source} WHERE measurement_uid = ? "
            f"ORDER BY {order} LIMIT {MAX_STEPS}"
        )

    return reader.query(build, (uid,))


def step(row: dict[str, Any]) -> Step:
    """A step of an observation row."""
    detail = _json(row["detail"])
    detail = detail if isinstance(detail, dict) else {}
    figures = {
        "loss": row["loss"],
        "throughput_kbps": row["throughput_kbps"],
        "bytes_sent": row["bytes_sent"],
        "bytes_received": row["bytes_received"],
        "packets_sent": row["packets_sent"],
        "packets_received": row["packets_received"],
        "status_code": row["status_code"],
        "answers": _json(row["answers"]),
    }
    return Step(
        kind=row["kind"] or "",
        target=row["target"],
        role=row["role"],
        what=_what(row, detail),
        failure=row["failure"],
        t=row["t0"],
        figures={k: v for k, v in figures.items() if v is not None},
    )


def _what(row: dict[str, Any], detail: dict[str, Any]) -> str:
    """What the step did, as a person reads it."""
    kind = row["kind"] or "step"
    peer = f"{row['ip']}:{row['port']}" if row["ip"] and row["port"] else row["ip"] or ""
    host = row["hostname"] or ""
    if kind == "dns":
        return " ".join(x for x in ("DNS", str(detail.get("query_type") or ""), host) if x)
    if kind == "tls":
        return f"TLS SNI {host or peer}".strip()
    if kind == "http":
        return f"HTTP {detail.get('method') or 'GET'} {detail.get('url') or host}".strip()
    if kind == "replay":
        parts = ("replay", str(detail.get("variant") or ""), str(detail.get("profile") or ""), peer)
        return " ".join(x for x in parts if x)
    if kind == "throughput":
        return f"download {host or peer}".strip()
    return f"{kind.upper()} {peer or host or row['target'] or ''}".strip()


def _json(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > MAX_ANSWERS_CHARS:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None

"""The archive's record codec: one stored measurement as one JSON line.

A record is written by the store's writer (:func:`record_line`) and read back by reads, recovery
and scans (:func:`parse_record`)::

    {"measurement_uid", "idempotency_key", "report_id", "received_at", "measurement"}

Rules:

- The measurement's own JSON bytes are embedded as they were encoded once (:func:`dumps`), so the
  writer never encodes a measurement twice.
- :func:`dumps` is compact JSON whose bytes are always valid UTF-8: what orjson refuses (integers
  beyond 64 bits, lone surrogates) goes through the standard library, escaped to ASCII, and
  :func:`loads` reads both.
- :func:`parse_record` never raises for what a line holds: a line that is not a record of this
  shape is ``None`` (the caller decides whether that is damage to report or to skip).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson


class Record(NamedTuple):
    """One archive record, as stored."""

    uid: str
    """The collector's ``measurement_uid``."""
    idempotency_key: str
    report_id: str | None
    received_at: str
    """ISO 8601 UTC with microseconds, the reception of the record's group."""
    measurement: dict[str, Any]
    """As submitted (validated and normalised); without the collector's uid."""


def dumps(value: Any) -> bytes:
    """Compact JSON; what orjson refuses (integers beyond 64 bits, lone surrogates) goes through
    the standard library, escaped to ASCII so the bytes are valid UTF-8."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return json.dumps(
                value, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not JSON-serialisable: {exc}") from exc


def loads(data: bytes) -> Any:
    """JSON as :func:`dumps` writes it (``ValueError`` when it is not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # what dumps() wrote through the standard library


def record_line(
    uid: str, key: str, report_id: str | None, received_at: str, measurement_json: bytes
) -> bytes:
    """One archive line, without its newline."""
    return b"".join(
        (
            b'{"measurement_uid":',
            dumps(uid),
            b',"idempotency_key":',
            dumps(key),
            b',"report_id":',
            dumps(report_id),
            b',"received_at":',
            dumps(received_at),
            b',"measurement":',
            measurement_json,
            b"}",
        )
    )


def parse_record(line: bytes) -> Record | None:
    """The record of an archive line; ``None`` when the line is not one."""
    try:
        record = loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    uid, key, report_id, received_at, measurement = (
        record.get(k)
        for k in ("measurement_uid", "idempotency_key", "report_id", "received_at", "measurement")
    )
    if not (
        isinstance(uid, str)
        and isinstance(key, str)
        and (report_id is None or isinstance(report_id, str))
        and isinstance(received_at, str)
        and isinstance(measurement, dict)
    ):
        return None
    return Record(uid, key, report_id, received_at, measurement)

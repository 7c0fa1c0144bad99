"""The collector's archive records, unwrapped without parsing the measurement inside.

An archive line is ``{"measurement_uid", "idempotency_key", "report_id", "received_at",
"measurement"}`` with the measurement's JSON last (``msgwatch.collector.store.records``). The pass
parses measurements on its workers, so a reader must not: :func:`unwrap` cuts the line at the first
``,"measurement":`` (inside a JSON string a quote is always escaped, so the first one is the key's)
and parses only the small header before it.

Rules:

- Only lines that start with ``{"measurement_uid"`` are tried; any other line is a bare
  measurement, passed on whole (:func:`item_of`).
- A line that starts so but is not a record of that shape (no ``"measurement"`` key, a header that
  does not parse or holds other keys or types, no closing brace) is passed on whole too: it may be
  a bare measurement that happens to begin with its uid, and the pass judges it.
- ``probe_tag`` is the idempotency key's part before its first ``.`` (the probe's per-network tag,
  ``msgwatch.spool.identity``); a key without a dot gives none.
"""

from __future__ import annotations

from typing import Any

import orjson

from msgwatch.analysis.inputs import Item

RECORD_PREFIX = b'{"measurement_uid"'
_MEASUREMENT_KEY = b',"measurement":'
_HEADER = {"measurement_uid": str, "idempotency_key": str, "received_at": str}
_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() strips
_OPEN, _CLOSE = ord("{"), ord("}")


def unwrap(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """``(header, measurement JSON)`` of an archive record line; None when it is not one."""
    found = unwrap_at(line, 0, len(line))
    if found is None:
        return None
    header, start, end = found
    return header, line[start:end]


def unwrap_at(data: bytes, start: int, end: int) -> tuple[dict[str, Any], int, int] | None:
    """:func:`unwrap` of the line ``data[start:end]`` without copying it: the header and where
    the measurement's JSON is in ``data``; None when the line is not a record."""
    if not data.startswith(RECORD_PREFIX, start, end):
        return None
    cut = data.find(_MEASUREMENT_KEY, start, end)
    stop = _rstrip(data, start, end)
    if cut < 0 or stop == start or data[stop - 1] != _CLOSE:
        return None
    try:
        header = orjson.loads(data[start:cut] + b"}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(header, dict) or not set(header) <= {*_HEADER, "report_id"}:
        return None
    if not all(isinstance(header.get(k), t) for k, t in _HEADER.items()):
        return None
    first, last = cut + len(_MEASUREMENT_KEY), stop - 1  # the JSON between the key and "}"
    left = first
    while left < last and data[left] in _SPACE:
        left += 1
    right = _rstrip(data, left, last)
    if not (left < right and data[left] == _OPEN and data[right - 1] == _CLOSE):
        return None
    return header, first, last


def _rstrip(data: bytes, start: int, end: int) -> int:
    """Where ``data[start:end].rstrip()`` would end."""
    while end > start and data[end - 1] in _SPACE:
        end -= 1
    return end


def probe_tag(idempotency_key: str) -> str | None:
    """The per-network probe tag of a key (before its first dot), or None."""
    tag, dot, _ = idempotency_key.partition(".")
    return tag if dot and tag else None


def record_item(header: dict[str, Any], measurement: bytes, where: str) -> Item:
    """The item of an unwrapped record."""
    return Item(
        line=measurement,
        where=where,
        probe_tag=probe_tag(header["idempotency_key"]),
        measurement_uid=header["measurement_uid"],
        received_at=header["received_at"],
    )


def item_of(line: bytes, where: str) -> Item:
    """An item for a line: an archive record unwrapped, anything else as it is."""
    unwrapped = unwrap(line)
    if unwrapped is None:
        return Item(line, where)
    return record_item(*unwrapped, where)

"""What every transform module shares: the measurement's envelope, row builders and bounds.

Rules:

- :func:`envelope` reads the keys every row carries and raises :class:`BadMeasurement`
  (``missing_key:<key>``, ``wrong_type:<key>``, ``bad_value:<key>``) when one is absent or odd.
- Rows are dicts with exactly the schema's columns (:func:`verdict`, :attr:`Transformed.observations`).
  An observation is built as its own columns only (:func:`observation`): every row of a
  measurement shares the envelope's (:data:`msgwatch.analysis.schema.ENVELOPE_COLUMNS`), and
  the rows handed to the lake say them once per measurement (:mod:`msgwatch.analysis.workers`).
- Text is cut at :data:`MAX_TEXT` characters, JSON-valued text at :data:`MAX_JSON`, a list of
  ``test_keys`` is read up to :data:`MAX_ENTRIES` entries, and a measurement gives at most
  :data:`MAX_OBSERVATIONS` observation rows (the last row's ``detail`` counts the rest).
- The probe's own address is never stored: a value equal to the envelope's ``probe_ip`` (unless
  it is a loopback placeholder) is dropped (:func:`scrub`); ``probe_ip``/``resolver_ip`` are
  never copied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Final

import orjson

from msgwatch.analysis.schema import OBSERVATION_COLUMNS, VERDICT_COLUMNS, names

MAX_TEXT: Final = 512
MAX_JSON: Final = 2048
MAX_OBSERVATIONS: Final = 2000
MAX_COUNTED: Final = 50_000
"""Rows beyond the cap are counted up to this many."""
MAX_ENTRIES: Final = 4096
"""Entries read from one list of ``test_keys`` (a longer list is read up to this)."""

Row = dict[str, Any]


class BadMeasurement(ValueError):
    """The measurement lacks a key the analysis needs, or has it with the wrong type."""


@dataclass(frozen=True)
class Meta:
    """What the source knows beside the measurement's text."""

    where: str
    measurement_uid: (
        str  # always set: the collector's, the measurement's own, or a digest of the line
    )
    probe_tag: str | None = None
    received_at: str | None = None


@dataclass
class Transformed:
    """The rows of one measurement: verdicts as dicts with exactly the schema's columns,
    observations as the envelope's columns (:attr:`envelope`) and each row's own (:attr:`parts`)."""

    test_name: str
    parts: list[Row] = field(default_factory=list)
    """Each observation row's own columns (never one of the envelope's; a column of neither is
    None)."""
    envelope: Row = field(default_factory=dict)
    """The columns every observation row shares (``schema.ENVELOPE_COLUMNS``)."""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # "unknown_test" when the test is not one the analysis reads
    problem: str | None = None  # odd content that cost the verdict rows ("judge_failed:...")

    @property
    def observations(self) -> list[Row]:
        """The observation rows, whole: every column of the schema."""
        return whole(self.envelope, self.parts)


_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\Z")
FIRST_YEAR: Final = 1970
"""The earliest year of a measurement's start: no measurement predates the epoch, and the
buckets' and periods' arithmetic (Python's and SQL's) needs no negative numbers."""
LAST_YEAR: Final = 9998
"""The latest: a bucket or dedup period that starts in it ends before Python's last date."""
_ASN = re.compile(r"AS\d{1,10}\Z")
_CC = re.compile(r"[A-Z]{2}\Z")
_PLACEHOLDERS = frozenset({"", "127.0.0.1", "::1", "0.0.0.0"})
_OBS_NONE: Final[Row] = dict.fromkeys(names(OBSERVATION_COLUMNS))
_VERDICT_NONE: Final[Row] = dict.fromkeys(names(VERDICT_COLUMNS))


@dataclass(frozen=True)
class Envelope:
    """The measurement's columns shared by all its rows, and the address never to store."""

    base: Row
    """The columns of ``schema.ENVELOPE_COLUMNS``, in order."""
    probe_ip: str | None
    keys: dict[str, Any]
    input: Any


def _key(measurement: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = measurement.get(name)
    if value is None:
        raise BadMeasurement(f"missing_key:{name}")
    if not isinstance(value, kind):
        raise BadMeasurement(f"wrong_type:{name}")
    return value


def envelope(measurement: dict[str, Any], meta: Meta, test_name: str) -> Envelope:
    """The shared columns of ``measurement``'s rows (raises :class:`BadMeasurement`)."""
    start = _key(measurement, "measurement_start_time", str)
    try:
        if not _TIME.match(start):
            raise ValueError(start)
        year = datetime.fromisoformat(start).year  # a real date and time (month 13 is not)
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise ValueError(start)
    except ValueError:
        raise BadMeasurement("bad_value:measurement_start_time") from None
    cc = _key(measurement, "probe_cc", str).upper()
    asn = _key(measurement, "probe_asn", (str, int))
    if isinstance(asn, bool):
        raise BadMeasurement("wrong_type:probe_asn")
    asn = f"AS{asn}" if isinstance(asn, int) else asn
    if not _ASN.match(asn):
        raise BadMeasurement("bad_value:probe_asn")
    keys = _key(measurement, "test_keys", dict)
    probe_ip = measurement.get("probe_ip")
    base = {
        "measurement_uid": meta.measurement_uid,
        "measurement_start_time": start,
        "day": start[:10],
        "probe_cc": cc if _CC.match(cc) else "ZZ",
        "probe_asn": asn,
        "probe_tag": meta.probe_tag,
        "source": "msgwatch" if test_name.startswith("msgwatch_") else "ooni",
        "test_name": test_name,
    }
    hidden = probe_ip if isinstance(probe_ip, str) and probe_ip not in _PLACEHOLDERS else None
    return Envelope(base, hidden, keys, measurement.get("input"))


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """``value`` as bounded text (None for anything but text and numbers)."""
    kind = type(value)
    if kind is str:
        return value[:limit]  # type: ignore[no-any-return]
    return str(value) if kind is int or kind is float else None


def jtext(value: Any) -> str | None:
    """``value`` as JSON text of at most :data:`MAX_JSON` characters (None when empty)."""
    if value is None or (isinstance(value, (dict, list)) and not value):
        return None
    try:
        out = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson refuses what JSON cannot say (nesting beyond 254 levels)
        return None
    if len(out) <= MAX_JSON:
        return out
    return orjson.dumps({"truncated": out[: MAX_JSON - 32]}).decode()


_INT64: Final = 9_223_372_036_854_775_808  # 2**63
_INT32: Final = 2_147_483_648  # 2**31
_SMALL: Final = 2_305_843_009_213_693_952  # 2**61
"""Within this, an int is compared as a machine word by the compiled code (beyond, as an object)."""


def integer(value: Any) -> int | None:
    """An int (not a bool) that fits a BIGINT column, or None."""
    if type(value) is not int:
        return None
    number: int = value
    if -_SMALL < number < _SMALL:
        return number
    return number if -_INT64 < number < _INT64 else None


def small(value: Any) -> int | None:
    """An int (not a bool) that fits an INTEGER column (port, attempt, status code), or None."""
    if type(value) is not int:
        return None
    number: int = value
    return number if -_INT32 < number < _INT32 else None


def number(value: Any) -> float | None:
    """A float from an int or float (not a bool), or None."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    return float(value) if kind is int and -_INT64 < value < _INT64 else None


def entries(value: Any) -> list[dict[str, Any]]:
    """The dict entries of a list (at most :data:`MAX_ENTRIES`); ``[]`` for anything else."""
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        return []
    return [e for e in value[:MAX_ENTRIES] if isinstance(e, dict)]


def whole(envelope: Row, parts: Iterable[Row]) -> list[Row]:
    """Observation rows with every column of the schema, from a measurement's envelope columns
    and each row's own (None for the rest)."""
    shared = {**_OBS_NONE, **envelope}
    return [{**shared, **own} for own in parts]


def observation(service: str | None, function: str | None, **columns: Any) -> Row:
    """An observation row's own columns: ``service``, ``function`` and ``columns`` (the envelope's
    are the measurement's, every other column is None)."""
    return {"service": service, "function": function, **columns}


def verdict(env: Envelope, service: str, function: str, **columns: Any) -> Row:
    """A verdict row: the envelope's columns, ``columns``, None for the rest."""
    row = dict(_VERDICT_NONE)
    row.update(env.base)
    row["service"] = service
    row["function"] = function
    row.update(columns)
    return row


_SCRUBBED = ("target", "hostname", "ip", "answers", "detail", "evidence", "explanation")


def scrub(rows: list[Row], probe_ip: str | None) -> None:
    """Drop the probe's own address from ``rows`` (in place)."""
    if probe_ip is None:
        return
    for row in rows:
        for column in _SCRUBBED:
            value = row.get(column)
            if isinstance(value, str) and probe_ip in value:
                row[column] = None if value == probe_ip else value.replace(probe_ip, "[scrubbed]")


def cap(rows: Iterable[Row]) -> list[Row]:
    """At most :data:`MAX_OBSERVATIONS` rows; the last one's ``detail`` counts the rest (up to
    :data:`MAX_COUNTED`)."""
    found = iter(rows)
    kept = list(islice(found, MAX_OBSERVATIONS))
    rest = sum(1 for _ in islice(found, MAX_COUNTED))
    if rest:
        kept[-1]["detail"] = jtext({"more_rows": rest})
    return kept

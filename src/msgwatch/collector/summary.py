"""What the index keeps of a measurement: its envelope, as summary columns and what it measured.

The read API lists measurements as summaries (docs/design/002-collector.md, "Summary"); the index
holds exactly what a summary needs, so a page of results never touches the archive. This module is
pure: a measurement (already validated and normalised by ``collector/models.py``) in, a row out. It
never raises on odd input, because recovery also runs it over whatever the archive holds.

The index keeps the envelope and never a verdict: verdicts are recomputed by the analysis
(:mod:`msgwatch.analysis`), not trusted from the probe, so ``test_keys.msgwatch_verdicts`` is not
read here, and OONI's own judgement (:mod:`msgwatch.analysis.ooni`) is not indexed either. What a
measurement measured is part of its envelope:

- ``service``: a catalogue id (:data:`SERVICE_PATTERN`). For msgwatch's test (``test_name``
  ``msgwatch_service``), ``test_keys.msgwatch_service``, else its ``input``; for OONI's messenger
  tests, the test's name (``whatsapp``, ``telegram``, ``signal``, ``facebook_messenger``:
  :data:`msgwatch.analysis.ooni.TESTS`); ``None`` for any other measurement.
- ``functions``: the functions it measured, each once, in its order, only those of msgwatch's
  vocabulary (:data:`INDEXED_FUNCTIONS`): the ``function`` of each entry of
  ``test_keys.msgwatch_functions``; for an OONI messenger test, the functions that test covers
  (:func:`msgwatch.analysis.ooni.functions`). So at most six, however long the measurement's list
  (issue 9: ten 3.8 MB measurements of repeated entries once grew the index to 147 MB). The archive
  keeps the measurement whole, and ``GET /api/v1/measurements/{uid}`` serves it as stored.

Text that goes into the index is made safe for both back-ends: NUL characters and unpaired
surrogates are replaced (PostgreSQL refuses the first, UTF-8 cannot encode the second) and long
values are cut (an index entry has a size limit), so no measurement can make an index transaction
fail. ``input`` keeps its JSON type (a string, a list, ``null``) and is stored as JSON text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from msgwatch.analysis import ooni
from msgwatch.measurement import vocab
from msgwatch.measurement.envelope import TEST_NAME

#: Cuts of indexed text, in characters.
SHORT_TEXT = 128
LONG_TEXT = 2048

FunctionName = vocab.Function
"""The catalogue's functions, as the format names them (a test checks they agree)."""
INDEXED_FUNCTIONS: Final = vocab.FUNCTIONS
SERVICE_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""A catalogue id (``msgwatch.catalogue.schema.Slug``)."""
_FUNCTIONS = frozenset(INDEXED_FUNCTIONS)


@dataclass(frozen=True)
class SummaryRow:
    """The summary columns of one measurement (all but ``measurement_uid`` and ``received_at``)."""

    report_id: str | None
    measurement_start_time: str
    probe_cc: str
    probe_asn: str
    test_name: str
    software_name: str
    input_json: str | None
    """``input`` as JSON text (``None`` when the measurement has none)."""
    service: str | None = None
    """The catalogue id of the service it measured (``None``: none that the index knows)."""
    functions: tuple[str, ...] = ()
    """The functions it measured, each once, in its order."""


def clean_text(value: object, limit: int = SHORT_TEXT) -> str:
    """``value`` as text that any index can hold: no NUL, valid UTF-8, at most ``limit`` chars."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def _optional_text(value: object, limit: int = SHORT_TEXT) -> str | None:
    return None if value is None else clean_text(value, limit)


def input_json(value: object) -> str | None:
    """``input`` as JSON text, bounded: a string is cut to :data:`LONG_TEXT` characters, another
    value too long (or not JSON-serialisable) becomes its text, cut."""
    if value is None:
        return None
    if isinstance(value, str):
        return orjson.dumps(clean_text(value, LONG_TEXT)).decode()
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # unpaired surrogates, integers beyond 64 bits
        text = clean_text(value, LONG_TEXT + 1)
        return orjson.dumps(text[:LONG_TEXT]).decode()
    if len(text) > LONG_TEXT:
        return orjson.dumps(text[:LONG_TEXT]).decode()
    return text


def summarise(measurement: Mapping[str, Any], report_id: str | None = None) -> SummaryRow:
    """The index row of ``measurement``; ``report_id`` (the URL's) wins over the measurement's."""
    if report_id is None and isinstance(measurement.get("report_id"), str):
        report_id = measurement["report_id"]
    return SummaryRow(
        report_id=_optional_text(report_id) or None,
        measurement_start_time=clean_text(measurement.get("measurement_start_time"), 32),
        probe_cc=clean_text(measurement.get("probe_cc") or "ZZ", 8),
        probe_asn=clean_text(measurement.get("probe_asn"), 32),
        test_name=clean_text(measurement.get("test_name")),
        software_name=clean_text(measurement.get("software_name")),
        input_json=input_json(measurement.get("input")),
        service=service_of(measurement),
        functions=functions_of(measurement),
    )


def service_of(measurement: Mapping[str, Any]) -> str | None:
    """The catalogue id of the service ``measurement`` measured (see the module's docstring)."""
    test_name = measurement.get("test_name")
    if isinstance(test_name, str) and test_name in ooni.TESTS:
        return test_name
    if test_name != TEST_NAME:
        return None
    keys = measurement.get("test_keys")
    named = keys.get(vocab.SERVICE) if isinstance(keys, Mapping) else None
    for candidate in (named, measurement.get("input")):
        if isinstance(candidate, str) and SERVICE_PATTERN.fullmatch(candidate) is not None:
            return candidate
    return None


def functions_of(measurement: Mapping[str, Any]) -> tuple[str, ...]:
    """The functions ``measurement`` measured, each once, in its order (at most six)."""
    test_name = measurement.get("test_name")
    if isinstance(test_name, str) and test_name in ooni.TESTS:
        return ooni.functions(test_name)
    keys = measurement.get("test_keys")
    entries = keys.get(vocab.FUNCTIONS_KEY) if isinstance(keys, Mapping) else None
    found: dict[str, None] = {}
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("function") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and name in _FUNCTIONS:
            found[name] = None
            if len(found) == len(_FUNCTIONS):
                break
    return tuple(found)

"""What the index keeps of a measurement: its summary columns and its verdict rows.

The read API lists measurements as summaries (docs/design/002-collector.md, "Summary"); the index
holds exactly what a summary needs, so a page of results never touches the archive. This module is
pure: a measurement (already validated and normalised by ``collector/models.py``) in, rows out. It
never raises on odd input, because recovery also runs it over whatever the archive holds.

Verdicts:

- msgwatch's measurements carry their own: ``test_keys.msgwatch_verdicts``, a list of
  ``{"service", "function", "verdict", "mechanism", ...}``; only those four keys are indexed, and
  only for an entry in msgwatch's vocabulary: ``verdict`` one of :data:`INDEXED_VERDICTS` (the
  probe's ``Verdict``), ``function`` one of :data:`INDEXED_FUNCTIONS` (the catalogue's), ``service``
  a catalogue id (:data:`SERVICE_PATTERN`). Other entries stay in the archive, unindexed.
- OONI's messenger tests are derived from OONI's own keys, with the service named as msgwatch names
  it (``whatsapp``, ``telegram``, ``signal``, ``facebook_messenger``). A status ``"ok"`` is ``ok``,
  ``"blocked"`` is ``blocked``; a boolean ``*_blocking`` is ``blocked`` when true and ``ok`` when
  false; anything else (``null``, a key missing: the test could not tell) gives no verdict. The
  mechanism is OONI's failure string for the function when it has one (``ssl_invalid_hostname``),
  else the name of OONI's key that said "blocked" (``telegram_tcp_blocking``), else ``None``:

  ======================  ============  ==============================================================
  test                    function      OONI keys
  ======================  ============  ==============================================================
  ``whatsapp``            text          ``whatsapp_endpoints_status``
  ``whatsapp``            web           ``whatsapp_web_status``, ``whatsapp_web_failure``
  ``whatsapp``            registration  ``registration_server_status``, ``registration_server_failure``
  ``telegram``            text          ``telegram_tcp_blocking``, ``telegram_http_blocking``
  ``telegram``            web           ``telegram_web_status``, ``telegram_web_failure``
  ``signal``              text          ``signal_backend_status``, ``signal_backend_failure``
  ``facebook_messenger``  text          ``facebook_tcp_blocking``, ``facebook_dns_blocking``
  ======================  ============  ==============================================================

- Any other measurement has no verdicts.

**Bounded** (issue 9: ten 3.8 MB measurements of nothing but verdict entries grew the index to
147 MB): at most :data:`MAX_VERDICTS` rows per measurement, the first ones, each of at most
~300 bytes of text. A probe writes one verdict per function of one service (six functions), so the
bound never cuts a real measurement; the archive keeps the measurement whole, and
``GET /api/v1/measurements/{uid}`` serves it as stored.

Text that goes into the index is made safe for both back-ends: NUL characters and unpaired
surrogates are replaced (PostgreSQL refuses the first, UTF-8 cannot encode the second) and long
values are cut (an index entry has a size limit), so no measurement can make an index transaction
fail. ``input`` keeps its JSON type (a string, a list, ``null``) and is stored as JSON text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson

#: Cuts of indexed text, in characters.
SHORT_TEXT = 128
LONG_TEXT = 2048

MESSENGER_TESTS = ("whatsapp", "telegram", "signal", "facebook_messenger")
MAX_VERDICTS: Final = 32
"""Verdict rows indexed per measurement, at most (the first ones)."""
VerdictName = Literal["ok", "blocked", "inconclusive", "throttled", "degraded", "not_measured"]
"""``msgwatch.analysis.verdicts.rules.Verdict`` (a test checks they agree; not imported, so the collector
does not load the probe's rule engine)."""
FunctionName = Literal["text", "voice", "video", "media", "web", "registration"]
"""``msgwatch.catalogue.FUNCTIONS`` (a test checks they agree)."""
INDEXED_VERDICTS: Final = get_args(VerdictName)
INDEXED_FUNCTIONS: Final = get_args(FunctionName)
SERVICE_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""A catalogue id (``msgwatch.catalogue.schema.Slug``)."""
_VERDICTS = frozenset(INDEXED_VERDICTS)
_FUNCTIONS = frozenset(INDEXED_FUNCTIONS)


@dataclass(frozen=True)
class VerdictRow:
    service: str
    function: str
    verdict: str
    mechanism: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "function": self.function,
            "verdict": self.verdict,
            "mechanism": self.mechanism,
        }


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
    verdicts: tuple[VerdictRow, ...]


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
        verdicts=tuple(verdicts_of(measurement)),
    )


def verdicts_of(measurement: Mapping[str, Any]) -> list[VerdictRow]:
    """The verdict rows of a measurement (see the module's docstring); ``[]`` when it has none."""
    test_keys = measurement.get("test_keys")
    if not isinstance(test_keys, Mapping):
        return []
    own = test_keys.get("msgwatch_verdicts")
    if isinstance(own, list):
        return _msgwatch_verdicts(own)
    test_name = measurement.get("test_name")
    if test_name == "whatsapp":
        return _whatsapp(test_keys)
    if test_name == "telegram":
        return _telegram(test_keys)
    if test_name == "signal":
        return _signal(test_keys)
    if test_name == "facebook_messenger":
        return _facebook_messenger(test_keys)
    return []


def _msgwatch_verdicts(entries: list[Any]) -> list[VerdictRow]:
    rows: list[VerdictRow] = []
    for entry in entries:
        if len(rows) == MAX_VERDICTS:
            break
        if not isinstance(entry, Mapping):
            continue
        service, function, verdict = (entry.get(k) for k in ("service", "function", "verdict"))
        if not (
            verdict in _VERDICTS
            and function in _FUNCTIONS
            and isinstance(service, str)
            and SERVICE_PATTERN.fullmatch(service) is not None
        ):
            continue
        mechanism = entry.get("mechanism")
        rows.append(
            VerdictRow(
                service,
                str(function),
                str(verdict),
                clean_text(mechanism) if isinstance(mechanism, str) else None,
            )
        )
    return rows


def _from_status(
    service: str, function: str, keys: Mapping[str, Any], status_key: str, failure_key: str | None
) -> list[VerdictRow]:
    status = keys.get(status_key)
    if status == "ok":
        return [VerdictRow(service, function, "ok", None)]
    if status == "blocked":
        failure = keys.get(failure_key) if failure_key else None
        mechanism = clean_text(failure) if isinstance(failure, str) and failure else None
        return [VerdictRow(service, function, "blocked", mechanism)]
    return []


def _from_flags(
    service: str, function: str, keys: Mapping[str, Any], flag_keys: tuple[str, ...]
) -> list[VerdictRow]:
    flags = [(name, keys.get(name)) for name in flag_keys]
    for name, value in flags:
        if value is True:
            return [VerdictRow(service, function, "blocked", name)]
    if any(value is False for _, value in flags):
        return [VerdictRow(service, function, "ok", None)]
    return []


def _whatsapp(keys: Mapping[str, Any]) -> list[VerdictRow]:
    return [
        *_from_status("whatsapp", "text", keys, "whatsapp_endpoints_status", None),
        *_from_status("whatsapp", "web", keys, "whatsapp_web_status", "whatsapp_web_failure"),
        *_from_status(
            "whatsapp",
            "registration",
            keys,
            "registration_server_status",
            "registration_server_failure",
        ),
    ]


def _telegram(keys: Mapping[str, Any]) -> list[VerdictRow]:
    return [
        *_from_flags("telegram", "text", keys, ("telegram_tcp_blocking", "telegram_http_blocking")),
        *_from_status("telegram", "web", keys, "telegram_web_status", "telegram_web_failure"),
    ]


def _signal(keys: Mapping[str, Any]) -> list[VerdictRow]:
    return _from_status("signal", "text", keys, "signal_backend_status", "signal_backend_failure")


def _facebook_messenger(keys: Mapping[str, Any]) -> list[VerdictRow]:
    return _from_flags(
        "facebook_messenger", "text", keys, ("facebook_tcp_blocking", "facebook_dns_blocking")
    )

"""Validation and normalisation of what probes submit (docs/design/002-collector.md).

Everything here is pure: bytes (and the submitting client's address, and ``now`` where a time is
needed) in, a clean value or a :class:`Rejection` out. No I/O, no clock, no framework. The HTTP layer
(``routes/``) reads the body, calls one of the ``parse_*`` functions and hands the result to the store.

Rules, in the order they are applied to a body:

1. **Size** — at most 4 MiB for one measurement, 32 MiB for a batch (``body_too_large``).
2. **Encoding** — UTF-8 only; a NUL byte (UTF-16 without a byte-order mark) or an invalid UTF-8
   sequence (Latin-1, UTF-16 with one) is ``bad_encoding``.
3. **Parse** with orjson. orjson refuses documents nested deeper than 1,024 levels while parsing
   (``depth limit exceeded``): a 100,000-level body never becomes 100,000 Python objects. That
   error is reported as ``too_deep``; any other parse failure is ``malformed_json``.
4. **Depth** — the doc's limit, 64 levels counted from the measurement object (level 1), is then
   checked by a walk over the containers of the (at most 1,024-deep) parsed value that stops at
   the limit. It costs about as much as the parse (~50 µs for 18 KB); the byte-level scans tried
   instead (strings stripped by regex or split, brackets counted by translate) cost more.
5. **Client address** — the submitter's own address is replaced by ``127.0.0.1`` wherever it
   appears in a *measurement* (strings and object keys; never in a batch item's idempotency key,
   which is the client's name for its submission and must come back as sent). First one search of
   the raw body: the address itself, or a ``\\uXXXX`` escape of a character an address is written
   with (a digit, ``.``, ``:``, a hex letter) — JSON lets a client escape any character, so the
   address need not appear in the bytes as such. Only when either is found (rare: a probe scrubs
   its own address) is the measurement re-encoded with orjson, which writes those characters
   unescaped, and the address replaced in that canonical text with boundary checks, then parsed
   again: exact whatever the client's escaping, at no cost in the usual case.
6. **Envelope** — only the top-level keys are examined; ``test_keys`` stays opaque (it must be an
   object or null, nothing more); a missing ``probe_asn``/``probe_cc`` is ``AS0``/``ZZ``. ``probe_asn`` is ``AS<n>``, ``measurement_start_time`` is
   ``YYYY-MM-DD HH:MM:SS`` (a real calendar time: :data:`TIME_PATTERN`, the one in
   ``/openapi.json``), a ``probe_cc`` that is not two ASCII letters
   becomes ``ZZ`` (letters are upper-cased), a present ``probe_ip`` becomes ``127.0.0.1``.
7. **Format** — a measurement of one of msgwatch's own tests (``msgwatch_service``, ...) must
   pass ``msgwatch.measurement.validate`` (``invalid_measurement``); OONI's tests are not checked.

A :class:`Rejection` carries one of the stable reason codes of the doc and the HTTP status that goes
with it; the rejection counter is labelled with the code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import secrets
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from msgwatch.measurement.registry import spec_for
from msgwatch.measurement.validate import validate

MAX_MEASUREMENT_BYTES: Final = 4 * 1024 * 1024
MAX_BATCH_BYTES: Final = 32 * 1024 * 1024
MAX_BATCH_ITEMS: Final = 500
MAX_DEPTH: Final = 64
SCRUBBED_IP: Final = "127.0.0.1"

REQUIRED_KEYS: Final = (
    "test_name",
    "measurement_start_time",
    "test_keys",
    "software_name",
    "software_version",
)
_STRING_KEYS: Final = ("test_name", "software_name", "software_version")
DEFAULTED_KEYS: Final = {"probe_asn": "AS0", "probe_cc": "ZZ"}
"""Lenient where OONI's collector is: old OONI measurements (2015's ``meek_fronted_requests_test``)
have neither; they are stored as AS0/ZZ, OONI's own "unknown"."""

# The doc's reason codes and the status each is answered with.
STATUS: Final[dict[str, int]] = {
    "body_too_large": 413,
    "body_timeout": 408,
    "bad_encoding": 400,
    "malformed_json": 400,
    "too_deep": 400,
    "not_an_object": 400,
    "missing_key": 400,
    "bad_type": 400,
    "bad_asn": 400,
    "bad_time": 400,
    "invalid_measurement": 400,
    "bad_report_id": 400,
    "unsupported_format": 400,
    "bad_idempotency_key": 400,
    "batch_too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "storage_unavailable": 503,
    "analysis_unavailable": 503,
    "not_found": 404,
    "bad_query": 400,
}
REASONS: Final = frozenset(STATUS)


class Rejection(Exception):
    """Refused input: ``reason`` is a stable code of the doc, ``detail`` human text."""

    def __init__(
        self,
        reason: str,
        detail: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        assert reason in STATUS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = STATUS[reason] if status is None else status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class BatchItem:
    """One accepted item of a batch: its key (given or derived) and the normalised measurement."""

    idempotency_key: str
    measurement: dict[str, Any]


@dataclass(frozen=True)
class BatchRefusal:
    """One refused item of a batch; ``idempotency_key`` is what the client sent (may be ``None``)."""

    idempotency_key: str | None
    rejection: Rejection


@dataclass(frozen=True)
class OpenReport:
    """``POST /report``: what a report's id is made of."""

    test_name: str
    probe_cc: str
    probe_asn: str
    software_name: str
    software_version: str


# --- bytes -> JSON value -------------------------------------------------------------------------


def parse_json(raw: bytes, limit: int) -> Any:
    """Size, encoding, parse; the JSON value or a :class:`Rejection`."""
    if len(raw) > limit:
        raise Rejection("body_too_large", f"the body is {len(raw)} bytes, at most {limit} allowed")
    if raw[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark: harmless, dropped (RFC 8259 §8.1)
        raw = raw[3:]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _classify(raw, exc) from None


def _classify(raw: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    message = str(exc)
    if b"\x00" in raw:
        return Rejection("bad_encoding", "the body contains NUL bytes: it is not UTF-8 JSON")
    if message.startswith("str is not valid UTF-8"):
        return Rejection("bad_encoding", "the body is not valid UTF-8")
    if message.startswith("depth limit exceeded"):
        return Rejection("too_deep", f"JSON nesting deeper than {MAX_DEPTH} levels")
    # orjson's message names the position, never echoes content: safe to return.
    return Rejection("malformed_json", message[:200])


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested deeper than ``limit`` levels (the value itself is level 1).

    A recursive walk over the containers, which stops as soon as the limit is crossed: at most
    ``limit`` frames deep whatever the value (orjson already refused anything beyond 1,024).
    """
    kind = type(value)
    if (kind is dict or kind is list) and _deeper_than(value, limit - 1):
        raise Rejection("too_deep", f"JSON nesting deeper than {limit} levels")


def _deeper_than(node: Any, budget: int) -> bool:
    """Whether ``node`` (a dict or a list) has containers nested more than ``budget`` levels below."""
    for child in node.values() if type(node) is dict else node:
        kind = type(child)
        if (kind is dict or kind is list) and (budget == 0 or _deeper_than(child, budget - 1)):
            return True
    return False


# --- the client's own address --------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _address_pattern(address: str) -> tuple[bytes, re.Pattern[bytes]] | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = str(ip)
    if text == SCRUBBED_IP:
        return None
    if ip.version == 4:
        # Not part of a longer dotted number: 1.2.3.4 must not match 11.2.3.4 or 1.2.3.45.
        pattern = rb"(?<![0-9.])" + re.escape(text.encode()) + rb"(?![0-9]|\.[0-9])"
        return text.encode(), re.compile(pattern)
    pattern = rb"(?<![0-9A-Fa-f:])" + re.escape(text.encode()) + rb"(?![0-9A-Fa-f:])"
    return b"", re.compile(pattern, re.IGNORECASE)


# ``\uXXXX`` escapes of the characters addresses are written with: digits, ".", ":", A-F, a-f.
_ADDRESS_ESCAPE = re.compile(rb"\\u00(?:3[0-9Aa]|2[Ee]|4[1-6]|6[1-6])")


def scrub_address(raw: bytes, client: str) -> bytes:
    """``raw`` (JSON text without escapes of address characters, as orjson writes it) with every
    occurrence of the address ``client`` replaced by ``127.0.0.1``."""
    compiled = _address_pattern(client)
    if compiled is None:
        return raw
    needle, pattern = compiled
    if needle and needle not in raw:  # the usual case: one fast search, no copy
        return raw
    return pattern.sub(SCRUBBED_IP.encode(), raw)


def may_hold_address(raw: bytes, client: str | None) -> bool:
    """Whether the body ``raw`` may hold the address ``client``, written plainly or escaped."""
    if client is None:
        return False
    compiled = _address_pattern(client)
    if compiled is None:
        return False
    needle, pattern = compiled
    if _ADDRESS_ESCAPE.search(raw) is not None:
        return True
    return (needle in raw) if needle else pattern.search(raw) is not None


def scrub_value(value: Any, client: str) -> Any:
    """``value`` (parsed JSON, at most :data:`MAX_DEPTH` deep) with the address ``client``
    replaced in every string and key: re-encoded canonically, scrubbed, parsed again."""
    encoded = orjson.dumps(value)
    scrubbed = scrub_address(encoded, client)
    return value if scrubbed is encoded or scrubbed == encoded else orjson.loads(scrubbed)


# --- the measurement envelope --------------------------------------------------------------------

_ASN_NUMBER = (  # 0 .. 4294967295, without leading zeros
    r"(?:0|[1-9][0-9]{0,8}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}"
    r"|4294[0-8][0-9]{5}|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}"
    r"|42949672[0-8][0-9]|429496729[0-5])"
)
ASN_PATTERN: Final = re.compile(f"AS{_ASN_NUMBER}")
"""``probe_asn``: ``AS`` and a 32-bit AS number (as in ``/openapi.json``)."""

_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rf"|{_YEAR}-(?:0[13-9]|1[0-2])-(?:29|30)"
    rf"|{_YEAR}-(?:0[13578]|1[02])-31"
    rf"|{_LEAP_YEAR}-02-29)"
)
TIME_PATTERN: Final = re.compile(rf"{_DATE} (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
"""``YYYY-MM-DD HH:MM:SS`` that is a real (proleptic Gregorian) date and time: exactly what
``datetime`` accepts, written as a pattern so that ``/openapi.json`` states the very rule."""
_LETTERS = frozenset(string.ascii_letters)


def normalise_cc(value: Any) -> str:
    """Two ASCII letters, upper-cased; anything else is ``ZZ`` (as OONI's collector does)."""
    if type(value) is str and len(value) == 2 and value[0] in _LETTERS and value[1] in _LETTERS:
        return value.upper()
    return "ZZ"


def check_asn(value: Any) -> str:
    if type(value) is not str:
        raise Rejection("bad_type", f"probe_asn must be a string, not {_kind(value)}")
    if ASN_PATTERN.fullmatch(value) is None:
        raise Rejection("bad_asn", "probe_asn must be AS<n> with n an AS number (AS0 if unknown)")
    return value


def check_time(value: Any, key: str = "measurement_start_time") -> str:
    if type(value) is not str:
        raise Rejection("bad_type", f"{key} must be a string, not {_kind(value)}")
    if TIME_PATTERN.fullmatch(value) is None:
        raise Rejection(
            "bad_time", f"{key} must be a real date and time, YYYY-MM-DD HH:MM:SS (UTC)"
        )
    return value


def normalise_measurement(
    value: Any, depth_limit: int = MAX_DEPTH, client: str | None = None
) -> dict[str, Any]:
    """The envelope checks of the doc on a parsed value; returns it normalised (with the address
    ``client`` scrubbed when given: pass it only when :func:`may_hold_address` said so)."""
    if type(value) is not dict:
        raise Rejection("not_an_object", f"a measurement must be a JSON object, not {_kind(value)}")
    for key in REQUIRED_KEYS:
        if key not in value:
            raise Rejection("missing_key", f"the measurement has no {key!r}")
    check_depth(value, depth_limit)
    if client is not None:
        value = scrub_value(value, client)  # a dict in, a dict out
    for key, unknown in DEFAULTED_KEYS.items():
        value.setdefault(key, unknown)
    for key in _STRING_KEYS:
        if type(value[key]) is not str:
            raise Rejection("bad_type", f"{key} must be a string, not {_kind(value[key])}")
    if value["test_keys"] is not None and type(value["test_keys"]) is not dict:
        # null: a real OONI measurement whose test failed before it had any keys
        raise Rejection("bad_type", f"test_keys must be an object, not {_kind(value['test_keys'])}")
    check_asn(value["probe_asn"])
    check_time(value["measurement_start_time"])
    value["probe_cc"] = normalise_cc(value["probe_cc"])
    if "probe_ip" in value:
        value["probe_ip"] = SCRUBBED_IP
    check_own_format(value)
    clean: dict[str, Any] = value
    return clean


def check_own_format(value: dict[str, Any]) -> None:
    """msgwatch's own tests (``msgwatch_*``, in the measurement registry) must follow their format
    (``msgwatch.measurement.validate``); OONI's tests are OONI's to define and are not checked."""
    spec = spec_for(value["test_name"])
    if spec is None or spec.test_version is None:
        return
    problems = validate(value)
    if problems:
        shown = "; ".join(problems[:3])
        raise Rejection(
            "invalid_measurement",
            f"{len(problems)} problem(s) with the {spec.test_name} format: {shown}",
        )


def parse_measurement(raw: bytes, client: str | None = None) -> dict[str, Any]:
    """A bare measurement body (at most 4 MiB)."""
    value = parse_json(raw, MAX_MEASUREMENT_BYTES)
    return normalise_measurement(value, client=client if may_hold_address(raw, client) else None)


def parse_report_content(raw: bytes, client: str | None = None) -> dict[str, Any]:
    """``POST /report/{id}``: ``{"format": "json", "content": <measurement>}``."""
    body = parse_json(raw, MAX_MEASUREMENT_BYTES)
    if type(body) is not dict:
        raise Rejection("not_an_object", f"the body must be a JSON object, not {_kind(body)}")
    check_format(body.get("format", "json"))
    if "content" not in body:
        raise Rejection("missing_key", "the body has no 'content'")
    scrub = client if may_hold_address(raw, client) else None
    return normalise_measurement(body["content"], client=scrub)


def check_format(value: Any) -> None:
    if value != "json":
        raise Rejection("unsupported_format", 'the only supported format is "json"')


# --- batches -------------------------------------------------------------------------------------


def parse_batch(raw: bytes, client: str | None = None) -> list[BatchItem | BatchRefusal]:
    """``POST /api/v1/submit``: each item accepted or refused on its own.

    The body as a whole can still be refused (too large, not JSON, not ``{"measurements": [...]}``,
    more than 500 items): then nothing of it is stored.
    """
    body = parse_json(raw, MAX_BATCH_BYTES)
    if type(body) is not dict:
        raise Rejection("not_an_object", f"the body must be a JSON object, not {_kind(body)}")
    if "measurements" not in body:
        raise Rejection("missing_key", "the body has no 'measurements'")
    items = body["measurements"]
    if type(items) is not list:
        raise Rejection("bad_type", f"'measurements' must be a list, not {_kind(items)}")
    if len(items) > MAX_BATCH_ITEMS:
        raise Rejection(
            "batch_too_large", f"{len(items)} measurements, at most {MAX_BATCH_ITEMS} per batch"
        )
    sized = len(raw) > MAX_MEASUREMENT_BYTES  # only then can one item exceed the per-item limit
    scrub = client if may_hold_address(raw, client) else None
    return [_batch_item(item, sized, scrub) for item in items]


def _batch_item(item: Any, sized: bool, client: str | None) -> BatchItem | BatchRefusal:
    given = item.get("idempotency_key") if type(item) is dict else None
    key: str | None = given if type(given) is str else None
    try:
        if type(item) is not dict:
            raise Rejection("not_an_object", f"a batch item must be an object, not {_kind(item)}")
        if given is not None:
            check_idempotency_key(given)
        if "measurement" not in item:
            raise Rejection("missing_key", "the item has no 'measurement'")
        measurement = item["measurement"]
        if sized and type(measurement) is dict:
            size = len(orjson.dumps(measurement))
            if size > MAX_MEASUREMENT_BYTES:
                raise Rejection(
                    "body_too_large", f"the measurement is {size} bytes, at most 4 MiB allowed"
                )
        clean = normalise_measurement(measurement, client=client)
        return BatchItem(key if key is not None else content_key(clean), clean)
    except Rejection as rejection:
        return BatchRefusal(key if key is not None and len(key) <= 256 else None, rejection)


# --- keys and report ids -------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
KEY_PATTERN: Final = "^[A-Za-z0-9._:-]{1,128}$"
CONTENT_KEY_PREFIX: Final = "sha256:"
"""The namespace of the keys the collector derives for submissions without one
(:func:`content_key`): a client's own key may not start with it, or it could take the key of a
measurement an OONI probe has yet to send, which would then be answered ``duplicate`` and lost."""


def check_idempotency_key(value: Any) -> str:
    if type(value) is not str or _KEY.fullmatch(value) is None:
        raise Rejection(
            "bad_idempotency_key", "an idempotency key is 1-128 characters of [A-Za-z0-9._:-]"
        )
    if value.startswith(CONTENT_KEY_PREFIX):
        raise Rejection(
            "bad_idempotency_key",
            f"keys starting with {CONTENT_KEY_PREFIX!r} are the collector's own (sent without a key)",
        )
    return value


def content_key(measurement: dict[str, Any]) -> str:
    """The key of a measurement sent without one (OONI probes): ``sha256:`` of its canonical JSON
    (keys sorted at every level, no whitespace, UTF-8), computed on the normalised measurement."""
    canonical = orjson.dumps(measurement, option=orjson.OPT_SORT_KEYS)
    return CONTENT_KEY_PREFIX + hashlib.sha256(canonical).hexdigest()


# <YYYYMMDDThhmmssZ>_<test>_<CC>_<asn digits>_n1_<16 random>
_REPORT_ID = re.compile(
    r"[0-9]{8}T[0-9]{6}Z_[A-Za-z0-9]{1,64}_[A-Z]{2}_[0-9]{1,10}_n1_[A-Za-z0-9]{16}"
)
_RANDOM_ALPHABET = string.ascii_letters + string.digits


def check_report_id(value: str) -> str:
    if len(value) > 128 or _REPORT_ID.fullmatch(value) is None:
        raise Rejection(
            "bad_report_id", "a report id has the form <YYYYMMDDThhmmssZ>_<test>_<CC>_<asn>_n1_<16>"
        )
    return value


def parse_open_report(raw: bytes) -> OpenReport:
    """``POST /report``: the fields a report id is made of, checked like a measurement's."""
    body = parse_json(raw, MAX_MEASUREMENT_BYTES)
    if type(body) is not dict:
        raise Rejection("not_an_object", f"the body must be a JSON object, not {_kind(body)}")
    for key in ("probe_asn", "probe_cc", "test_name", "software_name", "software_version"):
        if key not in body:
            raise Rejection("missing_key", f"the body has no {key!r}")
    for key in ("test_name", "software_name", "software_version"):
        if type(body[key]) is not str:
            raise Rejection("bad_type", f"{key} must be a string, not {_kind(body[key])}")
    for key in ("test_version", "data_format_version"):  # not used, but typed as documented
        if body.get(key) is not None and type(body[key]) is not str:
            raise Rejection("bad_type", f"{key} must be a string or null, not {_kind(body[key])}")
    check_format(body.get("format", "json"))
    return OpenReport(
        test_name=body["test_name"],
        probe_cc=normalise_cc(body["probe_cc"]),
        probe_asn=check_asn(body["probe_asn"]),
        software_name=body["software_name"],
        software_version=body["software_version"],
    )


def new_report_id(report: OpenReport, now: dt.datetime, random: str | None = None) -> str:
    """OONI's shape; the test part is the test name's letters and digits (``web_connectivity`` →
    ``webconnectivity``), ``test`` when nothing is left of it."""
    test = "".join(c for c in report.test_name if c.isascii() and c.isalnum())[:64] or "test"
    if random is None:
        random = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(16))
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{test}_{report.probe_cc}_{report.probe_asn[2:]}_n1_{random}"


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# --- the read API's query -------------------------------------------------------------------------
# Each parameter has a pattern (or an enumeration) in /openapi.json, checked by FastAPI before the
# route runs (400 bad_query); any value of that form is answered. The functions below normalise.

QUERY_TEXT_LIMIT: Final = 256
QUERY_PARAMETERS: Final = frozenset(
    (
        "service",
        "function",
        "probe_asn",
        "probe_cc",
        "test_name",
        "since",
        "until",
        "limit",
        "cursor",
    )
)
SERVICE_QUERY: Final = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ASN_QUERY: Final = f"^(?:[Aa][Ss])?{_ASN_NUMBER}$"
CC_QUERY: Final = r"^[A-Za-z]{2}$"
_QUERY_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_QUERY_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
TIME_QUERY: Final = rf"^{_DATE}(?:[T ]{_QUERY_CLOCK}{_QUERY_OFFSET}?)?$"
"""``since``/``until``: a date, or a date and a time (minutes, seconds and fractions optional),
``T`` or a space between them, an optional ``Z`` or ``±hh:mm`` offset (UTC without one)."""
CURSOR_QUERY: Final = r"^[0-9]{14}~[A-Za-z0-9._-]{1,256}$"
"""A position in the order of the list: ``<YYYYMMDDhhmmss>~<measurement_uid>``, the page resumes
after it (``next_cursor`` is the position of a page's last summary)."""

_TIME_QUERY = re.compile(TIME_QUERY)
_EARLIEST, _LATEST = "0001-01-01 00:00:00", "9999-12-31 23:59:59"


def check_query_parameters(names: list[str], known: frozenset[str] = QUERY_PARAMETERS) -> None:
    """Every parameter ``known``, none given twice (a typo must not silently widen the answer)."""
    unknown = sorted({name for name in names if name not in known})
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:3])
        raise Rejection(
            "bad_query",
            f"unknown parameter {shown}; known: {', '.join(sorted(known))}",
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise Rejection("bad_query", f"{repeated[0]} is given more than once")


def query_text(value: str | None, name: str) -> str | None:
    if value is not None and not 0 < len(value) <= QUERY_TEXT_LIMIT:
        raise Rejection("bad_query", f"{name} must be 1-{QUERY_TEXT_LIMIT} characters")
    return value


def query_time(value: str | None, name: str) -> str | None:
    """:data:`TIME_QUERY` (any offset, converted to UTC) → ``YYYY-MM-DD HH:MM:SS``, the form
    ``measurement_start_time`` is compared in; an offset taking it past year 1 or 9999 is
    clamped."""
    if value is None:
        return None
    if _TIME_QUERY.fullmatch(value) is None:
        raise Rejection(
            "bad_query",
            f"{name} must be YYYY-MM-DD or YYYY-MM-DD[T ]HH:MM[:SS][Z|+hh:mm], not {value[:40]!r}",
        )
    moment = dt.datetime.fromisoformat(value.replace("z", "Z"))
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            return _EARLIEST if value[:4] == "0001" else _LATEST
    return moment.isoformat(sep=" ", timespec="seconds")  # strftime drops zeros of year 5


def query_asn(value: str | None) -> str | None:
    """``AS<n>`` or ``<n>`` (any case) → ``AS<n>``."""
    if value is None:
        return None
    if re.fullmatch(ASN_QUERY, value) is None:
        raise Rejection("bad_query", "probe_asn must be AS<n> or <n>, n a 32-bit AS number")
    text = value.upper()
    return text if text.startswith("AS") else "AS" + text


def query_cc(value: str | None) -> str | None:
    if value is None:
        return None
    if re.fullmatch(CC_QUERY, value) is None:
        raise Rejection("bad_query", "probe_cc must be two letters")
    return value.upper()


# --- shapes for the OpenAPI document -------------------------------------------------------------
# The routes read raw bytes and validate with the functions above (fast, and with the doc's reason
# codes); these pydantic classes only describe the same shapes in /openapi.json.

ReasonCode = Literal[
    "body_too_large",
    "body_timeout",
    "bad_encoding",
    "malformed_json",
    "too_deep",
    "not_an_object",
    "missing_key",
    "bad_type",
    "bad_asn",
    "bad_time",
    "invalid_measurement",
    "bad_report_id",
    "unsupported_format",
    "bad_idempotency_key",
    "batch_too_large",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "storage_unavailable",
    "analysis_unavailable",
    "not_found",
    "bad_query",
]


class ErrorBody(BaseModel):
    """Every error: a stable reason code and human text."""

    error: ReasonCode
    detail: str


_ASN_SCHEMA: Final = f"^{ASN_PATTERN.pattern}$"
_TIME_SCHEMA: Final = f"^{TIME_PATTERN.pattern}$"
REPORT_ID_SCHEMA: Final = (
    "^[0-9]{8}T[0-9]{6}Z_[A-Za-z0-9]{1,64}_[A-Z]{2}_[0-9]{1,10}_n1_[A-Za-z0-9]{16}$"
)
KEY_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": KEY_PATTERN,
    "not": {"pattern": f"^{CONTENT_KEY_PREFIX}"},
    "description": f"1-128 characters of [A-Za-z0-9._:-], not starting with "
    f"{CONTENT_KEY_PREFIX!r} (the collector's keys for submissions without one)",
}


class Measurement(BaseModel):
    """A measurement in OONI's format (df-000); only the envelope is checked, the rest is kept.

    Lenient where OONI's collector is: ``probe_asn`` and ``probe_cc`` may be missing (``AS0`` and
    ``ZZ``), ``probe_cc`` may be any value (not two letters: ``ZZ``), ``probe_ip`` any value
    (replaced by ``127.0.0.1``), ``test_keys`` ``null`` (a test that failed before it had keys).
    Not in the schema: at most 4 MiB and 64 levels of nesting."""

    model_config = ConfigDict(extra="allow")
    probe_asn: str = Field(
        default="AS0", pattern=_ASN_SCHEMA, examples=["AS30722"], description="AS0 when missing"
    )
    probe_cc: Any = Field(
        default="ZZ", description="two ASCII letters (upper-cased); anything else is stored as ZZ"
    )
    test_name: str
    measurement_start_time: str = Field(
        pattern=_TIME_SCHEMA,
        examples=["2026-11-24 10:32:25"],
        description="UTC, YYYY-MM-DD HH:MM:SS, a real calendar date and time",
    )
    test_keys: dict[str, Any] | None
    software_name: str
    software_version: str
    probe_ip: Any = Field(default=None, description="any value; stored as 127.0.0.1")


class OpenReportRequest(BaseModel):
    """What a report id is made of; other fields are ignored."""

    probe_asn: str = Field(pattern=_ASN_SCHEMA)
    probe_cc: Any = Field(description="two ASCII letters; anything else is ZZ in the report id")
    software_name: str
    software_version: str
    test_name: str
    test_version: str | None = None
    data_format_version: str | None = None
    format: Literal["json"] = "json"


class OpenReportResponse(BaseModel):
    report_id: str = Field(
        pattern=REPORT_ID_SCHEMA, examples=["20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPtQ"]
    )
    backend_version: str
    supported_formats: list[Literal["json"]]


class AddMeasurementRequest(BaseModel):
    format: Literal["json"] = "json"
    content: Measurement


class AddMeasurementResponse(BaseModel):
    measurement_uid: str
    status: Literal["stored", "duplicate"]


class BatchItemRequest(BaseModel):
    """The form of a batch item. Each item is judged on its own: one that is not of this form is
    refused in its result (``status: rejected``), never the whole request."""

    idempotency_key: (
        Annotated[
            str,
            WithJsonSchema(KEY_SCHEMA),
        ]
        | None
    ) = Field(default=None, description="absent: sha256:<hex> of the canonical JSON")
    measurement: Measurement


class BatchRequest(BaseModel):
    """Up to 500 items (more: 413 ``batch_too_large``, nothing stored). The items are any values:
    each is judged on its own against ``BatchItemRequest`` and answered in its result, so a bad
    item never refuses the others (as the document's ``anyOf`` says: the form, or anything)."""

    measurements: list[BatchItemRequest | Any] = Field(max_length=MAX_BATCH_ITEMS)


class BatchStored(BaseModel):
    idempotency_key: str
    status: Literal["stored", "duplicate"]
    measurement_uid: str


class BatchRejected(BaseModel):
    idempotency_key: str | None
    status: Literal["rejected"]
    error: ReasonCode
    detail: str


class BatchResponse(BaseModel):
    results: list[BatchStored | BatchRejected]


class Summary(BaseModel):
    measurement_uid: str
    report_id: str | None
    measurement_start_time: str
    received_at: str
    probe_cc: str
    probe_asn: str
    test_name: str
    software_name: str
    input: Any = None
    service: str | None
    functions: list[str]


class MeasurementsPage(BaseModel):
    results: list[Summary]
    next_cursor: str | None


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str

"""Validation and normalisation of what probes submit (docs/design/002-collector.md).

Everything here is pure: bytes (and the submitting client's address, and ``now`` where a time is
needed) in, a clean value or a :class:`Rejection` out. No I/O, no clock, no framework. The HTTP layer
(``app.py``) reads the body, calls one of the ``parse_*`` functions and hands the result to the store.

Rules, in the order they are applied to a body:

1. **Size** — at most 4 MiB for one measurement, 32 MiB for a batch (``body_too_large``).
2. **Encoding** — UTF-8 only; a NUL byte (UTF-16 without a byte-order mark) or an invalid UTF-8
   sequence (Latin-1, UTF-16 with one) is ``bad_encoding``.
3. **Client address** — the submitter's own address is replaced by ``127.0.0.1`` wherever it appears,
   on the raw bytes before parsing: an IP address cannot occur outside a string in valid JSON, and
   it never needs escaping inside one, so a byte-level substitution with boundary checks is exact and
   costs one ``memchr``-speed search when the address is absent (the usual case).
4. **Parse** with orjson. orjson refuses documents nested deeper than 1,024 levels while parsing
   (``depth limit exceeded``): a 100,000-level body never becomes 100,000 Python objects. That
   error is reported as ``too_deep``; any other parse failure is ``malformed_json``.
5. **Depth** — the doc's limit, 64 levels counted from the measurement object (level 1), is then
   checked by a walk over the containers of the (at most 1,024-deep) parsed value that stops at
   the limit. It costs about as much as the parse (~50 µs for 18 KB); the byte-level scans tried
   instead (strings stripped by regex or split, brackets counted by translate) cost more.
6. **Envelope** — only the top-level keys are examined; ``test_keys`` stays opaque (it must be an
   object or null, nothing more); a missing ``probe_asn``/``probe_cc`` is ``AS0``/``ZZ``. ``probe_asn`` is ``AS<n>``, ``measurement_start_time`` is
   ``YYYY-MM-DD HH:MM:SS`` (a real calendar time), a ``probe_cc`` that is not two ASCII letters
   becomes ``ZZ`` (letters are upper-cased), a present ``probe_ip`` becomes ``127.0.0.1``.

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
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

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
    "bad_report_id": 400,
    "unsupported_format": 400,
    "bad_idempotency_key": 400,
    "batch_too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "storage_unavailable": 503,
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


def parse_json(raw: bytes, limit: int, client: str | None = None) -> Any:
    """Size, encoding, client-address scrub, parse; the JSON value or a :class:`Rejection`."""
    if len(raw) > limit:
        raise Rejection("body_too_large", f"the body is {len(raw)} bytes, at most {limit} allowed")
    if raw[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark: harmless, dropped (RFC 8259 §8.1)
        raw = raw[3:]
    if client is not None:
        raw = scrub_address(raw, client)
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


def scrub_address(raw: bytes, client: str) -> bytes:
    """``raw`` with every occurrence of the address ``client`` replaced by ``127.0.0.1``."""
    compiled = _address_pattern(client)
    if compiled is None:
        return raw
    needle, pattern = compiled
    if needle and needle not in raw:  # the usual case: one fast search, no copy
        return raw
    return pattern.sub(SCRUBBED_IP.encode(), raw)


# --- the measurement envelope --------------------------------------------------------------------

_ASN = re.compile(r"AS(0|[1-9][0-9]{0,9})")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_LETTERS = frozenset(string.ascii_letters)


def normalise_cc(value: Any) -> str:
    """Two ASCII letters, upper-cased; anything else is ``ZZ`` (as OONI's collector does)."""
    if type(value) is str and len(value) == 2 and value[0] in _LETTERS and value[1] in _LETTERS:
        return value.upper()
    return "ZZ"


def check_asn(value: Any) -> str:
    if type(value) is not str:
        raise Rejection("bad_type", f"probe_asn must be a string, not {_kind(value)}")
    match = _ASN.fullmatch(value)
    if match is None or int(match.group(1)) > 0xFFFFFFFF:
        raise Rejection("bad_asn", "probe_asn must be AS<n> with n an AS number (AS0 if unknown)")
    return value


def check_time(value: Any, key: str = "measurement_start_time") -> str:
    if type(value) is not str:
        raise Rejection("bad_type", f"{key} must be a string, not {_kind(value)}")
    if _TIME.fullmatch(value) is None:
        raise Rejection("bad_time", f"{key} must be YYYY-MM-DD HH:MM:SS (UTC)")
    try:  # the constructor checks the calendar, ~10x cheaper than strptime
        dt.datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
        )
    except ValueError:
        raise Rejection("bad_time", f"{key} is not a real date and time") from None
    return value


def normalise_measurement(value: Any, depth_limit: int = MAX_DEPTH) -> dict[str, Any]:
    """The envelope checks of the doc on a parsed value; returns the same dict, normalised."""
    if type(value) is not dict:
        raise Rejection("not_an_object", f"a measurement must be a JSON object, not {_kind(value)}")
    for key in REQUIRED_KEYS:
        if key not in value:
            raise Rejection("missing_key", f"the measurement has no {key!r}")
    for key, unknown in DEFAULTED_KEYS.items():
        value.setdefault(key, unknown)
    check_depth(value, depth_limit)
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
    return value


def parse_measurement(raw: bytes, client: str | None = None) -> dict[str, Any]:
    """A bare measurement body (at most 4 MiB)."""
    return normalise_measurement(parse_json(raw, MAX_MEASUREMENT_BYTES, client))


def parse_report_content(raw: bytes, client: str | None = None) -> dict[str, Any]:
    """``POST /report/{id}``: ``{"format": "json", "content": <measurement>}``."""
    body = parse_json(raw, MAX_MEASUREMENT_BYTES, client)
    if type(body) is not dict:
        raise Rejection("not_an_object", f"the body must be a JSON object, not {_kind(body)}")
    check_format(body.get("format", "json"))
    if "content" not in body:
        raise Rejection("missing_key", "the body has no 'content'")
    return normalise_measurement(body["content"])


def check_format(value: Any) -> None:
    if value != "json":
        raise Rejection("unsupported_format", 'the only supported format is "json"')


# --- batches -------------------------------------------------------------------------------------


def parse_batch(raw: bytes, client: str | None = None) -> list[BatchItem | BatchRefusal]:
    """``POST /api/v1/submit``: each item accepted or refused on its own.

    The body as a whole can still be refused (too large, not JSON, not ``{"measurements": [...]}``,
    more than 500 items): then nothing of it is stored.
    """
    body = parse_json(raw, MAX_BATCH_BYTES, client)
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
    return [_batch_item(item, sized) for item in items]


def _batch_item(item: Any, sized: bool) -> BatchItem | BatchRefusal:
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
        clean = normalise_measurement(measurement)
        return BatchItem(key if key is not None else content_key(clean), clean)
    except Rejection as rejection:
        return BatchRefusal(key if key is not None and len(key) <= 256 else None, rejection)


# --- keys and report ids -------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_idempotency_key(value: Any) -> str:
    if type(value) is not str or _KEY.fullmatch(value) is None:
        raise Rejection(
            "bad_idempotency_key", "an idempotency key is 1-128 characters of [A-Za-z0-9._:-]"
        )
    return value


def content_key(measurement: dict[str, Any]) -> str:
    """The key of a measurement sent without one (OONI probes): ``sha256:`` of its canonical JSON
    (keys sorted at every level, no whitespace, UTF-8), computed on the normalised measurement."""
    canonical = orjson.dumps(measurement, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


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

QUERY_TEXT_LIMIT: Final = 256


def query_text(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > QUERY_TEXT_LIMIT:
        raise Rejection("bad_query", f"{name} is longer than {QUERY_TEXT_LIMIT} characters")
    return value


def query_time(value: str | None, name: str) -> str | None:
    """ISO 8601 (any offset, converted to UTC) or ``YYYY-MM-DD[ HH:MM:SS]`` →
    ``YYYY-MM-DD HH:MM:SS``, the form ``measurement_start_time`` is compared in."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            moment = dt.datetime.strptime(text, "%Y-%m-%d")
        else:
            moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise Rejection(
            "bad_query", f"{name} must be ISO 8601 or YYYY-MM-DD[ HH:MM:SS], not {value[:40]!r}"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def query_asn(value: str | None) -> str | None:
    """``AS<n>`` or ``<n>`` → ``AS<n>``."""
    if value is None:
        return None
    text = value.strip().upper()
    try:
        return check_asn(text if text.startswith("AS") else "AS" + text)
    except Rejection:
        raise Rejection("bad_query", "probe_asn must be AS<n> or <n>") from None


def query_cc(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) != 2 or not value.isascii() or not value.isalpha():
        raise Rejection("bad_query", "probe_cc must be two letters")
    return value.upper()


# --- shapes for the OpenAPI document -------------------------------------------------------------
# The routes read raw bytes and validate with the functions above (fast, and with the doc's reason
# codes); these pydantic classes only describe the same shapes in /openapi.json.

ReasonCode = Literal[
    "body_too_large",
    "bad_encoding",
    "malformed_json",
    "too_deep",
    "not_an_object",
    "missing_key",
    "bad_type",
    "bad_asn",
    "bad_time",
    "bad_report_id",
    "unsupported_format",
    "bad_idempotency_key",
    "batch_too_large",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "storage_unavailable",
    "not_found",
    "bad_query",
]


class ErrorBody(BaseModel):
    """Every error: a stable reason code and human text."""

    error: ReasonCode
    detail: str


class Measurement(BaseModel):
    """A measurement in OONI's format (df-000); only the envelope is checked, the rest is kept."""

    model_config = ConfigDict(extra="allow")
    probe_asn: str = Field(pattern=r"^AS[0-9]+$", examples=["AS30722"])
    probe_cc: str = Field(description="two letters; anything else is stored as ZZ")
    test_name: str
    measurement_start_time: str = Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$",
        examples=["2026-11-24 10:32:25"],
    )
    test_keys: dict[str, Any]
    software_name: str
    software_version: str
    probe_ip: str | None = Field(default=None, description="stored as 127.0.0.1")


class OpenReportRequest(BaseModel):
    probe_asn: str = Field(pattern=r"^AS[0-9]+$")
    probe_cc: str
    software_name: str
    software_version: str
    test_name: str
    test_version: str | None = None
    data_format_version: str | None = None
    format: Literal["json"] = "json"


class OpenReportResponse(BaseModel):
    report_id: str = Field(examples=["20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPtQ"])
    backend_version: str
    supported_formats: list[Literal["json"]]


class AddMeasurementRequest(BaseModel):
    format: Literal["json"] = "json"
    content: Measurement


class AddMeasurementResponse(BaseModel):
    measurement_uid: str
    status: Literal["stored", "duplicate"]


class BatchItemRequest(BaseModel):
    idempotency_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="absent: sha256:<hex> of the measurement's canonical JSON",
    )
    measurement: Measurement


class BatchRequest(BaseModel):
    measurements: list[BatchItemRequest] = Field(max_length=MAX_BATCH_ITEMS)


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


class Verdict(BaseModel):
    service: str
    function: str
    verdict: str
    mechanism: str | None = None


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
    verdicts: list[Verdict]


class MeasurementsPage(BaseModel):
    results: list[Summary]
    next_cursor: str | None


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str

"""A worker's JSON reading of one measurement line (:func:`parse`), and the values it defers.

Most of a ``msgwatch_service`` measurement's bytes are its ``network_events`` (about half in the
lab: every read and write of every connection). The analysis makes no rows of them and the judge
reads them only for a target that timed out while the probe stalled, or for a call through the
helper. So a line of that test is read with its network events checked well-formed but left as
bytes (a :class:`Deferred`); they are parsed the first time something asks for them
(:func:`resolved`), and a measurement whose events are never asked for never builds them.

Rules:

- :func:`parse` gives the same value as ``orjson.loads`` of the whole line, except that
  ``test_keys["network_events"]`` may be a :class:`Deferred`, whose :meth:`Deferred.load` gives
  what ``orjson.loads`` gave there.
- The deferring reader (msgspec, typed) is tried only on a line of ASCII bytes (it does not check
  the UTF-8 of what it skips; orjson does) whose ``test_name`` is ``msgwatch_service``, and it
  accepts only a measurement whose keys and test keys are all ones the probe writes
  (:data:`MEASUREMENT_KEYS`, :data:`TEST_KEYS`). Anything else — another test, an unknown or
  repeated shape, malformed JSON, a nesting bomb — is read by orjson whole, as before, and its
  error is orjson's.
- Integers beyond 64 bits, which orjson refuses, are read by the standard library.
- Two differences are left, both in numbers no column takes:
  - a number beyond a double's range (``1e999``) inside the deferred events is skipped as
    well-formed, where orjson refuses the whole line; when the events are loaded it makes them
    unreadable, and :meth:`Deferred.load` gives None (no events);
  - an integer beyond 64 bits elsewhere is msgspec's ``int`` where orjson gives a ``float`` (or
    refuses the line, beyond a double's range). The transform's readers take neither; where the
    judge turns one into a float, the measurement's verdicts fail as ``judge_failed:OverflowError``
    (its observations stay).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import msgspec
import orjson

from msgwatch.measurement.model import Envelope, ServiceTestKeys

DEFERRED_KEY: Final = "network_events"
_SERVICE_TEST = b'"test_name":"msgwatch_service"'
MEASUREMENT_KEYS: Final = tuple(Envelope.__annotations__)
TEST_KEYS: Final = tuple(ServiceTestKeys.__annotations__)


class Deferred:
    """A JSON value left as its (well-formed) bytes; :meth:`load` parses it, then ``shape``."""

    __slots__ = ("raw", "shape")

    def __init__(self, raw: bytes, shape: Callable[[Any], Any] | None = None) -> None:
        self.raw = raw
        self.shape = shape

    def shaped(self, shape: Callable[[Any], Any]) -> Deferred:
        """The same bytes, ``shape`` applied to their value when loaded (after this one's)."""
        first = self.shape
        if first is None:
            return Deferred(self.raw, shape)
        return Deferred(self.raw, lambda value: shape(first(value)))

    def load(self) -> Any:
        """The value (None if the bytes do not parse: see the module's last rule)."""
        try:
            value = orjson.loads(self.raw)
        except orjson.JSONDecodeError:
            value = None
        return value if self.shape is None else self.shape(value)


def resolved(keys: dict[str, Any], name: str) -> Any:
    """``keys[name]`` (None when absent), loaded and kept in ``keys`` if it was deferred."""
    value = keys.get(name)
    if isinstance(value, Deferred):
        value = keys[name] = value.load()
    return value


def _struct(name: str, fields: tuple[str, ...], types: dict[str, Any]) -> Any:
    """A struct of ``fields`` (any JSON each unless ``types`` says), refusing unknown keys."""
    return msgspec.defstruct(
        name,
        [(f, types.get(f, Any), msgspec.UNSET) for f in fields],
        forbid_unknown_fields=True,
    )


_TestKeys = _struct("TestKeys", TEST_KEYS, {DEFERRED_KEY: msgspec.Raw})
_Measurement = _struct("Measurement", MEASUREMENT_KEYS, {"test_keys": _TestKeys})
_DECODER: Final = msgspec.json.Decoder(_Measurement)


def _present(struct: Any) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(struct).items() if v is not msgspec.UNSET}


def deferring(line: bytes) -> dict[str, Any] | None:
    """The measurement with its network events deferred, or None when this reader does not apply
    to the line (the module's rules; the caller reads it whole)."""
    if not line.isascii() or line.rfind(_SERVICE_TEST) < 0:
        return None
    try:
        decoded = _DECODER.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    measurement = _present(decoded)
    if measurement.get("test_name") != "msgwatch_service":
        return None  # the test name was in a string, or a key of another level
    keys = measurement.get("test_keys")
    if isinstance(keys, msgspec.Struct):
        measurement["test_keys"] = keys = _present(keys)
        raw = keys.get(DEFERRED_KEY)
        if isinstance(raw, msgspec.Raw):
            keys[DEFERRED_KEY] = Deferred(bytes(raw))
    return measurement


def parse(line: bytes) -> Any:
    """The line's JSON (``ValueError`` when it is not JSON), network events deferred where they
    can be (the module's rules)."""
    fast = deferring(line)
    if fast is not None:
        return fast
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "integer" not in str(exc).lower():
            raise
    try:  # integers beyond 64 bits: the standard library reads them (the archive may hold them)
        return json.loads(line)
    except RecursionError as exc:
        raise ValueError("recursion limit exceeded") from exc

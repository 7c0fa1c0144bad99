"""The one validator of measurements: ``validate(measurement) -> list[str]``.

Rules:

- It takes any JSON value and never raises; an empty list means the value is a valid
  measurement. At most :data:`MAX_PROBLEMS` problems are listed (the first ones), each at most
  a few hundred characters, and no value from the input is echoed longer than 40 characters: a
  hostile measurement cannot make the answer large.
- The model comes from :mod:`msgwatch.measurement.registry` by ``test_name``; the value is walked
  against the model's ``TypedDict`` s (:mod:`msgwatch.measurement.model`): types, literals, the
  ``Annotated`` checks, ``0 <= t0 <= t``. The walk follows the model, not the value, so its depth
  is the model's, whatever the input's nesting. Extra keys are allowed (:func:`extra_keys` lists
  them, for tests that want the writer to match the spec exactly).
- Required keys are required of a measurement whose ``test_version`` is one of the spec's
  ``complete_in`` (versions msgwatch wrote); any other measurement (an older probe, a newer one,
  one that does not say) is checked for the types of what it holds. OONI's lenient envelope
  is always checked.
- The test's rules across keys run only on a measurement of those versions, when the types are
  right.

Used by the collector for the test names of the registry (``msgwatch.collector.models``) and by
the tests for everything the probe writes (``tests/format/check.py``).
"""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, Literal, NotRequired, Required, TypeGuard, Union

from msgwatch.measurement import model
from msgwatch.measurement.registry import TestSpec, spec_for

MAX_PROBLEMS = 50
_SHOWN = 40


class _Full(Exception):
    """Enough problems found: the walk stops."""


class _Walk:
    """One validation: where the problems go, and which keys are required."""

    def __init__(
        self, spec: TestSpec | None, version: tuple[int, ...] | None, problems: list[str]
    ) -> None:
        self.spec, self.version, self.problems = spec, version, problems

    def add(self, problem: str) -> None:
        problem = problem[:300]
        if problem in self.problems:  # the two envelopes overlap
            return
        self.problems.append(problem)
        if len(self.problems) >= MAX_PROBLEMS:
            raise _Full

    def required(self, td: type, key: str) -> bool:
        if self.version is None:
            return False
        return self.spec is None or self.spec.requires(td.__name__, key, self.version)


def validate(measurement: object) -> list[str]:
    """Every way ``measurement`` departs from its test's format (empty when it conforms)."""
    problems: list[str] = []
    walk = _Walk(None, None, problems)
    try:
        if type(measurement) is not dict:
            walk.add(f"the measurement is {_kind(measurement)}, not an object")
            return problems
        spec = spec_for(measurement.get("test_name"))
        # OONI's envelope always, with what the collector requires.
        _checker(model.OoniEnvelope)(measurement, "", _Walk(None, (0,), problems))
        if spec is None:
            return problems
        strict = _Walk(spec, spec.complete(measurement.get("test_version")), problems)
        _checker(spec.envelope)(measurement, "", strict)
        keys = measurement.get("test_keys")
        if spec.keys is not None and type(keys) is dict:
            _checker(spec.keys)(keys, "test_keys", strict)
        if strict.version is not None and not problems:
            for rule in spec.rules:
                for problem in rule(measurement):
                    walk.add(problem)
    except _Full:
        pass
    except Exception as exc:  # a bug here must not become the caller's crash
        problems.append(f"validator error: {type(exc).__name__}")
    return problems


def check(value: object, hint: Any, where: str = "") -> list[str]:
    """The problems of ``value`` as one of the model's types (``list[model.VerdictRecord]``),
    every required key required; for what is not a whole measurement (the analysis's records)."""
    problems: list[str] = []
    with contextlib.suppress(_Full):
        _checker(hint)(value, where, _Walk(None, (0,), problems))
    return problems


def extra_keys(measurement: object) -> list[str]:
    """The keys of ``measurement`` its test's model does not name (``test_keys.x[].y``), sorted."""
    spec = spec_for(measurement.get("test_name")) if type(measurement) is dict else None
    if spec is None or type(measurement) is not dict:
        return []
    found: set[str] = set()
    _extra(measurement, spec.envelope, "", found)
    if spec.keys is not None and type(measurement.get("test_keys")) is dict:
        _extra(measurement["test_keys"], spec.keys, "test_keys.", found)
    return sorted(found)


# --- the walk ------------------------------------------------------------------------------------


Checker = Callable[[Any, str, "_Walk"], bool]
"""A compiled type: ``check(value, where, walk)`` reports into ``walk``; whether it conformed."""


@cache
def _hints(td: type) -> dict[str, Any]:
    return typing.get_type_hints(td, include_extras=True)


def _unwrap_required(hint: Any, required: bool) -> tuple[Any, bool]:
    """``(hint without Required/NotRequired, whether the key may be absent)``."""
    origin = typing.get_origin(hint)
    if origin is NotRequired:
        return typing.get_args(hint)[0], True
    if origin is Required:
        return typing.get_args(hint)[0], False
    return hint, not required


@cache
def _checker(hint: Any) -> Checker:
    """``hint`` compiled once into a function (the walk runs at the collector, per request)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda value, where, walk: True
    if typing.is_typeddict(hint):
        return _typed_dict_checker(hint)
    if origin is typing.Annotated:
        return _annotated_checker(hint)
    if origin in (Union, types.UnionType):
        return _union_checker(hint)
    outer = _outer(hint)
    name = ", ".join(map(repr, typing.get_args(hint))) if origin is Literal else _name(hint)
    inner: Checker | None = None
    if origin is list and typing.get_args(hint)[0] is not Any:
        inner = _checker(typing.get_args(hint)[0])
    if origin is dict and typing.get_args(hint)[1] is not Any:
        inner = _checker(typing.get_args(hint)[1])

    def check(value: Any, where: str, walk: _Walk) -> bool:
        if not outer(value):
            if origin is Literal:
                walk.add(f"{where}: {_show(value)} is not one of {name}")
            else:
                walk.add(f"{where}: {_kind(value)}, not {name}")
            return False
        if inner is not None and type(value) is list:
            for i, entry in enumerate(value):
                inner(entry, f"{where}[{i}]", walk)
        elif inner is not None and type(value) is dict:
            for key, entry in value.items():
                inner(entry, f"{where}.{str(key)[:_SHOWN]}", walk)
        return True

    return check


def _typed_dict_checker(td: type) -> Checker:
    fields = []
    for key, hint in _hints(td).items():
        bare, optional = _unwrap_required(hint, key in td.__required_keys__)  # type: ignore[attr-defined]
        fields.append((key, _checker(bare), optional))
    timed = "t" in _hints(td)

    def check(value: Any, where: str, walk: _Walk) -> bool:
        if type(value) is not dict:
            walk.add(f"{where}: {_kind(value)}, not an object")
            return False
        prefix = f"{where}." if where else ""
        for key, checker, optional in fields:
            if key in value:
                checker(value[key], prefix + key, walk)
            elif not optional and walk.required(td, key):
                walk.add(f"missing {prefix}{key}")
        t0, t = value.get("t0"), value.get("t")
        if timed and _number(t0) and _number(t) and not 0 <= t0 <= t:
            walk.add(f"{where}: times t0={t0!r} t={t!r} (0 <= t0 <= t)")
        return True

    return check


def _annotated_checker(hint: Any) -> Checker:
    bare, *extras = typing.get_args(hint)
    inner = _checker(bare)
    checks = [c for c in extras if isinstance(c, model.Check)]

    def check(value: Any, where: str, walk: _Walk) -> bool:
        if not inner(value, where, walk):
            return False
        for rule in checks:
            if value is not None and not rule.accepts(value):
                walk.add(f"{where}: {_show(value)} is not {rule.says}")
                return False
        return True

    return check


def _union_checker(hint: Any) -> Checker:
    options = [(_outer(option), _checker(option)) for option in typing.get_args(hint)]
    name = _name(hint)

    def check(value: Any, where: str, walk: _Walk) -> bool:
        for outer, checker in options:
            if outer(value):
                return checker(value, where, walk)
        walk.add(f"{where}: {_kind(value)}, not {name}")
        return False

    return check


@cache
def _outer(hint: Any) -> Callable[[Any], bool]:
    """Whether a value has the outer type of ``hint`` (a list for ``list[int]``, ...)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda value: True
    if hint is None or hint is type(None):
        return lambda value: value is None
    if origin is typing.Annotated:
        return _outer(typing.get_args(hint)[0])
    if origin in (Union, types.UnionType):
        parts = [_outer(option) for option in typing.get_args(hint)]
        return lambda value: any(part(value) for part in parts)
    if origin is Literal:
        allowed = {(type(v), v) for v in typing.get_args(hint)}
        return lambda value: type(value) in (str, int, bool) and (type(value), value) in allowed
    if origin is list or hint is list:
        return lambda value: type(value) is list
    if origin is dict or hint is dict or typing.is_typeddict(hint):
        return lambda value: type(value) is dict
    if hint is float:
        return _number
    return lambda value: type(value) is hint


def _number(value: Any) -> TypeGuard[int | float]:
    return type(value) is int or type(value) is float


def _extra(value: dict[str, Any], td: type, where: str, found: set[str]) -> None:
    hints = _hints(td)
    for key, entry in value.items():
        if key not in hints:
            found.add(f"{where}{key}")
            continue
        for inner in _typed_dicts(_unwrap_required(hints[key], True)[0]):
            entries = entry if type(entry) is list else [entry]
            suffix = "[]." if type(entry) is list else "."
            for item in entries:
                if type(item) is dict:
                    _extra(item, inner, f"{where}{key}{suffix}", found)


def _typed_dicts(hint: Any) -> Iterator[type]:
    """The TypedDicts inside ``hint`` (``list[Target] | None`` → Target)."""
    if typing.is_typeddict(hint):
        yield hint
    for arg in typing.get_args(hint):
        if not isinstance(arg, model.Check | str):
            yield from _typed_dicts(arg)


def _name(hint: Any) -> str:
    if hint is type(None) or hint is None:
        return "null"
    if typing.is_typeddict(hint) or typing.get_origin(hint) is dict or hint is dict:
        return "an object"
    if typing.get_origin(hint) is list or hint is list:
        return "a list"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_name(h) for h in typing.get_args(hint))
    if origin is typing.Annotated:
        return _name(typing.get_args(hint)[0])
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        hint, str(hint)
    )


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."

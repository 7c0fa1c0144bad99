"""Which test names msgwatch knows, and the model and checks of each (as ooni/data's
``NETTEST_MODELS``).

Rules:

- One :class:`TestSpec` per ``test_name``, in :data:`SPECS`. msgwatch's own tests
  (``msgwatch_*``) have the strict envelope, a ``test_keys`` model, the current ``test_version``
  and the versions whose keys are all required (0.1.0 grew keys without moving: not one of
  them); OONI's tests that msgwatch reads have OONI's lenient envelope and a model of the keys
  msgwatch reads (the collector checks msgwatch's tests only: OONI's are OONI's to define).
- Adding a test (``msgwatch_tor``, ``msgwatch_vpn``, ...) is a model in
  :mod:`msgwatch.measurement.model`, its spec in ``docs/spec/`` and an entry here.
- Adding a key to a test: the key in the model and the spec, the version moved (and added to
  ``complete_in``), and the key in the spec's ``added`` with that version (measurements of older
  versions lack it).
- A ``test_name`` without an entry is checked against OONI's envelope only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from msgwatch.measurement import circumvention, model, vocab
from msgwatch.measurement.envelope import TEST_NAME, TEST_VERSION

Rule = Callable[[dict[str, Any]], Iterable[str]]
"""A check across keys, run on a measurement whose types are all right; yields problems."""


def version_tuple(text: object) -> tuple[int, ...] | None:
    """``"0.2.0"`` → ``(0, 2, 0)``; None for anything that is not dotted numbers."""
    if type(text) is not str or not 0 < len(text) <= 32:
        return None
    parts = text.split(".")
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class TestSpec:
    """One test name: its models, its version and its checks."""

    __test__ = False  # not a pytest test class

    test_name: str
    envelope: type
    keys: type | None
    """The ``test_keys`` model (None: opaque)."""
    test_version: str | None = None
    """The version msgwatch writes (None: not msgwatch's test)."""
    complete_in: tuple[str, ...] = ()
    """The versions whose measurements must hold every required key: the ones msgwatch wrote
    whose keys the spec lists completely (any other version, older, newer or foreign, is checked
    for the types of what it holds)."""
    added: Mapping[str, str] = field(default_factory=dict)
    """``"Model.key"`` → the version that added it: not required of older measurements."""
    rules: tuple[Rule, ...] = ()

    def complete(self, version: object) -> tuple[int, ...] | None:
        """The measurement's version when it must hold every required key, else None."""
        return version_tuple(version) if version in self.complete_in else None

    def requires(self, model_name: str, key: str, version: tuple[int, ...]) -> bool:
        """Whether a measurement of ``version`` must hold ``key`` of ``model_name``."""
        since = version_tuple(self.added.get(f"{model_name}.{key}"))
        return since is None or since <= version


# --- msgwatch_service's rules across keys ------------------------------------------------------------

_MECHANISM = re.compile(r"[a-z_]+(\.[a-z_]+)*")


def same_service(m: dict[str, Any]) -> Iterable[str]:
    """``input`` is ``test_keys.msgwatch_service``."""
    if m.get("input") != m["test_keys"].get(vocab.SERVICE, m.get("input")):
        yield f"input differs from test_keys.{vocab.SERVICE}"


def verdicts_agree(m: dict[str, Any]) -> Iterable[str]:
    """Old measurements' own verdicts: an ``ok`` has no mechanism, a mechanism is a dotted name,
    the function is one the measurement measured."""
    keys = m["test_keys"]
    functions = {f.get("function") for f in keys.get(vocab.FUNCTIONS_KEY) or []}
    for i, v in enumerate(keys.get(vocab.VERDICTS_KEY) or []):
        where = f"test_keys.{vocab.VERDICTS_KEY}[{i}]"
        mechanism = v.get("mechanism")
        if v.get("verdict") == vocab.OK and mechanism is not None:
            yield f"{where}: an ok verdict has a mechanism"
        if type(mechanism) is str and _MECHANISM.fullmatch(mechanism) is None:
            yield f"{where}: mechanism {mechanism[:40]!r} is not a dotted name"
        if vocab.FUNCTIONS_KEY in keys and v.get("function") not in functions:
            yield f"{where}: function {str(v.get('function'))[:40]!r} not in {vocab.FUNCTIONS_KEY}"


SPECS: dict[str, TestSpec] = {}


def register(spec: TestSpec) -> TestSpec:
    """Add ``spec`` to :data:`SPECS` (one entry per test name)."""
    if spec.test_name in SPECS:
        raise ValueError(f"{spec.test_name} is registered twice")
    SPECS[spec.test_name] = spec
    return spec


def spec_for(test_name: object) -> TestSpec | None:
    """The entry for ``test_name`` (any JSON value), or None."""
    return SPECS.get(test_name) if type(test_name) is str else None


register(
    TestSpec(
        TEST_NAME,
        model.Envelope,
        model.ServiceTestKeys,
        test_version=TEST_VERSION,
        complete_in=("0.2.0", "0.3.0", "0.3.1", TEST_VERSION),
        rules=(same_service, verdicts_agree),
    )
)


# --- msgwatch_circumvention's rules across keys (docs/spec/ts-msgwatch-circumvention.md) ---------


def same_entry(m: dict[str, Any]) -> Iterable[str]:
    """``input`` is ``test_keys.entry.name``; a private entry's address is scrubbed."""
    entry = m["test_keys"]["entry"]
    if m.get("input") != entry["name"]:
        yield "input differs from test_keys.entry.name"
    if entry["private"] and (entry["address"] != "[scrubbed]" or entry["port"] is not None):
        yield "test_keys.entry: a private entry's address and port are not scrubbed"


def stages_agree(m: dict[str, Any]) -> Iterable[str]:
    """``failed_stage``/``failure`` are the first failed stage's; ``success`` has none."""
    keys = m["test_keys"]
    first = next((s for s in keys["stages"] if s["failure"] is not None), None)
    if (first or {}).get("stage") != keys["failed_stage"]:
        yield "test_keys.failed_stage is not the first failed stage"
    if (first or {}).get("failure") != keys["failure"]:
        yield "test_keys.failure is not the first failed stage's failure"
    if keys["success"] and first is not None:
        yield "test_keys.success with a failed stage"


register(
    TestSpec(
        circumvention.TEST_NAME,
        model.Envelope,
        circumvention.CircumventionTestKeys,
        test_version=circumvention.TEST_VERSION,
        complete_in=(circumvention.TEST_VERSION,),
        rules=(same_entry, stages_agree),
    )
)
for _name, _keys in (
    ("whatsapp", model.WhatsappKeys),
    ("telegram", model.TelegramKeys),
    ("signal", model.SignalKeys),
    ("facebook_messenger", model.FacebookMessengerKeys),
    ("web_connectivity", model.WebConnectivityKeys),
):
    register(TestSpec(_name, model.OoniEnvelope, _keys))

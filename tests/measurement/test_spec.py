"""The model and the written spec say the same thing, and the version moves with the keys.

docs/spec/ts-msgwatch-service.md is the format's definition (STYLE habit 8): every key of the
model is named in the spec's section for it, every msgwatch key the spec lists is in the model,
the extensions and the version agree, and a change of the model's keys without a new
``TEST_VERSION`` (and its entry under "Changes") fails here.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from msgwatch.measurement import model, vocab
from msgwatch.measurement.envelope import EXTENSIONS, TEST_VERSION

SPEC = (
    Path(__file__).resolve().parents[2] / "docs" / "spec" / "ts-msgwatch-service.md"
).read_text()

MODEL_AT_VERSION = {
    "0.3.0": "847f87c2",
    "0.3.1": "d3e6cdca",
    "0.3.2": "9d9cecd3",
}
"""The fingerprint of the model's keys for each version. A failure here means the keys changed:
write the change in the spec first (its "Changes"), move ``TEST_VERSION``, and add the new
version's fingerprint (the failure message gives it)."""


def _section(start: str, *ends: str) -> str:
    at = SPEC.index(start)
    stops = [SPEC.find(end, at + len(start)) for end in ends]
    return SPEC[at : min(s for s in stops if s != -1)]


def _names(text: str) -> set[str]:
    """Every key-like name the text quotes (`name` or "name")."""
    return set(re.findall(r'[`"]([a-z_][a-z0-9_]*)[`"]', text))


def _fields(td: Any) -> dict[str, Any]:
    """The keys of a TypedDict, with the TypedDicts nested in each."""
    return typing.get_type_hints(td)


def _nested(hint: Any) -> list[Any]:
    if typing.is_typeddict(hint):
        return [hint]
    return [t for arg in typing.get_args(hint) for t in _nested(arg)]


def _all_keys(td: Any) -> set[str]:
    out: set[str] = set()
    for key, hint in _fields(td).items():
        out.add(key)
        for inner in _nested(hint):
            if inner is not model.Base64:
                out |= _all_keys(inner)
    return out


def _msgwatch_bullets() -> dict[str, str]:
    """Each ``- `msgwatch_x``` bullet of the spec's "msgwatch keys", with its text."""
    part = _section("### msgwatch keys", "## Verdicts")
    starts = [m.start() for m in re.finditer(r"^- `msgwatch_", part, re.MULTILINE)]
    return {
        re.match(r"- `(\w+)`", part[a:]).group(1): part[a:b]  # type: ignore[union-attr]
        for a, b in zip(starts, [*starts[1:], len(part)], strict=True)
    }


SERVICE_KEYS = _fields(model.ServiceTestKeys)
OWN = {
    k: v for k, v in SERVICE_KEYS.items() if k.startswith("msgwatch_") and k != vocab.VERDICTS_KEY
}


def test_the_spec_lists_every_msgwatch_key_of_the_model_and_no_other() -> None:
    assert set(_msgwatch_bullets()) == set(OWN)


@pytest.mark.parametrize("key", sorted(OWN))
def test_every_field_is_named_in_its_section(key: str) -> None:
    section = _msgwatch_bullets()[key]
    missing = {
        name for td in _nested(OWN[key]) for name in _all_keys(td) if name not in _names(section)
    }
    assert not missing, f"{key}: the spec does not name {sorted(missing)}"


def test_verdict_records_are_described() -> None:
    section = _section("## Verdicts", "## Failure strings")
    assert _all_keys(model.VerdictRecord) <= _names(section)
    assert set(vocab.VERDICTS) <= _names(section)


def test_the_envelope_table_names_every_key_and_the_version() -> None:
    table = _section("## Envelope", "## test_keys")
    assert set(_fields(model.Envelope)) <= _names(table)
    assert f'| `test_version` | `"{TEST_VERSION}"` |' in table
    shown = re.search(r"\| `extensions` \| `(\{.*?\})` \|", table)
    assert shown is not None and json.loads(shown.group(1)) == EXTENSIONS


def test_the_version_is_the_spec_status_and_has_its_changes() -> None:
    assert SPEC.startswith("# msgwatch_service")
    assert f"Status: version {TEST_VERSION} (test_version)" in SPEC
    assert f"- **{TEST_VERSION}** (" in SPEC[SPEC.index("## Changes") :]


def _fingerprint() -> str:
    tree = {
        name: sorted(_all_keys(td))
        for name, td in vars(model).items()
        if typing.is_typeddict(td) and not name.startswith("_")
    }
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:8]


def test_the_model_keys_have_not_changed_without_a_new_version() -> None:
    assert MODEL_AT_VERSION.get(TEST_VERSION) == _fingerprint(), (
        f"the model's keys changed (fingerprint {_fingerprint()}): describe the change in the spec's "
        f"Changes, move TEST_VERSION and record the fingerprint in MODEL_AT_VERSION"
    )

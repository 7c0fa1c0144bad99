"""msgwatch.measurement.registry: test names to models; adding a test is an entry and a model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypedDict

import pytest

from msgwatch.measurement import model, registry
from msgwatch.measurement.envelope import TEST_NAME, TEST_VERSION
from msgwatch.measurement.validate import validate
from tests.measurement.samples import current


def test_msgwatch_and_the_ooni_tests_it_reads_are_registered() -> None:
    own = registry.spec_for(TEST_NAME)
    assert own is not None and own.test_version == TEST_VERSION
    assert TEST_VERSION in own.complete_in
    for name in ("whatsapp", "telegram", "signal", "facebook_messenger", "web_connectivity"):
        spec = registry.spec_for(name)
        assert (
            spec is not None and spec.test_version is None and spec.envelope is model.OoniEnvelope
        )


@pytest.mark.parametrize("name", [None, 3, ["msgwatch_service"], {"a": 1}, "nope"])
def test_spec_for_any_json_value(name: Any) -> None:
    assert registry.spec_for(name) is None


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.3.0", (0, 3, 0)), ("1", (1,)), ("", None), ("0.x", None), (None, None), ("１.2", None)],
)
def test_version_tuple(text: object, parsed: tuple[int, ...] | None) -> None:
    assert registry.version_tuple(text) == parsed


class _TorKeys(TypedDict):
    msgwatch_bridges: list[str]


@pytest.fixture
def tor() -> Iterator[registry.TestSpec]:
    spec = registry.register(
        registry.TestSpec(
            "msgwatch_tor_example",
            model.Envelope,
            _TorKeys,
            test_version="0.1.0",
            complete_in=("0.1.0",),
        )
    )
    yield spec
    del registry.SPECS[spec.test_name]


def test_a_new_test_is_an_entry_and_a_model(tor: registry.TestSpec) -> None:
    m = dict(current(), test_name=tor.test_name, test_version="0.1.0",
             test_keys={"msgwatch_bridges": ["a"]})  # fmt: skip
    assert validate(m) == []
    m["test_keys"] = {"msgwatch_bridges": "a"}
    assert validate(m) == ["test_keys.msgwatch_bridges: a string, not a list"]
    m["test_keys"] = {}
    assert validate(m) == ["missing test_keys.msgwatch_bridges"]
    with pytest.raises(ValueError, match="twice"):
        registry.register(tor)


def test_a_key_added_in_a_later_version_is_not_required_of_older_ones() -> None:
    spec = registry.TestSpec("x", model.Envelope, _TorKeys, test_version="0.2.0",
                             complete_in=("0.1.0", "0.2.0"),
                             added={"_TorKeys.msgwatch_bridges": "0.2.0"})  # fmt: skip
    assert not spec.requires("_TorKeys", "msgwatch_bridges", (0, 1, 0))
    assert spec.requires("_TorKeys", "msgwatch_bridges", (0, 2, 0))
    assert spec.requires("_TorKeys", "other", (0, 1, 0))

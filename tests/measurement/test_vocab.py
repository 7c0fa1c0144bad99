"""msgwatch.measurement.vocab: one vocabulary, and the places that still spell it agree with it."""

from __future__ import annotations

import typing

import pytest

from msgwatch import failures as F
from msgwatch.analysis.verdicts import rules
from msgwatch.catalogue import schema
from msgwatch.measurement import model, vocab
from msgwatch.wire import mtproto, whatsapp


def test_literals_and_tuples_agree() -> None:
    assert typing.get_args(vocab.Verdict) == vocab.VERDICTS
    assert typing.get_args(vocab.Function) == vocab.FUNCTIONS
    assert typing.get_args(vocab.Role) == vocab.ROLES
    assert set(vocab.SEVERITY) == set(vocab.VERDICTS)
    assert sorted(vocab.VERDICTS, key=vocab.SEVERITY.__getitem__)[-1] == vocab.BLOCKED


def test_the_models_test_keys_are_the_vocabularys_names() -> None:
    names = {v for k, v in vars(vocab).items() if k.isupper() and isinstance(v, str)}
    keys = set(typing.get_type_hints(model.ServiceTestKeys))
    assert keys <= names
    assert set(vocab.STANDARD_KEYS) <= keys


def test_the_catalogue_and_the_rules_use_the_vocabulary() -> None:
    assert schema.FUNCTIONS is vocab.FUNCTIONS
    assert set(typing.get_args(rules.Rule.model_fields["verdict"].annotation)) == set(
        vocab.VERDICTS
    )


def test_every_failure_constant_is_in_the_vocabulary() -> None:
    """Every failure string defined in failures.py (but the collector client's, which never go
    into a measurement) and in wire/ is one the validator accepts."""
    client_only = {F.RESPONSE_TOO_LARGE, F.DNS_LOOKUP_ERROR}
    defined = {
        value
        for module in (F, mtproto, whatsapp)
        for name, value in vars(module).items()
        if name.isupper()
        and isinstance(value, str)
        and not name.endswith("PREFIX")
        and "_" in value
        and value not in client_only
        and value.islower()
    }
    assert defined - vocab.FAILURES == set()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("connection_reset", True), ("unknown_failure", True), ("unknown_failure x y", True),
        ("unknown_failurex", False), ("dns_server_failure_notimp", True),
        ("dns_server_failure_", False), ("dns_server_failure_no timp", False),
        ("helper_status_404", True), ("helper_status_", False), ("response_too_large", False),
        ("", False), (None, False), (3, False), (["connection_reset"], False),
    ],
)  # fmt: skip
def test_is_failure(value: object, ok: bool) -> None:
    assert vocab.is_failure(value) is ok


def test_failure_builders_make_vocabulary_strings() -> None:
    assert vocab.is_failure(F.helper_status(503))
    assert vocab.is_failure(F.dns_server_failure("NOTIMP"))
    assert vocab.is_failure(F.unknown("boom at 203.0.113.9"))

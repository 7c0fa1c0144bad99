"""The rule types by name, and :func:`build_rule`: a scenario file's table → a validated rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from msgwatch.lab.censor.addresses import (
    Blackhole,
    DropCallSignature,
    DropStun,
    DropUdp,
    RandomDrop,
    RejectTcp,
    TcpSignature,
)
from msgwatch.lab.censor.base import Rule
from msgwatch.lab.censor.circumvention import (
    CutAfterBytes,
    FullyEncrypted,
    OpenvpnFingerprint,
    WireguardFingerprint,
)
from msgwatch.lab.censor.dns import DnsForge, DnsInject, DnsNxdomain
from msgwatch.lab.censor.keywords import DropOnKeyword, HttpRedirectBlockpage, ResetOnKeyword
from msgwatch.lab.censor.rates import Police, Shape

RULE_TYPES: dict[str, type[Rule]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        DnsNxdomain, DnsForge, DnsInject,
        Blackhole, RejectTcp, ResetOnKeyword, DropOnKeyword, HttpRedirectBlockpage,
        DropUdp, DropStun, DropCallSignature, TcpSignature,
        Police, Shape, RandomDrop,
        OpenvpnFingerprint, WireguardFingerprint, FullyEncrypted, CutAfterBytes,
    )
}  # fmt: skip
"""Every rule type, by the ``type`` a scenario file names it with."""


def build_rule(table: Mapping[str, Any]) -> Rule:
    """A rule from a scenario file's table; ValueError with a readable message when it is wrong."""
    if not isinstance(table, Mapping):
        raise ValueError(f"a censor rule is a table with a `type`, not {type(table).__name__}")
    kind = table.get("type")
    if kind not in RULE_TYPES:
        known = ", ".join(RULE_TYPES)
        raise ValueError(f"unknown censor rule type {kind!r}; known types: {known}")
    try:
        return RULE_TYPES[kind].model_validate(dict(table))
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ValueError(f"censor rule {kind}: {problems}") from None


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where}: {message}" if where else message

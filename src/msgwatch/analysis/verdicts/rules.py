"""Verdict rules and block-page fingerprints, loaded from data files.

The rules (``rules.toml``) map the facts of one endpoint's outcome to a verdict and a mechanism;
the first matching rule wins, and its stable ``id`` travels with the verdict so that it can be
explained and recomputed when the rules improve. Block-page fingerprints (``blockpages.toml``) are
patterns over a response body, a header or a status code. Matching them is :mod:`.matching`'s
(compiled; these models stay plain Python classes).

A verdict is one of the format's (:data:`msgwatch.measurement.vocab.Verdict`); ``not_measured``
says the run did not measure it (the fence refused the destination, or the chain got no time): a
fact about the run's configuration or load, never about the network.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from msgwatch.measurement.vocab import Verdict


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_.-]+$")
    step: str | None = None
    failures: list[str] | None = None
    dns_forged: bool | None = None
    verified: bool | None = None
    blockpage: bool | None = None
    control: Literal["ok", "failed", "none"] | None = None
    throttled: bool | None = None
    verdict: Verdict
    mechanism: str | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    explain: str


class Fingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    body: list[str] = []
    header: dict[str, str] = {}
    status: int | None = None
    note: str = ""


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules_version: str
    rule: list[Rule] = Field(min_length=1)
    combined: list[Rule] = []
    """Rules the judge applies to attempts and pools (by id), not matched against facts."""

    def combined_rule(self, rule_id: str) -> Rule:
        return next(r for r in self.combined if r.id == rule_id)


class FingerprintSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    fingerprint: list[Fingerprint]


def _read(name: str) -> str:
    return (resources.files("msgwatch.analysis.verdicts") / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_rules() -> RuleSet:
    return RuleSet.model_validate(tomllib.loads(_read("rules.toml")))


RULES_VERSION: Final = load_rules().rules_version
"""The version of the rules (``rules.toml``; ``calls.toml`` carries the same one): every verdict
carries it as ``rules_version``, so a stored verdict says which rules made it."""


@lru_cache(maxsize=1)
def load_fingerprints() -> FingerprintSet:
    return FingerprintSet.model_validate(tomllib.loads(_read("blockpages.toml")))

"""The circumvention judge's rules (``circumvention.toml``, loaded and checked) and its readers of
hostile values: every value read with its type checked, lists cut at :data:`MAX_ITEMS`.

Shared by :mod:`msgwatch.analysis.verdicts.circumvention` (the tunnel row) and
:mod:`msgwatch.analysis.verdicts.circumvention_through` (what went through the tunnel).
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

Record = dict[str, Any]
MAX_ITEMS: Final = 256


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    verdict: Literal["ok", "blocked", "inconclusive", "degraded", "not_measured"]
    mechanism: str | None = None
    confidence: float
    explain: str


class Local(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: list[str]


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules_version: str
    overload_share: float
    overload_min: float
    slow_progress_age: float
    replay_pass: float
    calls_lost_max: float
    calls_back_min: float
    kinds: dict[str, str]
    prefix_kinds: dict[str, str]
    local: Local
    rule: list[Rule]

    def get(self, rule_id: str) -> Rule:
        return next(r for r in self.rule if r.id == rule_id)


@lru_cache(maxsize=1)
def load_rules() -> RuleSet:
    text = (resources.files("msgwatch.analysis.verdicts") / "circumvention.toml").read_text(
        encoding="utf-8"
    )
    return RuleSet.model_validate(tomllib.loads(text))


def dicts(value: Any) -> list[Record]:
    """The dicts of a list (at most :data:`MAX_ITEMS` items looked at); [] for anything else."""
    return [v for v in value[:MAX_ITEMS] if isinstance(v, dict)] if isinstance(value, list) else []


def num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def integer(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def text(value: Any, limit: int = 64) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def kind_of(failure: str | None, rules: RuleSet) -> str | None:
    """The network kind of ``failure`` (``timeout``, ``reset``, ...), None when not the network's."""
    if failure is None or failure in rules.local.failures:
        return None
    if failure in rules.kinds:
        return rules.kinds[failure]
    for prefix, kind in rules.prefix_kinds.items():
        if failure.startswith(prefix):
            return kind
    return None


def transfer_passed(keys: Record) -> bool:
    """Whether the measurement's tunnel carried the ``transfer`` to the helper and back."""
    return any(
        s.get("stage") == "transfer" and s.get("failure") is None and num(s.get("t")) is not None
        for s in dicts(keys.get("stages"))
    )

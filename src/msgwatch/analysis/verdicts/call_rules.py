"""The call rules (``calls.toml``) as data: validated once, read by :mod:`.calls`.

Kept apart from :mod:`.calls`, which is compiled (``msgwatch._native``): pydantic's models stay
plain Python classes.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from msgwatch.analysis.rounds import State
from msgwatch.measurement.vocab import Verdict

Plain = Literal["pass", "fail", "partial", "policed", "unclear", "none"]
Markers = Literal["lost", "unclear", "passed", "none"]
Relays = Literal["ok", "failed", "unclear", "none"]


class CallRule(BaseModel):
    """One row of calls.toml. A condition is a value, or a list of values any of which matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    original: State | list[State] | None = None
    control: State | list[State] | None = None
    neutral: State | list[State] | None = None
    plain: Plain | list[Plain] | None = None
    stun: Literal["ok", "failed", "none"] | list[Literal["ok", "failed", "none"]] | None = None
    comparison: str | list[str] | None = None
    reason: str | None = None
    relays: Relays | list[Relays] | None = None
    relays_helper: Relays | None = None
    markers: Markers | list[Markers] | None = None
    delivery: (
        Literal["trickle", "trickle_unclear", "lossy", "lossy_unclear", "full", "none"] | None
    ) = None
    echo: Literal["short", "full", "none"] | None = None
    downstream: (
        Literal["original_lost", "same", "unclear", "none"]
        | list[Literal["original_lost", "same", "unclear", "none"]]
        | None
    ) = None
    control_api: Literal["ok", "failed", "none"] | None = None
    split: Literal["significant", "unclear", "none"] | None = None
    probe: Literal["ok", "overloaded"] | None = None
    helper: Literal["ok", "stalled"] | None = None
    verdict: Verdict
    mechanism: str | None = None
    confidence: float = Field(ge=0, le=1)
    explain: str


class CallRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules_version: str
    rule: list[CallRule]


@lru_cache(maxsize=1)
def load_call_rules() -> CallRules:
    text = (resources.files("msgwatch.analysis.verdicts") / "calls.toml").read_text(
        encoding="utf-8"
    )
    return CallRules.model_validate(tomllib.loads(text))

"""An endpoint's facts matched to the rules, a response to the block-page fingerprints.

The judge's innermost loop, once per endpoint of every measurement: it is compiled
(:mod:`msgwatch._native`), while the rules and fingerprints stay data, validated by pydantic in
:mod:`.rules`.

- :func:`match`: the first rule of ``rules.toml`` whose conditions all hold. Facts take a handful
  of values (a step, a failure string, four flags and a control state), so the answer for the
  loaded rule set is remembered per combination (the :data:`MEMO_SIZE` most recent: a failure
  string comes from the measurement and may be anything); a rule set passed in is matched
  afresh every time.
- :func:`match_blockpage`: the first fingerprint of ``blockpages.toml`` (in the file's order) that
  the response matches by status, a body pattern in the first 64 KiB (decoded as UTF-8, bad bytes
  replaced: a pattern's ``[sş]`` is one letter, as a reader sees it, not one of three bytes), or
  a header pattern. Most responses match none: one search with every body pattern at once settles
  that before the fingerprints are tried one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from msgwatch.analysis.verdicts.rules import (
    Fingerprint,
    Rule,
    RuleSet,
    load_fingerprints,
    load_rules,
)

BODY_HEAD: Final = 64 * 1024
"""The part of a response body the fingerprints' patterns are searched in."""
MEMO_SIZE: Final = 4096

FactsKey = tuple[str, str | None, bool, bool, bool, str, bool]


class Facts:
    """What the rules look at for one endpoint.

    A plain class, not a dataclass: compiled, its ``__init__`` is C, where the one ``dataclass``
    generates stays Python (a frozen one's assigns through ``object.__setattr__``), and one is made
    for every endpoint of every measurement."""

    def __init__(
        self,
        step: str,
        failure: str | None,
        dns_forged: bool,
        verified: bool,
        blockpage: bool,
        control: str,
        throttled: bool = False,
    ) -> None:
        self.step = step
        self.failure = failure
        self.dns_forged = dns_forged
        self.verified = verified
        self.blockpage = blockpage
        self.control = control
        self.throttled = throttled

    def key(self) -> FactsKey:
        return (
            self.step,
            self.failure,
            self.dns_forged,
            self.verified,
            self.blockpage,
            self.control,
            self.throttled,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Facts) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        names = ("step", "failure", "dns_forged", "verified", "blockpage", "control", "throttled")
        return (
            "Facts(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, self.key(), strict=True)) + ")"
        )


def _first(facts: Facts, rules: RuleSet) -> Rule:
    for rule in rules.rule:
        if rule.step is not None and rule.step != facts.step:
            continue
        if rule.failures is not None and facts.failure not in rule.failures:
            continue
        if rule.dns_forged is not None and rule.dns_forged != facts.dns_forged:
            continue
        if rule.verified is not None and rule.verified != facts.verified:
            continue
        if rule.blockpage is not None and rule.blockpage != facts.blockpage:
            continue
        if rule.control is not None and rule.control != facts.control:
            continue
        if rule.throttled is not None and rule.throttled != facts.throttled:
            continue
        return rule
    raise LookupError("the rule set has no catch-all rule")


def match(facts: Facts, rules: RuleSet | None = None) -> Rule:
    """The first rule that matches ``facts`` (the rule set ends with a catch-all)."""
    if rules is not None:
        return _first(facts, rules)
    return _remembered(facts)


@lru_cache(maxsize=MEMO_SIZE)
def _remembered(facts: Facts) -> Rule:
    """:func:`match` against the loaded rule set, remembered per combination of facts."""
    return _first(facts, load_rules())


@dataclass(frozen=True)
class _Compiled:
    """The fingerprints with their patterns compiled, and what any of them could match."""

    fingerprints: list[tuple[Fingerprint, list[re.Pattern[str]], list[tuple[str, re.Pattern[str]]]]]
    statuses: frozenset[int]
    headers: bool  # any fingerprint looks at a header
    any_body: re.Pattern[str] | None  # every body pattern at once (None: they do not combine)


@lru_cache(maxsize=1)
def _compile() -> _Compiled:
    fingerprints = load_fingerprints().fingerprint
    table = [
        (
            fp,
            [re.compile(p, re.IGNORECASE) for p in fp.body],
            [(name.lower(), re.compile(p, re.IGNORECASE)) for name, p in fp.header.items()],
        )
        for fp in fingerprints
    ]
    sources = [p for fp in fingerprints for p in fp.body]
    any_body: re.Pattern[str] | None = None
    try:  # a pattern with its own groups or flags might not combine: then there is no shortcut
        any_body = re.compile("|".join(f"(?:{s})" for s in sources), re.IGNORECASE)
    except re.error:
        any_body = None
    return _Compiled(
        fingerprints=table,
        statuses=frozenset(fp.status for fp in fingerprints if fp.status is not None),
        headers=any(fp.header for fp in fingerprints),
        any_body=any_body,
    )


def match_blockpage(status: int | None, headers: list[tuple[str, str]], body: bytes) -> str | None:
    """The id of the first fingerprint the response matches, or None."""
    compiled = _compile()
    head = body[:BODY_HEAD].decode("utf-8", "replace")
    if (
        compiled.any_body is not None
        and not compiled.headers
        and status not in compiled.statuses
        and compiled.any_body.search(head) is None
    ):
        return None
    lowered = {k.lower(): v for k, v in headers}
    for fp, patterns, header_patterns in compiled.fingerprints:
        if fp.status is not None and status == fp.status:
            return fp.id
        for pattern in patterns:
            if pattern.search(head) is not None:
                return fp.id
        for name, header_pattern in header_patterns:
            value = lowered.get(name)
            if value is not None and header_pattern.search(value) is not None:
                return fp.id
    return None

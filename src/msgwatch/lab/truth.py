"""Verdicts against the ground truth: the one comparison of ``lab run``, ``demo`` and ``demo --mini``.

Rules:

- **The reader's verdicts.** What is compared is what the analysis says about the measurements
  (:func:`judged`: :func:`msgwatch.analysis.verdicts.judge.judge` on each, as a reader of the
  published files would), never a view the probe may have embedded in them.
- **Verdict and mechanism.** A row matches when both equal the expectation's (``None`` mechanism
  included): ``blocked`` by the wrong mechanism is a mismatch. An expected mechanism may list
  alternatives, ``a|b`` (:func:`mechanism_matches`): where the lab cannot pin down at which of two
  stages a circumvention transport shows a block, either is right, and nothing else is.
- **One row shape.** :func:`row` gives ``service``, ``function``, ``expected``,
  ``expected_mechanism``, ``verdict``, ``mechanism``, ``evidence`` (the verdict's transaction ids),
  ``match`` and ``why``. ``lab run`` adds its ``phase`` and ``isp`` and the verdict's ``scope`` and
  ``explanation``; a verdict that is missing has ``verdict`` and ``mechanism`` ``None`` and does not
  match.
- **Two ways round.** :func:`against` gives one row per expectation (a fixed list of them: the
  mini-Internet); a lab scenario instead expects something of every verdict it gets (``ok`` unless
  listed), so ``lab run`` calls :func:`row` per verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from msgwatch.analysis.verdicts.judge import judge

__all__ = ["Expected", "against", "judged", "matched", "mechanism_matches", "row"]

Record = dict[str, Any]


class Expected(Protocol):
    """What a correct probe says about one (service, function), and why."""

    @property
    def service(self) -> str: ...
    @property
    def function(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def mechanism(self) -> str | None: ...
    @property
    def why(self) -> str: ...


def judged(measurements: Iterable[Mapping[str, Any]]) -> list[Record]:
    """The analysis's verdicts on ``measurements``, in their order (each in catalogue order)."""
    return [v for m in measurements for v in judge(dict(m))]


def mechanism_matches(expected: str | None, found: object) -> bool:
    """Whether the mechanism ``found`` is the one expected (``a|b``: either)."""
    if expected is None:
        return found is None
    return isinstance(found, str) and found in expected.split("|")


def row(expected: Expected, found: Mapping[str, Any] | None) -> Record:
    """The comparison of one expectation with the verdict ``found`` (None: no verdict)."""
    verdict = found or {}
    return {
        "service": expected.service,
        "function": expected.function,
        "expected": expected.verdict,
        "expected_mechanism": expected.mechanism,
        "verdict": verdict.get("verdict"),
        "mechanism": verdict.get("mechanism"),
        "evidence": verdict.get("evidence", []),
        "match": found is not None
        and verdict.get("verdict") == expected.verdict
        and mechanism_matches(expected.mechanism, verdict.get("mechanism")),
        "why": expected.why,
    }


def against(expected: Iterable[Expected], verdicts: Iterable[Mapping[str, Any]]) -> list[Record]:
    """One row per expectation, with the verdict for its (service, function) if there is one."""
    found = {(v["service"], v["function"]): v for v in verdicts}
    return [row(e, found.get((e.service, e.function))) for e in expected]


def matched(rows: Iterable[Mapping[str, Any]]) -> int:
    """How many rows match."""
    return sum(1 for r in rows if r["match"])

"""Verdicts are recomputed from stored measurements alone, and a committed run stays readable.

``tests/data/minilab-demo.jsonl`` holds the measurements of one ``msgwatch demo`` run (loopback
addresses only). Judging them again must give the verdicts the probe showed; and they must keep
passing the format checks as the code evolves. When the rules change on purpose, regenerate it:
``msgwatch demo --output tests/data/minilab-demo.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

from msgwatch.analysis.verdicts.judge import judge
from tests.format.check import assert_conforms

FIXTURE = Path(__file__).parents[1] / "data" / "minilab-demo.jsonl"


def _load() -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_judging_a_stored_measurement_gives_the_recorded_verdicts() -> None:
    measurements = _load()
    assert len(measurements) >= 5
    for m in measurements:
        recorded = m["test_keys"]["msgwatch_verdicts"]
        assert judge(m) == recorded, m["input"]


def test_every_verdict_carries_the_rules_version() -> None:
    from msgwatch.analysis import verdicts
    from msgwatch.analysis.verdicts.call_rules import load_call_rules

    assert verdicts.judge is judge
    assert load_call_rules().rules_version == verdicts.RULES_VERSION  # one version for all rules
    for m in _load():
        found = verdicts.judge(m)
        assert found and all(v["rules_version"] == verdicts.RULES_VERSION for v in found)


def test_committed_measurements_conform() -> None:
    assert_conforms(_load())

"""The report's sentences on what worked meanwhile, from an event's controls (hostile JSON too)."""

from __future__ import annotations

from typing import Any

import pytest

from msgwatch.dashboard.report_words import elsewhere


def test_a_country_event_says_which_functions_and_which_networks_worked_meanwhile() -> None:
    controls = {"works": ["text"], "worked_elsewhere": ["AS39232", "AS31721"]}
    assert elsewhere("country", controls) == [
        "Meanwhile these functions of the same services kept working: text.",
        "Meanwhile the same services and functions worked on the country's other networks"
        " AS39232, AS31721.",
    ]
    one = elsewhere("country", {"works": [], "worked_elsewhere": ["AS39232"]})
    assert one == [
        "Meanwhile the same services and functions worked on the country's other network AS39232."
    ]


@pytest.mark.parametrize(
    "controls",
    [{}, {"works": None, "worked_elsewhere": None}, {"works": [1, {}], "worked_elsewhere": [2]}],
)
def test_odd_country_controls_say_nothing(controls: dict[str, Any]) -> None:
    assert elsewhere("country", controls) == []

"""``msgwatch demo`` with its lab runs stubbed: each scenario "runs" instantly and the timeline's
summary is the one a test gives (tests/lab/test_timeline_compare.py, tests/cli/test_report_cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def stub_lab_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, timeline: dict[str, Any]
) -> list[str]:
    """Replace the demo's lab runs; returns the list the scenarios' names are appended to."""
    from msgwatch.cli import lab as cli_lab

    ran: list[str] = []

    def run_and_report(scenario: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        ran.append(scenario.name)
        summary = {"scenario": scenario.name, "results": [], "matched": 0, "total": 0,
                   "output": str(tmp_path / f"{scenario.name}.jsonl"),
                   "report": str(tmp_path / f"{scenario.name}.html")}  # fmt: skip
        if scenario.name == "az-2017-timeline":
            summary.update(timeline=timeline, events_file=str(tmp_path / "events.json"))
        return summary

    monkeypatch.setattr(cli_lab, "run_and_report", run_and_report)
    return ran

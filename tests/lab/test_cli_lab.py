"""The lab's command line: JSON shapes, up/status/down through the holder process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from msgwatch.cli.main import cli
from msgwatch.lab import runtime
from msgwatch.lab.scenario import list_scenarios

pytestmark = pytest.mark.netns


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")


ENVELOPE = {"command", "status", "error"}
RESULT_KEYS = {"phase", "isp", "service", "function", "expected", "expected_mechanism",
               "verdict", "mechanism", "match"}  # fmt: skip

MISMATCH = """
name = "cli-mismatch"
title = "Nothing censored, and a ground truth that says otherwise"
description = "A deliberately wrong expectation: lab run must not exit 0."
services = ["signal"]
timeout = 3
[[phase]]
name = "open"
[[expect]]
isp = "isp1"
service = "signal"
function = "text"
verdict = "blocked"
mechanism = "dns.nxdomain"
why = "wrong on purpose"
"""


def test_lab_list_json() -> None:
    result = CliRunner().invoke(cli, ["lab", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == ENVELOPE | {"scenarios"} and data["command"] == "lab list"
    rows = data["scenarios"]
    assert [r["scenario"] for r in rows] == [s.name for s in list_scenarios()]
    assert {"az-2017", "baseline", "dns-injection"} <= {r["scenario"] for r in rows}


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_lab_run_json_shape_and_what_it_publishes(tmp_path: Path) -> None:
    _root()
    out = tmp_path / "published"
    out.mkdir()
    result = CliRunner().invoke(cli, ["lab", "run", "dns-nxdomain", "--json", "--output", str(out)])
    data = json.loads(result.stdout)
    # 0 when every verdict matches (tests/lab/test_scenarios.py asserts that they do), else 7
    assert result.exit_code == (0 if data["matched"] == data["total"] else 7), result.output
    assert set(data) == ENVELOPE | {"scenario", "results", "matched", "total", "output",
                                    "report", "internal"}  # fmt: skip
    assert (data["command"], data["status"], data["error"]) == ("lab run", result.exit_code, None)
    assert data["scenario"] == "dns-nxdomain" and data["total"] > 0
    assert all(set(r) == RESULT_KEYS for r in data["results"])
    assert {r["isp"] for r in data["results"]} == {"isp1", "isp2"}
    measurements, report = Path(data["output"]), Path(data["report"])
    # only what one would publish, at the top; the internals went to a directory since removed
    assert sorted(p.name for p in out.iterdir()) == sorted([measurements.name, report.name])
    assert measurements.suffix == ".jsonl" and report == measurements.with_suffix(".html")
    assert _private(measurements) and _private(report) and data["internal"] is None
    lines = [json.loads(line) for line in measurements.read_text().splitlines()]
    assert len(lines) == 4  # two services, two ISPs
    assert "<html" in report.read_text()[:500].lower()


def test_lab_run_exits_7_when_a_verdict_misses_the_ground_truth(tmp_path: Path) -> None:
    _root()
    scenario = tmp_path / "cli-mismatch.toml"
    scenario.write_text(MISMATCH)
    out, work = tmp_path / "run.jsonl", tmp_path / "work"
    args = ["lab", "run", str(scenario), "--output", str(out), "--work-dir", str(work)]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 7, result.output
    data = json.loads(result.stdout)
    assert data["status"] == 7 and data["error"] is None
    assert data["matched"] == data["total"] - 1
    assert (data["output"], data["report"]) == (str(out), str(tmp_path / "run.html"))
    internal = Path(data["internal"])
    assert internal == work / "internal"
    assert {p.name for p in internal.iterdir()} >= {"state-isp1", "state-isp2"}
    assert (internal / "state-isp1" / "probe-id").exists()
    assert not any(p.name.startswith("state-") for p in work.iterdir())
    assert stat.S_IMODE(internal.stat().st_mode) == 0o700


def test_unknown_scenario_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["lab", "run", "no-such-scenario"])
    assert result.exit_code == 2
    assert "no scenario" in result.output


def test_up_status_down_leave_nothing() -> None:
    _root()
    before = set(runtime.known_ids())
    folders = set(Path(tempfile.gettempdir()).glob("msgwatch-lab-up-*"))
    msgwatch = [sys.executable, "-m", "msgwatch", "lab"]
    up = subprocess.run([*msgwatch, "up", "sni-reset"], capture_output=True, text=True, timeout=90)
    assert up.returncode == 0, up.stderr
    assert set(Path(tempfile.gettempdir()).glob("msgwatch-lab-up-*")) == folders  # ready file gone
    new = set(runtime.known_ids()) - before
    assert len(new) == 1
    (lab_id,) = new
    status = subprocess.run(
        [*msgwatch, "status", "--json"], capture_output=True, text=True, timeout=30
    )
    answer = json.loads(status.stdout)
    assert answer["command"] == "lab status"  # not "-m msgwatch lab status"
    row = next(r for r in answer["labs"] if r["lab_id"] == lab_id)
    assert row["owner_pid"] and len(row["namespaces"]) == 7
    down = subprocess.run([*msgwatch, "down", lab_id], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert lab_id not in runtime.known_ids()
    assert not runtime.lab_namespaces(lab_id)

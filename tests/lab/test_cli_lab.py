"""The lab's command line: JSON shapes, up/status/down through the holder process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from msgwatch.cli.main import cli
from msgwatch.lab import runtime
from msgwatch.lab.scenario import list_scenarios

pytestmark = pytest.mark.netns


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")


def test_lab_list_json() -> None:
    result = CliRunner().invoke(cli, ["lab", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["scenario"] for r in rows] == [s.name for s in list_scenarios()]
    assert {"az-2017", "baseline", "dns-injection"} <= {r["scenario"] for r in rows}


def test_lab_run_json_shape(tmp_path: object) -> None:
    _root()
    result = CliRunner().invoke(
        cli, ["lab", "run", "dns-nxdomain", "--json", "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"scenario", "results", "matched", "total"}
    assert data["scenario"] == "dns-nxdomain" and data["matched"] == data["total"] > 0
    keys = {
        "isp",
        "service",
        "function",
        "expected",
        "expected_mechanism",
        "verdict",
        "mechanism",
        "match",
    }
    assert all(set(r) == keys for r in data["results"])
    assert {r["isp"] for r in data["results"]} == {"isp1", "isp2"}


def test_unknown_scenario_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["lab", "run", "no-such-scenario"])
    assert result.exit_code == 2
    assert "no scenario" in result.output


def test_up_status_down_leave_nothing() -> None:
    _root()
    before = set(runtime.known_ids())
    msgwatch = [sys.executable, "-m", "msgwatch", "lab"]
    up = subprocess.run([*msgwatch, "up", "sni-reset"], capture_output=True, text=True, timeout=90)
    assert up.returncode == 0, up.stderr
    new = set(runtime.known_ids()) - before
    assert len(new) == 1
    (lab_id,) = new
    status = subprocess.run(
        [*msgwatch, "status", "--json"], capture_output=True, text=True, timeout=30
    )
    row = next(r for r in json.loads(status.stdout) if r["lab_id"] == lab_id)
    assert row["owner_pid"] and len(row["namespaces"]) == 7
    down = subprocess.run([*msgwatch, "down", lab_id], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert lab_id not in runtime.known_ids()
    assert not runtime.lab_namespaces(lab_id)

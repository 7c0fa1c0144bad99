"""``msgwatch circumvent`` and ``msgwatch run --circumvention``: options, errors, the report (the
run itself is a stand-in here; tests/circumvention and tests/lab/circumvention run it for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msgwatch.circumvention.model import Entry, Run
from msgwatch.cli.main import cli
from msgwatch.session import circumvent as S
from msgwatch.steps.trace import Trace


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,198.18.0.0/15")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MSGWATCH_STATE_DIR", str(tmp_path / "state"))


def write(tmp_path: Path, entries: list[dict[str, Any]]) -> str:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"transport": entries}))
    return str(path)


PROXY = {"name": "my-proxy", "type": "socks5", "address": "198.18.4.30", "port": 1080}


def test_help_and_run_flag() -> None:
    runner = CliRunner()
    assert "--sustain" in runner.invoke(cli, ["circumvent", "--help"]).output
    assert "--circumvention [FILE]" in runner.invoke(cli, ["run", "--help"]).output


def test_bad_file_is_a_usage_error_naming_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, [{**PROXY, "port": 70000}])
    result = CliRunner().invoke(cli, ["circumvent", "--circumvention", path, "--helper",
                                      "198.18.3.10", "--yes", "--no-catalogue-entries"])  # fmt: skip
    assert result.exit_code == 2
    assert "transport[0] ('my-proxy'): port: must be an integer in 1..65535" in result.output


def test_consent_needed_without_a_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, [PROXY])
    result = CliRunner().invoke(cli, ["circumvent", "--circumvention", path, "--helper",
                                      "198.18.3.10", "--no-catalogue-entries",
                                      "--services", "none"])  # fmt: skip
    assert result.exit_code == 5 and "circumvention tests need consent" in result.output


def test_report_table_json_spool_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_run(prepared: S.Prepared, ctx: Any, budget: Any, on_done: Any) -> list[Run]:
        runs = []
        for entry in prepared.entries:
            run = Run(entry, Trace())
            run.fail("connect", "connection_refused")
            runs.append(run)
        return runs

    def fake_build(run: Run, ctx: Any, started: Any) -> dict[str, Any]:
        return {"test_name": "msgwatch_circumvention", "input": run.entry.name,
                "test_keys": {"failure": run.failure}}  # fmt: skip

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setattr(S, "_build", fake_build)
    monkeypatch.setattr(S, "JUDGE_MODULE", __name__)  # judge() below stands in for H5b's
    path = write(tmp_path, [PROXY])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["circumvent", "--circumvention", path, "--helper",
                                      "198.18.3.10", "--yes", "--no-catalogue-entries",
                                      "--services", "none", "--json", "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["verdicts"] == [{"service": "my-proxy", "function": "tunnel", "verdict": "blocked",
                                 "mechanism": "connect.refused", "evidence": {}}]  # fmt: skip
    assert data["entries"][0]["failed_stage"] == "connect"
    assert data["spool"]["spooled"] == 1
    assert json.loads(out.read_text())["input"] == "my-proxy"
    table = CliRunner().invoke(cli, ["circumvent", "--circumvention", path, "--helper",
                                     "198.18.3.10", "--yes", "--no-catalogue-entries",
                                     "--services", "none", "--output", str(out)])  # fmt: skip
    assert table.exit_code == 0 and "connect.refused" in table.output


def judge(m: dict[str, Any]) -> list[dict[str, Any]]:
    """A stand-in for the reader side's judge, only in this test."""
    return [{"service": m["input"], "function": "tunnel", "verdict": "blocked",
             "mechanism": "connect.refused", "evidence": {}}]  # fmt: skip


def test_consent_text_says_it_is_visible() -> None:
    from msgwatch.session.consent import CIRCUMVENTION

    assert "visible" in CIRCUMVENTION.text and "Tor" in CIRCUMVENTION.text


def test_catalogue_entries_read_and_merged(tmp_path: Path) -> None:
    warnings: list[str] = []
    entries = S.catalogue_entries(warnings)
    assert all(isinstance(e, Entry) for e in entries)

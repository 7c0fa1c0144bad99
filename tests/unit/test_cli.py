"""The command line: JSON shapes, exit statuses, catalogue errors, output files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from msgwatch.catalogue import load_catalogue
from msgwatch.cli.main import cli
from tests.format.check import assert_conforms
from tests.unit.servers import TEST_SERVICE


def _service(name: str, port: int) -> str:
    return TEST_SERVICE.format(id=name, tcp_port=port, udp_port=port)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _catalogue(tmp_path: Path, body: str | None = None, name: str = "svc") -> Path:
    root = tmp_path / "cat"
    root.mkdir()
    (root / "index.toml").write_text('schema = 1\nversion = "2026.11.24"\n')
    (root / f"{name}.toml").write_text(body or _service(name, _closed_port()))
    return root


def test_catalogue_list_json_lists_every_shipped_service() -> None:
    result = CliRunner().invoke(cli, ["catalogue", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["command"], data["status"], data["error"]) == ("catalogue list", 0, None)
    rows = data["services"]
    assert [r["service"] for r in rows] == [s.id for s in load_catalogue().services]
    assert all(set(r) == {"service", "functions"} and r["functions"] for r in rows)


def test_shipped_catalogue_validates() -> None:
    result = CliRunner().invoke(cli, ["catalogue", "validate"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_names_file_entry_and_problem(tmp_path: Path) -> None:
    broken = _service("svc", 70000).replace('protocol = "stun"', 'protocol = "smtp"')
    root = _catalogue(tmp_path, broken)
    result = CliRunner().invoke(cli, ["catalogue", "validate", str(root)])
    assert result.exit_code == 3
    assert "svc.toml: functions.text.endpoints[0] (chat).port" in result.output
    assert "svc.toml: functions.voice.endpoints[0] (relay).protocol" in result.output


def test_run_json_shape_output_file_and_format(tmp_path: Path) -> None:
    root = _catalogue(tmp_path)
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "1", "--output", str(out), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["output"] == str(out)
    assert [(v["service"], v["function"]) for v in data["verdicts"]] == [
        ("svc", "text"),
        ("svc", "voice"),
    ]
    assert all(
        set(v) == {"service", "function", "verdict", "mechanism", "evidence"}
        for v in data["verdicts"]
    )
    text, voice = data["verdicts"]
    assert (text["verdict"], text["mechanism"]) == ("inconclusive", "tcp.refused")
    assert (voice["verdict"], voice["mechanism"]) == ("inconclusive", "udp.refused")
    measurements = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(measurements) == 1
    assert_conforms(measurements)


def test_run_exit_statuses(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["run", "--services", "nope", "--json"]).exit_code == 3
    assert runner.invoke(cli, ["run", "--resolver", "x:y", "--json"]).exit_code == 2
    assert runner.invoke(cli, ["run", "--functions", "fax", "--json"]).exit_code == 2
    root = _catalogue(tmp_path)
    target = tmp_path / "file-not-dir"
    target.write_text("a file where the output's directory should be")
    args = ["run", "--catalogue", str(root), "--timeout", "0.5", "--json",
            "--output", str(target / "m.jsonl")]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 4


def test_probe_asn_and_cc_are_normalised(tmp_path: Path) -> None:
    root = _catalogue(tmp_path)
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "0.5", "--output", str(out), "--json",
            "--probe-asn", "28787", "--probe-cc", "az"]  # fmt: skip
    assert CliRunner().invoke(cli, args).exit_code == 0
    m = json.loads(out.read_text())
    assert (m["probe_asn"], m["probe_cc"]) == ("AS28787", "AZ")
    assert m["report_id"].split("_")[1:4] == ["msgwatch", "AZ", "28787"]


def test_call_tests_need_consent_unless_unattended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root = _catalogue(tmp_path)
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "0.5", "--output", str(out), "--json",
            "--helper", "127.0.0.1"]  # fmt: skip
    refused = CliRunner().invoke(cli, args)  # no terminal: cannot ask
    assert refused.exit_code == 5 and "consent" in refused.output
    assert not out.exists()
    done = CliRunner().invoke(cli, [*args, "--yes"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["bytes"]["sent"] > 0  # the STUN retransmissions to the closed port
    m = json.loads(out.read_text())
    assert m["test_keys"]["msgwatch_bytes"] == data["bytes"]

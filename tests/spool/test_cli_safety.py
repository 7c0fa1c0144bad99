"""What the probe's command line keeps private and how it fails (issue 9, items 14 and 22):
output files are 0600, a token file others can read is refused, a URL's password is never
echoed, ``submit --json`` answers in JSON when the ledger cannot be written, and ``spool status``
on a missing state directory says so."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from msgwatch.cli.main import cli
from tests.spool import fake_collector, small_catalogue

SECRET = "hunter2-s3cret"


def _run(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Result:
    catalogue = tmp_path / "cat"
    if not catalogue.exists():
        small_catalogue(catalogue)
    args = ["run", "--catalogue", str(catalogue), "--timeout", "0.5",
            "--state-dir", str(tmp_path / "state"), *extra]  # fmt: skip
    return CliRunner().invoke(cli, args, env=env)


def _envelope(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    assert {"command", "status", "error"} <= set(data)
    assert data["status"] == result.exit_code
    return data


def test_output_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text("an older, world-readable file\n")
    out.chmod(0o644)
    leftover = tmp_path / "m.jsonl.tmp"  # an older version's temporary name
    leftover.write_text("a crash's leftover")
    leftover.chmod(0o666)
    old = os.umask(0o002)
    try:
        result = _run(tmp_path, "--output", str(out), "--no-submit", "--json")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["test_name"] == "msgwatch_service"
    # each write has a fresh temporary name (msgwatch.durable): no leftover is written through
    assert leftover.read_text() == "a crash's leftover"
    assert not list(tmp_path.glob(".m.jsonl.*.tmp"))


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("probe-token-1\n")
    token.chmod(0o644)
    with fake_collector() as fake:
        refused = _run(tmp_path, "--collector", fake.url, "--collector-token-file", str(token))
        assert refused.exit_code == 2
        assert "chmod 600" in refused.output and "mode 0644" in refused.output
        assert fake.requests == [] and not (tmp_path / "state").exists()
        submit = CliRunner().invoke(cli, ["submit", "--collector", fake.url, "--json",
                                          "--collector-token-file", str(token)])  # fmt: skip
        assert submit.exit_code == 2 and _envelope(submit)["error"]["code"] == "usage"
        token.chmod(0o600)
        accepted = _run(tmp_path, "--collector", fake.url, "--collector-token-file", str(token),
                        "--output", str(tmp_path / "m.jsonl"))  # fmt: skip
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.parametrize(
    "url",
    [
        f"http://probe:{SECRET}@127.0.0.1:9",
        f"https://probe:{SECRET}@collector.example.org/base",
        f"ftp://probe:{SECRET}@127.0.0.1",
        f"http://probe:{SECRET}/x@127.0.0.1:9",  # an unencoded / in the password
        f"probe:{SECRET}@127.0.0.1:9",
    ],
)
def test_a_refused_collector_url_never_shows_its_password(tmp_path: Path, url: str) -> None:
    results = [
        _run(tmp_path, "--collector", url, "--json"),
        _run(tmp_path, "--json", env={"MSGWATCH_COLLECTORS": url}),
        CliRunner().invoke(cli, ["submit", "--collector", url, "--json"]),
    ]
    for result in results:
        assert result.exit_code == 2
        assert SECRET not in result.output and "probe:" not in result.output
        assert "***@" in result.output
        assert _envelope(result)["error"]["code"] == "usage"


def test_submit_json_answers_in_json_when_the_ledger_cannot_be_written(tmp_path: Path) -> None:
    assert _run(tmp_path, "--no-submit", "--output", str(tmp_path / "m.jsonl")).exit_code == 0
    ledger = tmp_path / "state" / "spool" / "submitted.jsonl"
    ledger.mkdir()  # a directory where the ledger file should be: every write fails
    with fake_collector() as fake:
        result = CliRunner().invoke(cli, ["submit", "--json", "--state-dir",
                                          str(tmp_path / "state"), "--collector", fake.url])  # fmt: skip
    assert result.exit_code == 4, result.output
    data = _envelope(result)
    assert data["command"] == "submit" and data["error"]["code"] == "output"
    assert str(tmp_path / "state" / "spool") in data["error"]["message"]
    assert len(list((tmp_path / "state" / "spool" / "pending").glob("*.json"))) == 1


def test_spool_status_on_a_missing_state_directory_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-state"
    text = CliRunner().invoke(cli, ["spool", "status", "--state-dir", str(missing)])
    assert text.exit_code == 4
    assert len(text.stderr.strip().splitlines()) == 1
    assert f"no state directory at {missing}" in text.stderr and "--state-dir" in text.stderr
    as_json = CliRunner().invoke(cli, ["spool", "status", "--json", "--state-dir", str(missing)])
    assert as_json.exit_code == 4
    assert _envelope(as_json)["error"]["message"].startswith("no state directory at")
    assert not missing.exists()  # it only reads


def test_probe_errors_name_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    blocked = tmp_path / "file" / "state"
    catalogue = small_catalogue(tmp_path / "cat")
    result = CliRunner().invoke(cli, ["run", "--catalogue", str(catalogue), "--timeout", "0.5",
                                      "--no-submit", "--state-dir", str(blocked), "--json",
                                      "--output", str(tmp_path / "m.jsonl")])  # fmt: skip
    assert result.exit_code == 4
    message = _envelope(result)["error"]["message"]
    assert message.startswith(f"cannot use the state directory {blocked}: ")
    assert "pass --state-dir" in message and len(result.stderr.strip().splitlines()) == 1
    missing = _run(tmp_path, "--collector", "http://127.0.0.1:9",
                   "--collector-token-file", str(tmp_path / "no-token"))  # fmt: skip
    assert missing.exit_code == 2
    assert f"cannot read {tmp_path / 'no-token'}: No such file or directory" in " ".join(
        missing.stderr.split()
    )

"""The command line: ``run`` spools first and submits, ``spool status``, ``submit``; exit statuses
and JSON shapes."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msgwatch.cli.main import cli
from msgwatch.session.schedule import run_lock
from msgwatch.spool.spool import Ack, Spool
from tests.spool import fake_collector, small_catalogue

DOWN = "http://192.0.2.1:9"
"""Outside the fence (tests/conftest.py): refused at once, and never retried, so no backoff waits
(the CLI sleeps for real; tests/spool/test_submit.py injects the sleep)."""
ENVELOPE = {"command", "status", "error"}
"""Every --json answer's common keys (msgwatch.cli.envelope)."""
RUN_KEYS = ENVELOPE | {"verdicts", "output", "bytes", "spool", "submission", "run"}


def _run(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    catalogue = tmp_path / "cat"
    if not catalogue.exists():
        small_catalogue(catalogue)
    args = ["run", "--catalogue", str(catalogue), "--timeout", "0.5", "--json",
            "--output", str(tmp_path / "m.jsonl"), "--state-dir", str(tmp_path / "state"),
            *extra]  # fmt: skip
    return CliRunner().invoke(cli, args, env=env)


def test_run_spools_then_submits(tmp_path: Path) -> None:
    with fake_collector() as fake:
        result = _run(tmp_path, "--collector", fake.url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) >= RUN_KEYS  # other keys may join (e.g. "network")
    assert data["spool"] == {"state_dir": str(tmp_path / "state"), "spooled": 1, "pending": 0}
    submission = data["submission"]
    assert submission["ok"] and submission["stored"] == 1 and submission["remaining"] == 0
    assert submission["collectors"][0]["url"] == fake.url
    assert set(data["run"]) == {"started_at", "finished_at"}
    written = json.loads((tmp_path / "m.jsonl").read_text())
    [stored] = [v["measurement"] for v in fake.stored.values()]
    assert stored == written  # the same measurement went to the file and to the collector
    spool = Spool(tmp_path / "state")
    assert [r["uid"] for r in spool.ledger()] == [v["uid"] for v in fake.stored.values()]
    [key] = fake.stored
    # <network tag>.<random>; the probe id itself is never sent
    assert re.fullmatch(r"[0-9a-f]{16}\.[0-9a-f]{32}", key)
    probe_id = spool.read_probe_id()
    assert probe_id is not None and probe_id[:8] not in key


def test_run_without_collectors_only_spools(tmp_path: Path) -> None:
    result = _run(tmp_path, env={"MSGWATCH_COLLECTORS": ""})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["submission"] is None and data["spool"]["pending"] == 1


def test_no_submit_keeps_them_pending(tmp_path: Path) -> None:
    with fake_collector() as fake:
        result = _run(tmp_path, "--collector", fake.url, "--no-submit")
    assert result.exit_code == 0 and fake.requests == []
    assert json.loads(result.output)["spool"]["pending"] == 1


def test_collectors_from_the_environment(tmp_path: Path) -> None:
    down = DOWN
    with fake_collector() as fake:
        result = _run(tmp_path, env={"MSGWATCH_COLLECTORS": f"{down},{fake.url}"})
    data = json.loads(result.output)
    assert [c["url"] for c in data["submission"]["collectors"]] == [down, fake.url]
    assert data["submission"]["ok"] and len(fake.stored) == 1


def test_a_failed_submission_never_fails_the_run(tmp_path: Path) -> None:
    with fake_collector(["401"]) as fake:
        result = _run(tmp_path, "--collector", fake.url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert not data["submission"]["ok"] and "unauthorized" in data["submission"]["error"]
    assert data["spool"]["pending"] == 1 and (tmp_path / "m.jsonl").exists()


def test_run_human_output_mentions_spool_and_submission(tmp_path: Path) -> None:
    catalogue = small_catalogue(tmp_path / "cat")
    with fake_collector() as fake:
        result = CliRunner().invoke(cli, [
            "run", "--catalogue", str(catalogue), "--timeout", "0.5", "--collector", fake.url,
            "--output", str(tmp_path / "m.jsonl"), "--state-dir", str(tmp_path / "state"),
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Spooled 1 in" in result.output and "Submitted: 1 stored" in result.output


def test_a_spool_that_cannot_be_written_exits_4_but_keeps_the_output(tmp_path: Path) -> None:
    state = tmp_path / "state"
    small_catalogue(tmp_path / "cat")
    Spool(state).create()
    os.chmod(state / "spool" / "tmp", 0o500)
    if os.access(state / "spool" / "tmp", os.W_OK):  # root ignores modes
        os.chmod(state / "spool" / "tmp", 0o700)
        (state / "spool" / "tmp").rmdir()
        (state / "spool" / "tmp").write_text("a file where a directory should be")
    result = _run(tmp_path)
    assert result.exit_code == 4
    assert "cannot spool" in result.output and (tmp_path / "m.jsonl").exists()


def test_run_every_prints_one_json_line_per_run(tmp_path: Path) -> None:
    result = _run(tmp_path, "--every", "0.05s", "--count", "3", "--no-submit")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["run"]["index"] for line in lines] == [0, 1, 2]
    assert all(set(line) >= RUN_KEYS for line in lines)
    assert lines[-1]["spool"]["pending"] == 3


def test_usage_errors(tmp_path: Path) -> None:
    assert _run(tmp_path, "--count", "2").exit_code == 2
    assert _run(tmp_path, "--jitter", "1m").exit_code == 2
    assert _run(tmp_path, "--every", "soon").exit_code == 2
    assert _run(tmp_path, "--every", "1m", "--jitter", "2m").exit_code == 2
    assert _run(tmp_path, "--every", "0s").exit_code == 2
    assert _run(tmp_path, "--collector", "ftp://x").exit_code == 2
    missing = str(tmp_path / "no-token")
    assert _run(tmp_path, "--collector", "http://127.0.0.1:1",
                "--collector-token-file", missing).exit_code == 2  # fmt: skip
    assert not (tmp_path / "state").exists()  # refused before anything was done


def test_spool_status_json_and_text(tmp_path: Path) -> None:
    state = tmp_path / "state"
    down = DOWN
    assert _run(tmp_path, "--collector", down).exit_code == 0
    result = CliRunner().invoke(cli, ["spool", "status", "--state-dir", str(state), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert set(status) == ENVELOPE | {"state_dir", "pending", "last_submission", "submitted",
                                      "rejected", "probe_id"}  # fmt: skip
    assert (status["command"], status["status"], status["error"]) == ("spool status", 0, None)
    assert re.fullmatch(r"[0-9a-f]{32}", status["probe_id"])
    pending = status["pending"]
    assert set(pending) == {"count", "bytes", "oldest", "attempted", "max_attempts",
                            "last_error"}  # fmt: skip
    assert pending["count"] == 1 and pending["bytes"] > 0 and pending["max_attempts"] == 1
    assert pending["last_error"]["error"] == f"destination_not_allowed ({down})"
    assert status["last_submission"]["remaining"] == 1
    assert (status["submitted"], status["rejected"]) == (0, 0)
    text = CliRunner().invoke(cli, ["spool", "status", "--state-dir", str(state)])
    assert text.exit_code == 0
    for word in ("pending", "1 measurements", "destination_not_allowed", "submitted"):
        assert word in text.output
    assert re.search(rf"probe id\s+{status['probe_id']}", text.output)


def test_spool_status_counts_across_ledger_rotations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = Spool(state, ledger_max_bytes=1500)
    keys = spool.add([{"n": i} for i in range(40)])
    for i, key in enumerate(keys):
        spool.acknowledge([Ack(key, f"u{i}", "stored", "http://127.0.0.1:1")])
    assert len(list(spool.root.glob("submitted-*.jsonl"))) == 1  # rotated (more than once)
    runner = CliRunner()
    status = json.loads(runner.invoke(cli, ["spool", "status", "--json", "--state-dir",
                                            str(state)]).output)  # fmt: skip
    assert status["submitted"] == 40 and status["pending"]["count"] == 0
    text = runner.invoke(cli, ["spool", "status", "--state-dir", str(state)]).output
    assert re.search(r"submitted\s+40\b", text)
    assert re.search(rf"probe id\s+{spool.read_probe_id()}", text)


def test_spool_status_uses_the_environment(tmp_path: Path) -> None:
    env = {"MSGWATCH_STATE_DIR": str(tmp_path / "env")}
    missing = CliRunner().invoke(cli, ["spool", "status", "--json"], env=env)
    assert missing.exit_code == 4
    assert (
        f"no state directory at {tmp_path / 'env'}"
        in json.loads(missing.stdout)["error"]["message"]
    )
    (tmp_path / "env").mkdir()
    result = CliRunner().invoke(cli, ["spool", "status", "--json"], env=env)
    assert json.loads(result.output)["state_dir"] == str(tmp_path / "env")


def test_submit_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _run(tmp_path, "--no-submit").exit_code == 0
    assert _run(tmp_path, "--no-submit").exit_code == 0
    runner = CliRunner()
    none = runner.invoke(
        cli, ["submit", "--state-dir", str(state)], env={"MSGWATCH_COLLECTORS": ""}
    )
    assert none.exit_code == 2 and "no collector" in none.output
    down = DOWN
    failed = runner.invoke(
        cli, ["submit", "--state-dir", str(state), "--json", "--collector", down]
    )
    assert failed.exit_code == 6
    assert json.loads(failed.output)["remaining"] == 2
    assert json.loads(failed.output)["status"] == 6
    with fake_collector() as fake:
        done = runner.invoke(cli, ["submit", "--state-dir", str(state), "--json",
                                   "--collector", down, "--collector", fake.url])  # fmt: skip
        text = runner.invoke(cli, ["submit", "--state-dir", str(state), "--collector", fake.url])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert (data["pending"], data["stored"], data["remaining"]) == (2, 2, 0)
    assert [c["state"] for c in data["collectors"]] == ["down", "ok"]
    assert text.exit_code == 0 and "0 pending" in text.output
    status = json.loads(runner.invoke(cli, ["spool", "status", "--json", "--state-dir",
                                            str(state)]).output)  # fmt: skip
    assert status["submitted"] == 2 and status["pending"]["count"] == 0


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_the_new_options(flag: str) -> None:
    result = CliRunner().invoke(cli, ["run", flag])
    for option in ("--state-dir", "--collector", "--collector-ca", "--every", "--jitter",
                   "--count", "--no-submit"):  # fmt: skip
        assert option in result.output


def test_a_one_shot_run_waits_for_the_lock_and_a_scheduled_one_skips(tmp_path: Path) -> None:
    state = tmp_path / "state"
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with run_lock(state, wait=False) as acquired:
            assert acquired
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        skipped = _run(tmp_path, "--every", "0.05s", "--count", "2", "--no-submit")
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        waited = _run(tmp_path, "--no-submit")
        assert time.monotonic() - started >= 0.25
    finally:
        release.set()
        thread.join()
    assert skipped.exit_code == 0, skipped.output
    lines = [json.loads(line) for line in skipped.output.splitlines()]
    assert [line["run"]["skipped"] for line in lines] == ["locked", "locked"]
    assert waited.exit_code == 0, waited.output
    assert "waiting for another msgwatch run" in waited.output
    assert json.loads(waited.output.splitlines()[-1])["spool"]["spooled"] == 1

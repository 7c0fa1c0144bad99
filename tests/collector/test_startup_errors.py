"""``msgwatch collector serve`` that cannot start: one line naming the fix, the documented exit
status (8), never a traceback (issue 9, items 14 and 22)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from msgwatch.cli.common import EXIT_SERVICE
from tests.collector.liveserver import ROOT, ProcessServer, free_port, serve_command


def serve(data_dir: Path, *options: str, port: int | None = None) -> tuple[int, list[str]]:
    command = serve_command(data_dir, port or free_port(), *options)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGWATCH_DATABASE")}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def test_exit_status_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"| `{EXIT_SERVICE}` | a server could not start (`collector serve`" in readme


def test_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, lines = serve(tmp_path / "data", port=port)
    assert code == EXIT_SERVICE
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port} is in use" in lines[0] and "--port" in lines[0]
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_data_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    code, lines = serve(tmp_path / "file" / "data")
    assert code == EXIT_SERVICE
    assert len(lines) == 1, lines
    assert "cannot create the data directory" in lines[0] and "--data-dir" in lines[0]


def test_second_collector_on_one_data_directory(tmp_path: Path) -> None:
    first = ProcessServer(tmp_path / "data", tmp_path / "first.log").start()
    try:
        code, lines = serve(tmp_path / "data")
    finally:
        assert first.terminate() == 0
    assert code == EXIT_SERVICE
    assert len(lines) == 1, lines
    assert "another collector is using" in lines[0] and "--data-dir" in lines[0]


def test_unreachable_postgresql(tmp_path: Path) -> None:
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    url = f"postgresql://msgwatch:{secret}@127.0.0.1:{free_port()}/msgwatch"
    code, lines = serve(tmp_path / "data", "--database", url)
    assert code == EXIT_SERVICE
    assert len(lines) == 1, lines
    assert "cannot connect to the index database" in lines[0] and "--database" in lines[0]
    assert secret not in lines[0]


@pytest.mark.timeout(120)
def test_a_failure_met_only_when_the_store_opens_is_one_log_line(tmp_path: Path) -> None:
    """The index belongs to another archive: seen only by the store's real open, in the app's
    lifespan (after the checks): logged in one line, no traceback, the same exit status."""
    data = tmp_path / "data"
    first = ProcessServer(data, tmp_path / "first.log").start()
    assert first.terminate() == 0
    (data / "store-id").write_text(uuid.uuid4().hex + "\n")
    code, lines = serve(data)
    assert code == EXIT_SERVICE
    errors = [line for line in lines if "ERROR" in line or line.startswith("msgwatch:")]
    assert any("belongs to another archive" in line for line in errors), lines

"""``msgwatch collector serve`` and ``msgwatch export`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from msgwatch.cli.main import cli
from tests.collector.liveserver import ProcessServer, envelope, make_settings, thread_server


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    empty = tmp_path / "tokens"
    empty.write_text("# no token here\n")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["collector", "serve", "--data-dir", str(tmp_path), "--probe-tokens", str(empty)]
    )
    assert result.exit_code == 2
    result = runner.invoke(
        cli, ["collector", "serve", "--data-dir", str(tmp_path), "--database", "mysql://x"]
    )
    assert result.exit_code == 2


def test_serve_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "log"
    server = ProcessServer(tmp_path / "data", log).start()
    try:
        client = server.client()
        stored = client.add(envelope(), key="graceful-1")
        assert stored.status == 200
        assert client.get("/health").status == 200
        client.close()
    finally:
        code = server.terminate()
    assert code == 0  # a graceful stop is a clean exit
    text = log.read_text()
    assert "Traceback" not in text
    assert "POST /report/{report_id} 200" in text  # the access log: route template, no address
    assert "GET /health 200" in text
    for line in text.splitlines():
        if "msgwatch.collector.access" in line:
            assert "127.0.0.1" not in line


def test_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with thread_server(make_settings(data)) as server:
        client = server.client()
        uids = [
            client.add(envelope(input=f"export-{n}"), key=f"export-{n}").json()["measurement_uid"]
            for n in range(5)
        ]
        client.close()
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    export = ["export", "--data-dir", str(data), "--format", "jsonl", "--output", str(out)]
    result = runner.invoke(cli, export)
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(m["measurement_uid"] for m in exported) == sorted(uids)
    result = runner.invoke(cli, [*export, "--since", "2030-01-01"])
    assert result.exit_code == 0 and out.read_text() == ""
    result = runner.invoke(cli, [*export, "--since", "soon"])
    assert result.exit_code == 2

"""The collector's scheduled analysis (``--analyse-every``, issue 11 item 6): measurements submitted
through the real API are analysed by the collector's own passes and their events served by
``/api/v1/events``; a failing pass is logged and retried, never the collector's end; a stop ends a
running pass."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.analyser import Analyser, Schedule, describe
from tests.collector.analysis_data import story
from tests.collector.liveserver import make_settings, thread_server

START = dt.datetime(2026, 5, 20)


def _wait_for(predicate: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("not within the time allowed")


@pytest.mark.timeout(180)
def test_the_collector_analyses_what_it_stores_and_serves_the_events(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", analysis_dir=tmp_path / "analysis", analyse_every=0.5
    )
    with thread_server(settings) as running:
        client = running.client()
        items = [
            {"idempotency_key": f"probe-az1.{n}", "measurement": m}
            for n, m in enumerate(story(START, 64, 6))
        ]
        answer = client.post("/api/v1/submit", {"measurements": items})
        assert {r["status"] for r in answer.json()["results"]} == {"stored"}

        def events() -> list[dict[str, Any]]:
            page = client.get("/api/v1/events?level=network")
            return page.json()["results"] if page.status == 200 else []

        found = _wait_for(events)
        assert {(e["probe_asn"], e["function"]) for e in found} == {
            ("AS64512", "voice"),
            ("AS64512", "video"),
        }
        verdicts = client.get("/api/v1/verdicts?function=voice&limit=1000").json()["results"]
        assert len(verdicts) == 70 and all(v["probe_tag"] == "probe-az1" for v in verdicts)
        analyser = running.app.state.analyser
        _wait_for(lambda: analyser.measurements)  # the pass's exit, as its thread read it
        assert analyser.measurements == 70 and analyser.passes >= 1
        client.close()
    assert not analyser._thread.is_alive()


def test_a_failing_pass_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = Schedule(tmp_path / "data", tmp_path / "out", every=0.05)
    fails = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    analyser = Analyser(schedule, command=fails)
    with caplog.at_level(logging.WARNING, logger="msgwatch.collector.analyser"):
        analyser.start()
        _wait_for(lambda: analyser.failures >= 2, timeout=60)
        analyser.stop()
    assert analyser.passes == 0 and not analyser._thread.is_alive()
    assert "the analysis pass failed (status 3): boom" in caplog.text


def test_a_pass_that_cannot_start_is_a_failure_too(tmp_path: Path) -> None:
    schedule = Schedule(tmp_path / "data", tmp_path / "out", every=60)
    analyser = Analyser(schedule, command=[str(tmp_path / "no-such-program")])
    assert analyser.run_once() is None and analyser.failures == 1


def test_stop_ends_a_running_pass(tmp_path: Path) -> None:
    schedule = Schedule(tmp_path / "data", tmp_path / "out", every=60)
    marker = tmp_path / "started"
    slow = [sys.executable, "-c",
            f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(300)"]  # fmt: skip
    analyser = Analyser(schedule, command=slow)
    analyser.start()
    # the child may touch the marker before the analyser's thread has stored its Popen
    _wait_for(lambda: marker.exists() and analyser._process is not None, timeout=60)
    process = analyser._process
    assert process is not None
    analyser.stop(grace=20)
    assert not analyser._thread.is_alive() and process.poll() is not None
    assert analyser.passes == 0


def test_the_schedule_runs_msgwatch_analyse_on_the_archive(tmp_path: Path) -> None:
    schedule = Schedule(tmp_path / "data", tmp_path / "out", every=60, bucket_seconds=600,
                        database="postgresql://db/x")  # fmt: skip
    command = schedule.command()
    assert command[1:5] == ["-m", "msgwatch", "analyse", str(tmp_path / "out")]
    joined = " ".join(command)
    assert f"--archive {tmp_path / 'data'}" in joined and "--bucket 600" in joined
    assert "--json" in command and "--database postgresql://db/x" in joined
    assert describe({"new_pass": False, "pass_number": 4}) == (
        "analysis: nothing new, pass 4 stands"
    )


def test_serve_options_are_checked(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from msgwatch.cli.main import cli

    base = ["collector", "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"]
    alone = CliRunner().invoke(cli, [*base, "--analyse-every", "60"])
    assert alone.exit_code == 2 and "--analyse-every needs --analysis-dir" in alone.output
    bucket = CliRunner().invoke(
        cli, [*base, "--analysis-dir", str(tmp_path / "a"), "--analysis-bucket", "1y"]
    )
    assert bucket.exit_code == 2 and "--analysis-bucket" in bucket.output
    assert not (tmp_path / "data").exists()

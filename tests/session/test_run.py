"""The session: ``run_once`` measures, spools, writes and submits, and returns one report;
everything is checked first, and each failure carries its exit status."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.session import errors
from msgwatch.session.errors import SessionError
from msgwatch.session.options import RunOptions
from msgwatch.session.run import RunReport, prepare, run_once
from msgwatch.session.schedule import run_lock
from msgwatch.spool.spool import Spool
from tests.format.check import assert_conforms
from tests.spool import fake_collector, small_catalogue


def _options(tmp_path: Path, **changes: object) -> RunOptions:
    catalogue = tmp_path / "cat"
    if not catalogue.exists():
        small_catalogue(catalogue)
    options = RunOptions(
        catalogue=str(catalogue),
        timeout=0.5,
        output=str(tmp_path / "out" / "m.jsonl"),
        state_dir=str(tmp_path / "state"),
        submit=False,
        probe_asn="AS64500",
        probe_cc="ZZ",
    )
    return replace(options, **changes)  # type: ignore[arg-type]


def test_run_once_reports_spools_and_writes(tmp_path: Path) -> None:
    report = run_once(_options(tmp_path))
    assert isinstance(report, RunReport)
    [run] = report.runs
    assert run.input == "svc" and run.measured
    # the verdicts are the reader side's, judged from the measurement
    assert report.verdicts == judge(run.measurement)
    assert [(v["function"], v["verdict"], v["mechanism"]) for v in report.verdicts] == [
        ("text", "inconclusive", "tcp.refused"),
        ("voice", "inconclusive", "udp.refused"),
    ]
    # the output file, made with its missing directory, holds what the report holds
    assert report.output == tmp_path / "out" / "m.jsonl"
    written = [json.loads(line) for line in report.output.read_text().splitlines()]
    assert written == report.measurements
    assert_conforms(written)
    # the spool holds it, pending (nothing was submitted)
    assert report.spool == {"state_dir": str(tmp_path / "state"), "spooled": 1, "pending": 1}
    assert Spool(tmp_path / "state").pending_count() == 1
    assert report.submission is None and report.warnings == []
    assert report.sent == run.measurement["test_keys"]["msgwatch_bytes"]["sent"]
    assert (report.network.asn, report.network.asn_source) == ("AS64500", "given")
    assert set(report.run) == {"started_at", "finished_at"}
    data = report.to_json()
    keys = {"verdicts", "output", "bytes", "budget_mb", "spool", "submission", "run", "network"}
    assert set(data) == keys
    assert data["network"]["probe_asn"] == "AS64500"


def test_run_once_submits_what_it_spooled(tmp_path: Path) -> None:
    with fake_collector() as fake:
        report = run_once(_options(tmp_path, submit=True, collectors=(fake.url,)))
    assert report.submission is not None and report.submission["stored"] == 1
    assert report.spool["pending"] == 0
    [stored] = [v["measurement"] for v in fake.stored.values()]
    assert [stored] == report.measurements


@pytest.mark.parametrize(
    ("changes", "code", "option"),
    [
        ({"services": ("nope",)}, errors.CATALOGUE, None),
        ({"functions": ("fax",)}, errors.USAGE, "--functions"),
        ({"probe_addresses": ("not-an-address",)}, errors.USAGE, "--probe-ip"),
        ({"submit": True, "collectors": ("ftp://x",)}, errors.USAGE, "--collector"),
        ({"catalogue": "/nonexistent/catalogue"}, errors.CATALOGUE, None),
    ],
)
def test_bad_options_stop_before_anything_runs(
    tmp_path: Path, changes: dict[str, object], code: int, option: str | None
) -> None:
    with pytest.raises(SessionError) as caught:
        prepare(_options(tmp_path, **changes))
    assert (caught.value.code, caught.value.option) == (code, option)
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def test_unknown_service_names_the_closest(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match=r"did you mean svc\?"):
        prepare(_options(tmp_path, services=("svd",)))


def test_call_tests_need_consent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    options = _options(tmp_path, helper="127.0.0.1")
    with pytest.raises(SessionError, match="need consent") as nobody:
        prepare(options)  # nobody to ask
    assert nobody.value.code == errors.ENVIRONMENT
    asked: list[str] = []

    def refuse(explanation: str) -> bool:
        asked.append(explanation)
        return False

    with pytest.raises(SessionError, match="no consent"):
        prepare(options, ask=refuse)
    assert asked and "calls" in asked[0]
    prepare(options, ask=lambda _text: True)  # a yes is recorded ...
    prepare(options)  # ... and not asked again
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-config"))
    prepare(replace(options, assume_yes=True))  # unattended: never asked


def test_a_storage_failure_says_where_the_measurements_are(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the output's directory should be")
    with pytest.raises(SessionError) as caught:
        run_once(_options(tmp_path, output=str(tmp_path / "file" / "m.jsonl")))
    assert caught.value.code == errors.OUTPUT
    assert "the measurements are safe in the spool" in caught.value.message
    assert Spool(tmp_path / "state").pending_count() == 1


def test_run_once_waits_for_the_lock_and_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state"
    told: list[Path] = []
    with run_lock(state, wait=True):
        done: list[RunReport] = []
        worker = threading.Thread(
            target=lambda: done.append(run_once(_options(tmp_path), on_wait=told.append))
        )
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not done  # waiting, not measuring
    worker.join(30)
    assert told == [state / "run.lock"] and len(done) == 1


def test_repeat_runs_and_skips_when_locked(tmp_path: Path) -> None:
    session = prepare(_options(tmp_path))
    reports: list[RunReport] = []
    skipped: list[int] = []

    def repeat(count: int) -> int:
        return session.repeat(
            every=0.01,
            jitter=0,
            wait=lambda _s: False,
            count=count,
            on_report=reports.append,
            on_skip=skipped.append,
        )

    ran = repeat(2)
    assert ran == 2 and [r.run["index"] for r in reports] == [0, 1] and skipped == []
    with run_lock(tmp_path / "state", wait=True):
        ran = repeat(1)
    assert ran == 0 and skipped == [0]
    assert Spool(tmp_path / "state").pending_count() == 2


def test_a_fenced_service_is_written_and_reported_never_spooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "198.18.0.0/15")  # not the catalogue's 127.x
    report = run_once(_options(tmp_path))
    [run] = report.runs
    assert not run.measured
    assert report.warnings == ["svc: not spooled (the fence refused a destination)"]
    assert report.spool["spooled"] == 0 and report.spool["pending"] == 0
    assert [json.loads(line) for line in report.output.read_text().splitlines()] == [
        run.measurement
    ]

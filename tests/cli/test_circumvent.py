"""``msgwatch circumvent`` and ``msgwatch run --circumvention``: options, errors, the report (the
run itself is a stand-in here; tests/circumvention and tests/lab/circumvention run it for real)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from msgwatch.circumvention.model import Entry, Run
from msgwatch.cli.main import cli
from msgwatch.session import circumvent as S
from msgwatch.session.errors import SessionError
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

    def fake_build(run: Run, ctx: Any, started: Any, info: Any) -> dict[str, Any]:
        return {"test_name": "msgwatch_circumvention", "input": run.entry.name,
                "test_keys": {"failure": run.failure}}  # fmt: skip

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setattr(S, "_build", fake_build)
    monkeypatch.setattr(S, "judged", lambda ms: [v for m in ms for v in judge(m)])
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


def test_consent_text_names_the_catalogue_and_outside_lookups() -> None:
    from msgwatch.session.consent import CIRCUMVENTION

    text = " ".join(CIRCUMVENTION.text.split())
    assert "public Tor directory authorities and the default obfs4 bridges" in text
    assert "--no-catalogue-entries" in text and "outside the tunnels" in text


def test_catalogue_entries_read_checked_and_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1: the session reads the right module and every entry passes its transport's check;
    without a file, the catalogue's entries are what runs (b19d735: "no circumvention entries to
    test", always)."""
    entries = S.catalogue_entries()
    assert all(isinstance(e, Entry) for e in entries)
    assert [e.name for e in entries[:2]] == ["tor", "tor-reach"]
    assert {e.type for e in entries} == {"tor", "tor_reach", "obfs4"}
    options = S.CircumventOptions(helper="198.18.3.10", services=(), assume_yes=True)
    prepared = S.prepare(options)
    assert prepared.entries == entries
    assert prepared.warnings == [  # the tests' fence: real endpoints are refused, and it says so
        f"the fence refuses {len(entries)} of the catalogue's entries (public Tor endpoints): not "
        "measured; --no-catalogue-entries leaves them out"]  # fmt: skip
    monkeypatch.delenv("MSGWATCH_ALLOWED_NETWORKS")
    assert S.prepare(options).warnings == []
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,198.18.0.0/15")
    mine = write(tmp_path, [{**PROXY, "name": "tor"}])
    merged = S.prepare(S.CircumventOptions(**{**options.__dict__, "file": mine})).entries
    assert merged[0].type == "socks5" and len(merged) == len(entries)


def test_a_catalogue_that_fails_a_check_is_a_catalogue_error(tmp_path: Path) -> None:
    from msgwatch.catalogue.circumvention import default_path, load
    from msgwatch.session.errors import CATALOGUE, SessionError

    path = tmp_path / "circumvention.toml"
    cert = load().bridge[0].cert
    path.write_text(default_path().read_text().replace(cert, cert[:64], 1))
    with pytest.raises(SessionError) as info:
        S.catalogue_entries(path)
    assert info.value.code == CATALOGUE and "default-obfs4-1" in info.value.message
    path.write_text("[[[")
    with pytest.raises(SessionError) as info:
        S.catalogue_entries(path)
    assert info.value.code == CATALOGUE


def _prepared(tmp_path: Path, **over: Any) -> S.Prepared:
    options = S.CircumventOptions(helper="198.18.3.10", services=(), assume_yes=True,
                                  state_dir=str(tmp_path / "state"),
                                  output=str(tmp_path / "out.jsonl"), **over)  # fmt: skip
    entries = [
        Entry("p1", "socks5", "198.18.4.30", 1080),
        Entry("p2", "socks5", "198.18.4.31", 1080),
    ]
    return S.Prepared(options, entries, [], [])


async def _refused(prepared: S.Prepared, ctx: Any, budget: Any, on_done: Any) -> list[Run]:
    runs = []
    for entry in prepared.entries:
        run = Run(entry, Trace())
        run.fail("connect", "connection_refused")
        runs.append(run)
    return runs


def test_one_report_id_per_session_and_the_runs_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M7: every measurement of a session shares one report id (b19d735: one each), the main
    run's with ``run_info``; the judge gets the others as peers."""
    monkeypatch.setattr(S, "_run", _refused)
    report = S.run(_prepared(tmp_path))
    ids = {m["report_id"] for m in report.measurements}
    assert len(report.measurements) == 2 and len(ids) == 1
    main = {"report_id": "20261203T100000Z_msgwatch_DE_64500_n1_abcdefghijklmnop",
            "test_start_time": "2026-12-03 10:00:00", "probe_asn": "AS64500",
            "probe_cc": "DE", "annotations": {"catalogue_version": "v1"}}  # fmt: skip
    info = S.run_info_of(main)
    assert info is not None and S.run_info_of({"report_id": "x"}) is None
    report = S.run(_prepared(tmp_path, run_info=info))
    for m in report.measurements:
        assert (m["report_id"], m["probe_cc"], m["probe_asn"]) == (main["report_id"], "DE",
                                                                    "AS64500")  # fmt: skip
        assert m["test_start_time"] == "2026-12-03 10:00:00"


def test_sigterm_stops_the_clients_then_hands_the_signal_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H5: SIGTERM cancels the run; the clients stop (the run's ``finally``) while the work
    directory still exists, the directory goes, the previous handler is back and gets the
    signal; nothing is stored."""
    seen: dict[str, Any] = {}

    async def hangs(prepared: S.Prepared, ctx: Any, budget: Any, on_done: Any) -> list[Run]:
        seen["workdir"] = ctx.workdir
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(30)
        finally:
            seen["stopped_with_workdir"] = ctx.workdir.exists()
        return []

    got: list[int] = []

    def previous(signum: int, frame: Any) -> None:
        got.append(signum)

    monkeypatch.setattr(S, "_run", hangs)
    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(SessionError, match="stopped by SIGTERM"):
            S.run(_prepared(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen["stopped_with_workdir"] is True and not seen["workdir"].exists()
    assert got == [signal.SIGTERM]
    assert not (tmp_path / "out.jsonl").exists()


def test_sigterm_ends_the_process_as_asked_after_the_cleanup(tmp_path: Path) -> None:
    """With the default handler, the process ends by SIGTERM, after its clients stopped."""
    script = tmp_path / "term.py"
    script.write_text(
        "import asyncio, os, signal, sys\n"
        "from msgwatch.circumvention.model import Entry\n"
        "from msgwatch.session import circumvent as S\n"
        "async def hangs(prepared, ctx, budget, on_done):\n"
        "    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)\n"
        "    try:\n"
        "        await asyncio.sleep(30)\n"
        "    finally:\n"
        "        print('client stopped', flush=True)\n"
        "S._run = hangs\n"
        "options = S.CircumventOptions(helper='198.18.3.10', services=(), assume_yes=True)\n"
        "S.run(S.Prepared(options, [Entry('p', 'socks5', '198.18.4.30', 1080)], [], []))\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert done.stdout == "client stopped\n"


def _fake_main_run(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """The main run stands in: one service row, one measurement with the run's report id."""
    from msgwatch.probe.network import Network
    from msgwatch.session import run as R

    def run_once(self: Any, **kwargs: Any) -> Any:
        calls.append("main run")
        measurement = {"report_id": "20261203T100000Z_msgwatch_ZZ_0_n1_abcdefghijklmnop",
                       "test_start_time": "2026-12-03 10:00:00", "probe_asn": "AS0",
                       "probe_cc": "ZZ"}  # fmt: skip
        verdict: dict[str, Any] = {"service": "whatsapp", "function": "text", "verdict": "ok",
                                   "mechanism": None, "evidence": {}}  # fmt: skip
        spool = {"state_dir": "s", "spooled": 1, "pending": 1}
        return R.RunReport(
            runs=[SimpleNamespace(measurement=measurement)],  # type: ignore[list-item]
            verdicts=[verdict],
            output=Path("main.jsonl"),
            sent=1,
            received=1,
            budget_mb=1.0,
            spool=spool,
            submission=None,
            run={"started_at": "a", "finished_at": "b"},
            network=Network(),
        )

    monkeypatch.setattr(R.Session, "run_once", run_once)


RUN = ["run", "--services", "whatsapp", "--helper", "198.18.3.10", "--probe-asn", "AS0",
       "--probe-cc", "ZZ", "--no-submit"]  # fmt: skip


def test_run_circumvention_one_document_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M8: ``run --circumvention --json`` prints one document, the tunnels' rows in its
    ``verdicts`` with the services'; the table shows both; the report id is the run's."""
    calls: list[str] = []
    _fake_main_run(monkeypatch, calls)
    infos: list[Any] = []

    def fake_build(run: Run, ctx: Any, started: Any, info: Any) -> dict[str, Any]:
        infos.append(info)
        return {"test_name": "msgwatch_circumvention", "input": run.entry.name,
                "report_id": info.report_id, "test_keys": {"failure": run.failure}}  # fmt: skip

    monkeypatch.setattr(S, "_run", _refused)
    monkeypatch.setattr(S, "_build", fake_build)
    monkeypatch.setattr(S, "judged", lambda ms: [v for m in ms for v in judge(m)])
    path = write(tmp_path, [PROXY])
    args = [*RUN, "--circumvention", path, "--yes", "--output", str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    data = json.loads(lines[0])
    rows = [(v["service"], v["function"]) for v in data["verdicts"]]
    assert rows[0] == ("whatsapp", "text") and rows[-1] == ("my-proxy", "tunnel")
    assert ("tor", "tunnel") in rows  # the catalogue's entries come with FILE's
    assert data["circumvention"]["entries"][-1]["name"] == "my-proxy"
    assert "verdicts" not in data["circumvention"]
    assert {i.report_id for i in infos} == {"20261203T100000Z_msgwatch_ZZ_0_n1_abcdefghijklmnop"}
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert table.output.count("Verdicts (") == 1 and "Circumvention verdicts" not in table.output
    assert "my-proxy" in table.output and "whatsapp" in table.output


def test_run_circumvention_checked_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M8: a bad file, or no consent to circumvention tests, stops ``run --circumvention``
    before the main run sends anything (b19d735: only after the whole run)."""
    from msgwatch.session.consent import record_consent

    calls: list[str] = []
    _fake_main_run(monkeypatch, calls)
    bad = write(tmp_path, [{**PROXY, "port": 0}])
    result = CliRunner().invoke(cli, [*RUN, "--circumvention", bad, "--yes"])
    assert result.exit_code == 2 and "transport[0]" in result.output
    record_consent(key="call_tests")  # the run's own consent, not the tunnels'
    good = write(tmp_path, [PROXY])
    result = CliRunner().invoke(cli, [*RUN, "--circumvention", good])
    assert result.exit_code == 5 and "circumvention tests need consent" in result.output
    assert calls == []


def test_run_circumvention_error_after_the_run_is_one_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msgwatch.session.errors import OUTPUT

    calls: list[str] = []
    _fake_main_run(monkeypatch, calls)

    def broken(prepared: Any, **kwargs: Any) -> Any:
        raise SessionError("cannot write the circumvention measurements", OUTPUT)

    monkeypatch.setattr(S, "run", broken)
    path = write(tmp_path, [PROXY])
    result = CliRunner().invoke(cli, [*RUN, "--circumvention", path, "--yes", "--json"])
    assert result.exit_code == OUTPUT and calls == ["main run"]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["error"]["code"] == "output" and data["verdicts"][0]["service"] == "whatsapp"

"""``msgwatch analyse`` and ``msgwatch events`` (issue 11, item 6): real passes over real lab
measurements (a network's calls working, then blocked), the JSON envelope, the tables, bad options."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from msgwatch.cli.analyse import parse_bucket, parse_moment
from msgwatch.cli.main import cli
from tests.collector.analysis_data import LAB, story, write_jsonl

START = dt.datetime(2026, 5, 20)
QUIET, BLOCKED = 64, 6  # the detector learns a series from its first 60 measurements
ONSET = (START + dt.timedelta(hours=QUIET)).strftime("%Y-%m-%d %H:%M")


def _json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    data: dict[str, Any] = json.loads(lines[0])
    return data


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL file: Skype on AS64512, calls working for 64 hours, then blocked for 6."""
    measurements = story(START, QUIET, BLOCKED)
    return write_jsonl(tmp_path_factory.mktemp("story") / "story.jsonl", measurements)


@pytest.fixture(scope="module")
def analysed(blocked: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("out") / "analysis"
    args = ["analyse", str(out), "--jsonl", str(blocked), "--workers", "1", "--json"]
    return out, CliRunner().invoke(cli, args)


def test_bucket_sizes() -> None:
    assert [parse_bucket(t) for t in ("1h", "10m", "30s", "45", "2d", " 1H ")] == [
        3600, 600, 30, 45, 172800, 3600
    ]  # fmt: skip
    for bad in ("0", "0s", "", "1y", "-1", "1.5h", "h"):
        with pytest.raises(click.BadParameter):
            parse_bucket(bad)


def test_moments_are_naive_utc() -> None:
    assert parse_moment("2026-05-20", "--since") == dt.datetime(2026, 5, 20)
    assert parse_moment("2026-05-20T12:00+02:00", "--since") == dt.datetime(2026, 5, 20, 10)
    assert parse_moment(None, "--since") is None
    with pytest.raises(click.BadParameter):
        parse_moment("yesterday", "--since")


def test_analyse_prints_the_pass_report_as_json(analysed: tuple[Path, Result]) -> None:
    out, result = analysed
    report = _json(result)
    assert (report["command"], report["status"], report["error"]) == ("analyse", 0, None)
    assert report["pass_number"] == 1 and report["new_pass"] is True
    assert report["items"] == report["measurements"] == QUIET + BLOCKED
    assert report["verdicts"] == (QUIET + BLOCKED) * 4  # Skype: voice, video, registration, web
    assert report["problems"] == 0 and report["events"] >= 2
    assert (out / "state.json").is_file()


def test_a_second_pass_over_the_same_file_finds_nothing_new(
    analysed: tuple[Path, Result], blocked: Path
) -> None:
    out, _ = analysed
    again = CliRunner().invoke(cli, ["analyse", str(out), "--jsonl", str(blocked), "--json"])
    report = _json(again)
    assert (report["new_pass"], report["pass_number"], report["items"]) == (False, 1, 0)


def test_the_summary_table_names_skips_and_problems(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(story(START, 1, 0)[0]).encode(),
        b'{"test_name": "dnscheck", "measurement_start_time": "2026-05-20 00:00:00", '
        b'"probe_cc": "AZ", "probe_asn": "AS1", "test_keys": {}}',
        b"not json at all",
    ]
    mixed.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(cli, ["analyse", str(tmp_path / "out"), "--jsonl", str(mixed),
                                      "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert re.search(r"analysed\W+2\b", text), result.stdout  # one of them skipped
    assert re.search(r"aggregate files written\W+1\b", text), result.stdout  # May 2026's
    assert "skipped: unknown_test" in text
    assert f"problem {mixed}:3" in text and "not_json" in text


def test_events_lists_the_blocking_with_its_story(analysed: tuple[Path, Result]) -> None:
    out, _ = analysed
    result = CliRunner().invoke(cli, ["events", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "AS64512" in result.stdout and "skype" in result.stdout
    assert "ongoing" in result.stdout and "udp.dpi_call" in result.stdout
    sentence = f"Skype voice and video calls blocked on AS64512 since {ONSET}"
    assert sentence in " ".join(result.stdout.split())


def test_events_as_json_with_filters(analysed: tuple[Path, Result]) -> None:
    out, _ = analysed
    every = _json(CliRunner().invoke(cli, ["events", str(out), "--json"]))
    assert every["command"] == "events" and every["rules_version"] and every["schema_version"]
    network = [e for e in every["events"] if e["level"] == "network"]
    assert {(e["probe_asn"], e["service"], e["function"]) for e in network} == {
        ("AS64512", "skype", "voice"),
        ("AS64512", "skype", "video"),
    }
    assert all(e["start"] == f"{ONSET}:00" and e["ongoing"] for e in network)
    voice = _json(CliRunner().invoke(cli, ["events", str(out), "--json", "--function", "voice",
                                           "--asn", "64512", "--level", "network"]))  # fmt: skip
    assert [e["function"] for e in voice["events"]] == ["voice"]
    elsewhere = _json(CliRunner().invoke(cli, ["events", str(out), "--json", "--cc", "ir"]))
    assert elsewhere["events"] == []
    before = _json(CliRunner().invoke(cli, ["events", str(out), "--json", "--until", ONSET]))
    assert before["events"] == []  # every event started then


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["analyse", "OUT"], "name at least one source"),
        (["analyse", "OUT", "--jsonl", "LAB", "--ooni-cc", "IR"], "need --ooni"),
        (["analyse", "OUT", "--jsonl", "LAB", "--bucket", "0"], "is not a bucket"),
        (["analyse", "OUT", "--jsonl", "LAB", "--bucket", "366d"], "1 s to 365 days"),
        (["analyse", "OUT", "--jsonl", "LAB", "--engine", "hadoop"], "hadoop"),
        (["analyse", "OUT", "--jsonl", "LAB", "--workers", "0"], "--workers"),
        (["analyse", "OUT", "--jsonl", "NOWHERE"], "does not exist"),
        (["events", "OUT", "--cc", "IRN"], "two letters"),
        (["events", "OUT", "--since", "last week"], "YYYY-MM-DD"),
        (["events", "OUT", "--level", "planet"], "planet"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    names = {"OUT": str(tmp_path / "out"), "LAB": str(LAB), "NOWHERE": str(tmp_path / "x")}
    args = [names.get(a, a) for a in args] + ["--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    envelope = json.loads(result.stdout.strip().splitlines()[-1])
    assert envelope["error"]["code"] == "usage"
    assert not (tmp_path / "out" / "state.json").exists()


def test_events_without_an_analysis_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["events", str(tmp_path / "nothing"), "--json"])
    assert result.exit_code == 2
    assert "msgwatch analyse" in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "usage"


def test_spark_without_pyspark_is_an_environment_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msgwatch.analysis.spark

    def missing(*_: Any, **__: Any) -> Any:
        raise ModuleNotFoundError("No module named 'pyspark'", name="pyspark")

    monkeypatch.setattr(msgwatch.analysis.spark, "run_spark", missing)
    args = ["analyse", str(tmp_path / "out"), "--jsonl", str(LAB), "--engine", "spark", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 5, result.output
    assert "pyspark" in json.loads(result.stdout)["error"]["message"]


def test_ooni_since_and_until_are_the_first_and_last_days_read(tmp_path: Path) -> None:
    """``--ooni-until`` is the last day read (as on the Spark engine), not the first left out."""
    real = Path("/work/shared/ooni-samples/real.jsonl")  # not in the repository
    if not real.is_file():
        pytest.skip(f"{real} is absent")
    from tests.analysis.test_inputs_ooni import write_bucket

    measurements = [json.loads(line) for line in real.read_bytes().splitlines() if line.strip()]
    write_bucket(tmp_path / "ooni", measurements)
    day = "2022-11-10"  # the sample's busiest day
    on_day = [m for m in measurements if m["measurement_start_time"].startswith(day)]
    args = ["analyse", str(tmp_path / "out"), "--ooni", str(tmp_path / "ooni"), "--workers", "1"]
    report = _json(
        CliRunner().invoke(cli, [*args, "--ooni-since", day, "--ooni-until", day, "--json"])
    )
    assert report["items"] == len(on_day) > 1
    last = ["analyse", str(tmp_path / "out2"), "--ooni", str(tmp_path / "ooni"), "--workers", "1"]
    later = [m for m in measurements if m["measurement_start_time"][:10] >= day]
    report = _json(
        CliRunner().invoke(
            cli, [*last, "--ooni-since", day, "--ooni-until", "9999-12-31", "--json"]
        )
    )
    assert report["items"] == len(later) > len(on_day)  # the last day there is: no overflow

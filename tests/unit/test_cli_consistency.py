"""One command line (issue 9, item 18): the ``--json`` envelope, one ``--output`` rule, "did you
mean", shell completion, and ``run --config FILE``."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from msgwatch.cli.main import cli
from tests.spool import small_catalogue

ENVELOPE = {"command", "status", "error"}


def _envelope(result: Result) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.output
    data: dict[str, Any] = json.loads(lines[0])
    assert set(data) >= ENVELOPE
    assert data["status"] == result.exit_code
    return data


def _run(tmp_path: Path, *extra: str) -> Result:
    catalogue = tmp_path / "cat"
    if not catalogue.exists():
        small_catalogue(catalogue)
    args = ["run", "--catalogue", str(catalogue), "--timeout", "0.5", "--no-submit",
            "--state-dir", str(tmp_path / "state"), *extra]  # fmt: skip
    return CliRunner().invoke(cli, args)


def _complete(words: str) -> list[str]:
    env = {"_MSGWATCH_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}  # fmt: skip
    result = CliRunner().invoke(cli, [], prog_name="msgwatch", env=env)
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


# -- the envelope ---------------------------------------------------------------------------------


def test_every_json_answer_has_the_envelope(tmp_path: Path) -> None:
    runner = CliRunner()
    answers = {
        "run": _run(tmp_path, "--json", "--output", str(tmp_path / "m.jsonl")),
        "catalogue list": runner.invoke(cli, ["catalogue", "list", "--json"]),
        "catalogue show": runner.invoke(cli, ["catalogue", "show", "signal", "--json"]),
        "spool status": runner.invoke(
            cli, ["spool", "status", "--json", "--state-dir", str(tmp_path / "state")]
        ),
        "lab list": runner.invoke(cli, ["lab", "list", "--json"]),
    }
    for command, result in answers.items():
        data = _envelope(result)
        assert (data["command"], data["status"], data["error"]) == (command, 0, None)
    assert [s["service"] for s in _envelope(answers["catalogue list"])["services"]]
    assert _envelope(answers["lab list"])["scenarios"][0]["scenario"]
    assert _envelope(answers["run"])["output"] == str(tmp_path / "m.jsonl")


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        (["run", "--services", "whatsap", "--json"], 3, "catalogue"),
        (["run", "--resolver", "x:y", "--json"], 2, "usage"),
        (["run", "--no-such-option", "--json"], 2, "usage"),
        (["catalogue", "show", "telegam", "--json"], 3, "catalogue"),
        (["lab", "run", "az-2071", "--json"], 2, "usage"),
    ],
)
def test_failures_answer_with_the_envelope_too(args: list[str], status: int, code: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == status, result.output
    data = _envelope(result)
    assert data["error"]["code"] == code and data["error"]["message"]
    assert data["command"] == " ".join(a for a in args[:2] if not a.startswith("-"))


# -- did you mean -------------------------------------------------------------------------------


def test_misspelt_names_get_a_suggestion() -> None:
    runner = CliRunner()
    service = runner.invoke(cli, ["run", "--services", "whatsap,signal,telegarm"])
    assert service.exit_code == 3
    assert "did you mean whatsapp, telegram?" in " ".join(service.stderr.split())
    show = runner.invoke(cli, ["catalogue", "show", "telegam"])
    assert show.exit_code == 3 and "did you mean telegram?" in show.stderr
    scenario = runner.invoke(cli, ["lab", "run", "az-2071"])
    assert scenario.exit_code == 2 and "did you mean az-2017" in scenario.stderr
    function = runner.invoke(cli, ["run", "--functions", "text,vioce"])
    assert function.exit_code == 2 and "did you mean voice?" in function.stderr
    nothing = runner.invoke(cli, ["catalogue", "show", "qqqqqqqq"])
    assert nothing.exit_code == 3 and "did you mean" not in nothing.stderr


# -- shell completion ---------------------------------------------------------------------------


def test_completion_covers_services_and_scenarios(tmp_path: Path) -> None:
    assert _complete("msgwatch run --services tele") == ["telegram"]
    assert _complete("msgwatch run --services whatsapp,tele") == ["whatsapp,telegram"]
    assert "whatsapp" in _complete("msgwatch catalogue show ")
    assert sorted(_complete("msgwatch lab run az-")) == ["az-2017", "az-2017-timeline", "az-2020"]
    assert "baseline" in _complete("msgwatch lab up ")
    own = small_catalogue(tmp_path / "cat")  # --catalogue given first: its services
    assert _complete(f"msgwatch run --catalogue {own} --services ") == ["svc"]


# -- one --output rule --------------------------------------------------------------------------


def test_output_is_the_file_or_a_directory_to_put_it_in(tmp_path: Path) -> None:
    named = _run(tmp_path, "--json", "--output", str(tmp_path / "named.jsonl"))
    assert _envelope(named)["output"] == str(tmp_path / "named.jsonl")
    existing = tmp_path / "existing"
    existing.mkdir()
    inside = _envelope(_run(tmp_path, "--json", "--output", str(existing)))["output"]
    assert Path(inside).parent == existing and Path(inside).name.startswith("msgwatch-")
    fresh = _envelope(_run(tmp_path, "--json", "--output", f"{tmp_path / 'fresh'}/"))["output"]
    assert Path(fresh).parent == tmp_path / "fresh" and Path(fresh).suffix == ".jsonl"
    for path in (tmp_path / "named.jsonl", Path(inside), Path(fresh)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text())["test_name"] == "msgwatch_service"


# -- run --config -------------------------------------------------------------------------------


def test_a_config_file_gives_the_options_and_the_command_line_wins(tmp_path: Path) -> None:
    catalogue = small_catalogue(tmp_path / "cat")
    config = tmp_path / "probe.toml"
    config.write_text(
        f'catalogue = "{catalogue}"\nservices = ["svc"]\ntimeout = 0.5\n'
        f'state-dir = "{tmp_path / "state"}"\noutput = "{tmp_path / "from-config.jsonl"}"\n'
        'no-submit = true\njson = true\nprobe-cc = "AZ"\nprobe_asn = "28787"\n'
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    data = _envelope(result)
    assert data["output"] == str(tmp_path / "from-config.jsonl")
    assert data["spool"]["state_dir"] == str(tmp_path / "state")
    measurement = json.loads((tmp_path / "from-config.jsonl").read_text())
    assert (measurement["probe_cc"], measurement["probe_asn"]) == ("AZ", "AS28787")
    override = tmp_path / "from-command-line.jsonl"
    again = CliRunner().invoke(cli, ["run", "--config", str(config), "--output", str(override),
                                     "--probe-cc", "GE"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert _envelope(again)["output"] == str(override)
    assert json.loads(override.read_text())["probe_cc"] == "GE"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('servcies = ["svc"]\n', ["'servcies'", "did you mean services?"]),
        ('timeout = "soon"\n', ["timeout", "soon"]),
        ("no-submit = 1\n", ["'no-submit' must be true or false"]),
        ("collector = [1, 2]\n", ["'collector' must be a string or a list of strings"]),
        ("timeout = \n", ["not TOML"]),
        ('config = "x"\n', ["'config' is not an option"]),
    ],
)
def test_a_bad_config_file_is_a_usage_error(tmp_path: Path, body: str, words: list[str]) -> None:
    config = tmp_path / "probe.toml"
    config.write_text(body)
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--json"])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert not (tmp_path / "state").exists()

"""contrib/systemd: every ExecStart is a command line the CLI accepts, the paths agree with the
code's defaults, the hardening is there, and (when systemd-analyze exists) the units verify."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from msgwatch.cli.main import cli
from msgwatch.spool.spool import ROOT_STATE_DIR

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "DynamicUser": "yes",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value, in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def commented_exec_starts(path: Path) -> list[str]:
    return [
        line.lstrip("#").partition("=")[2]
        for line in path.read_text().splitlines()
        if line.startswith("#ExecStart=")
    ]


def check_command_line(command: str) -> list[str]:
    """The arguments after the program, parsed by the real click commands (no execution)."""
    argv = shlex.split(command.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/x"))
    assert argv[0].startswith("/") and argv[0].endswith("/msgwatch"), argv[0]
    args = argv[1:]
    context = click.Context(cli, info_name="msgwatch")
    command_obj: click.Command = cli
    path: list[str] = []
    rest = list(args)
    while isinstance(command_obj, click.Group):
        name, rest = rest[0], rest[1:]
        sub = command_obj.get_command(context, name)
        assert sub is not None, f"no command {name!r}"
        path.append(name)
        context = click.Context(sub, info_name=name, parent=context)
        command_obj = sub
    command_obj.make_context(path[-1], rest, parent=context.parent)  # parses, converts values
    helptext = CliRunner().invoke(cli, [*path, "--help"]).output
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in helptext, f"{arg} not in `msgwatch {' '.join(path)} --help`"
    return args


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_probe_service() -> None:
    unit = parse_unit(UNITS / "msgwatch-probe.service")
    service = unit["Service"]
    assert one(service, "Type") == "oneshot"
    args = check_command_line(one(service, "ExecStart"))
    assert args[:2] == ["run", "--yes"] and "--collector" in args
    state = Path("/var/lib") / one(service, "StateDirectory")
    assert state == ROOT_STATE_DIR == Path(option(args, "--state-dir"))
    assert Path(option(args, "--output")).parent == state
    assert Path(one(service, "WorkingDirectory")) == state
    for key, value in HARDENING.items():
        assert one(service, key) == value, key
    assert "User" not in service  # a dynamic user, never root
    for command in commented_exec_starts(UNITS / "msgwatch-probe.service"):
        check_command_line(command)  # the documented token variant is valid too


def test_probe_timer() -> None:
    timer = parse_unit(UNITS / "msgwatch-probe.timer")["Timer"]
    assert one(timer, "OnUnitActiveSec") == "30min"
    assert one(timer, "RandomizedDelaySec")
    assert one(timer, "Persistent") == "true"
    assert one(timer, "Unit") == "msgwatch-probe.service"
    assert (UNITS / one(timer, "Unit")).exists()


def test_collector_service() -> None:
    service = parse_unit(UNITS / "msgwatch-collector.service")["Service"]
    args = check_command_line(one(service, "ExecStart"))
    assert args[:2] == ["collector", "serve"]
    data = Path("/var/lib") / one(service, "StateDirectory")
    assert Path(option(args, "--data-dir")) == data == Path(one(service, "WorkingDirectory"))
    assert not data.is_relative_to(ROOT_STATE_DIR)  # never inside the probe's state directory
    from msgwatch.collector.settings import default_data_dir

    if os.geteuid() == 0 and "MSGWATCH_COLLECTOR_DIR" not in os.environ:
        assert default_data_dir() == data  # the unit and the code agree
    for key, value in HARDENING.items():
        assert one(service, key) == value, key


def test_a_bad_option_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        check_command_line("/usr/bin/msgwatch run --yes --colector https://x")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    program = str(Path(sys.executable).parent / "msgwatch")
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/msgwatch/bin/msgwatch", program)
        (tmp_path / unit.name).write_text(text)
    names = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr

"""The command line's shared layer (msgwatch.cli.common): no import cycle, defaults from the
library, session errors mapped to exit statuses."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import msgwatch.cli
from msgwatch.cli.common import EXIT_OUTPUT, EXIT_USAGE, fail
from msgwatch.cli.helper import default_ports, parse_ports
from msgwatch.cli.main import cli
from msgwatch.session import errors
from msgwatch.wire.helper_api import CALL_PORTS, CONTROL_PORT

CLI_DIR = Path(msgwatch.cli.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_command_module_imports_the_assembly() -> None:
    """main.py imports the command modules; none of them imports main.py (no cycle)."""
    modules = [p for p in CLI_DIR.glob("*.py") if p.name != "main.py"]
    assert len(modules) > 5
    for path in modules:
        assert "msgwatch.cli.main" not in _imports(path), path.name


def test_the_helpers_ports_are_written_from_the_wire_contract() -> None:
    text = default_ports()
    assert text == "443,596,3478-3481,4244,5242-5243,7985,7987,8801,10000,19302,40000,50001"
    assert parse_ports(text) == sorted(CALL_PORTS)


def test_lazy_defaults_are_shown_and_used() -> None:
    shown = CliRunner().invoke(cli, ["helper", "serve", "--help"]).output
    flat = " ".join(shown.split())
    assert f"(0: none). [default: {CONTROL_PORT}; 0<=x<=65535]" in flat
    assert f"[default:{default_ports()}]" in "".join(flat.split())  # wrapped mid-word
    params = {p.name: p for p in cli.commands["helper"].commands["serve"].params}  # type: ignore[attr-defined]
    ctx = click.Context(cli)
    assert params["control_port"].get_default(ctx) == CONTROL_PORT
    assert params["udp_ports"].get_default(ctx) == default_ports()


def test_session_errors_become_usage_errors_or_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    usage = fail(errors.option_error("unknown function(s): fax", "--functions"))
    assert isinstance(usage, click.BadParameter) and usage.exit_code == EXIT_USAGE
    assert "--functions" in usage.format_message()
    stop = fail(errors.SessionError("cannot write m.jsonl", errors.OUTPUT))
    assert isinstance(stop, click.exceptions.Exit) and stop.exit_code == EXIT_OUTPUT
    assert "msgwatch: cannot write m.jsonl" in capsys.readouterr().err

"""``msgwatch helper serve`` as a process on loopback: up, answering, down on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import click
import pytest
from click.testing import CliRunner

from msgwatch.cli.helper import parse_ports
from msgwatch.cli.main import cli

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxies from the environment: straight to the helper."""


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_parse_ports() -> None:
    assert parse_ports("3478-3481,8801, 3478") == [3478, 3479, 3480, 3481, 8801]
    assert parse_ports("") == []
    for bad in ("0", "70000", "a", "5-3", "1-2000"):
        with pytest.raises(click.BadParameter):
            parse_ports(bad)


@pytest.mark.parametrize(
    "args",
    [["--allow", "not-a-prefix"], ["--listen", "localhost"], ["--udp-ports", "x"],
     ["--tcp-listen", "127.0.0.1"], ["--udp-ports", "", "--tcp-ports", "", "--control-port", "0"]],
)  # fmt: skip
def test_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["helper", "serve", "--listen", "127.0.0.1", *args])
    assert result.exit_code == 2, result.output


def test_serve_process() -> None:
    control, udp, tcp = _free_port(), _free_port(socket.SOCK_DGRAM), _free_port()
    argv = [sys.executable, "-m", "msgwatch", "helper", "serve", "--listen", "127.0.0.1",
            "--control-port", str(control), "--udp-ports", str(udp), "--tcp-ports", "",
            "--tcp-listen", f"127.0.0.1:{tcp}", "--allow", "127.0.0.0/8"]  # fmt: skip
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    try:
        deadline, health = time.monotonic() + 10, None
        while health is None and time.monotonic() < deadline:
            try:
                with _DIRECT.open(f"http://127.0.0.1:{control}/v1/health", timeout=1) as r:
                    health = json.load(r)
            except OSError:
                time.sleep(0.05)
        assert health is not None and health["mode"] == "lab"
        assert health["listen"] == {"udp": [f"127.0.0.1:{udp}"], "tcp": [f"127.0.0.1:{tcp}"],
                                    "control": [f"127.0.0.1:{control}"]}  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"ping" * 10, ("127.0.0.1", udp))
            assert sock.recv(100) == b"ping" * 10
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"msgwatch helper" in err and b"lab mode" in err


def test_busy_port_is_an_environment_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = CliRunner().invoke(cli, ["helper", "serve", "--listen", "127.0.0.1", "--udp-ports",
                                          str(port), "--tcp-ports", "", "--control-port", "0"])  # fmt: skip
    assert result.exit_code == 5, result.output

"""RunOptions: the one home of ``msgwatch run``'s defaults, each mirror equal to the library's."""

from __future__ import annotations

import inspect
from dataclasses import fields

from msgwatch.cli.main import cli
from msgwatch.probe.runner import RunConfig
from msgwatch.session.options import RunOptions
from msgwatch.session.run import IO_TIMEOUT, run_config
from msgwatch.spool.client import Client

MIRRORS = ("timeout", "replay_seconds", "replay_rounds", "neutral_port", "helper_control_port")
"""RunOptions fields that mirror the RunConfig field of the same name."""


def test_every_mirrored_default_equals_the_librarys() -> None:
    options, config = RunOptions(), RunConfig()
    for name in MIRRORS:
        assert getattr(options, name) == getattr(config, name), name
    client = inspect.signature(Client.__init__).parameters
    assert options.submit_timeout == client["connect_timeout"].default
    assert client["io_timeout"].default == IO_TIMEOUT


def test_default_options_make_the_librarys_default_config() -> None:
    config = run_config(RunOptions(probe_asn="AS0", probe_cc="ZZ"))
    default = RunConfig()
    for name in (*MIRRORS, "concurrency", "helper", "functions", "replay_seed"):
        assert getattr(config, name) == getattr(default, name), name
    assert config.chain == default.chain
    assert config.budget_bytes == int(RunOptions.budget_mb * 1_000_000)


def test_the_run_commands_defaults_are_the_options() -> None:
    params = {p.name: p for p in cli.commands["run"].params}
    options = RunOptions()
    shared = {f.name for f in fields(RunOptions)} & set(params)
    assert {"timeout", "replay_rounds", "neutral_port", "budget_mb", "submit_timeout"} <= shared
    for name in shared:
        if isinstance(params[name].default, int | float):  # not click's "unset"
            assert params[name].default == getattr(options, name), name

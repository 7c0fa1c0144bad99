"""``msgwatch run --config FILE``: what a scheduled probe repeats on every run, in a TOML file.

Each key is the long name of one of ``run``'s options without its dashes (``state-dir``,
``collector``, ``every``; ``state_dir`` is accepted too), with a value of the option's kind::

    services = ["whatsapp", "telegram"]     # or "whatsapp,telegram"; also `functions`
    collector = ["https://collector.example.org"]   # repeatable options take a list
    collector-token-file = "/etc/msgwatch/collector-token"
    state-dir = "/var/lib/msgwatch"
    every = "30m"
    jitter = "5m"
    timeout = 20
    yes = true                              # flags take true or false

Precedence: the command line, then the file, then the environment (``MSGWATCH_COLLECTORS``,
``MSGWATCH_STATE_DIR``), then the built-in defaults. An unknown key, a value of the wrong kind, a
file that is not TOML or larger than 1 MiB is a usage error (exit 2) naming the key; nothing runs.

Mechanism: ``--config`` is an eager option whose callback fills click's ``default_map`` before any
other option is read, so an option given on the command line wins by click's own rules.
"""

from __future__ import annotations

from typing import Any

import click

from msgwatch.session.errors import did_you_mean

MAX_CONFIG_BYTES = 1024 * 1024
LIST_OPTIONS = frozenset({"services", "functions"})
"""Options that take a comma-separated list on the command line: a TOML list is joined."""
NOT_IN_A_FILE = frozenset({"config", "help"})


def _options(command: click.Command) -> dict[str, click.Option]:
    """Config key → option, for every long option of ``command``."""
    found: dict[str, click.Option] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in NOT_IN_A_FILE:
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                key = opt[2:]
                found[key] = param
                found[key.replace("-", "_")] = param
    return found


def _value(key: str, option: click.Option, value: Any) -> Any:
    """The file's value as click's default for ``option``; raises ``click.BadParameter``."""

    def bad(kind: str) -> click.BadParameter:
        return click.BadParameter(f"{key!r} must be {kind}, not {value!r}", param_hint="--config")

    if option.is_flag:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if option.multiple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("a string or a list of strings")
        return items
    if option.name in LIST_OPTIONS and isinstance(value, list):
        if not all(isinstance(i, str) for i in value):
            raise bad("a list of strings")
        return ",".join(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad("a string or a number")
    return value


def read_config(path: str, command: click.Command) -> dict[str, Any]:
    """The ``default_map`` that the file at ``path`` gives ``command``."""
    import tomllib  # here, not at the top: `msgwatch --help` loads this module

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}", param_hint="--config") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise click.BadParameter(f"{path}: larger than 1 MiB", param_hint="--config")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{path}: not TOML: {exc}", param_hint="--config") from exc
    options = _options(command)
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        option = options.get(key)
        if option is None or option.name is None:
            hint = did_you_mean([key], (k for k in options if "_" not in k))
            raise click.BadParameter(
                f"{path}: {key!r} is not an option of `msgwatch {command.name}`{hint}",
                param_hint="--config",
            )
        defaults[option.name] = _value(key, option, value)
    return defaults


def load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """The eager ``--config`` callback: the file's values become the command's defaults."""
    if value is None:
        return
    ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command)}

"""The ``--json`` envelope: every command prints one JSON object a line, of one shape.

    {"command": "lab run", "status": 0, "error": null, ...the command's own keys}

- ``command``: the command as typed after ``msgwatch`` (``run``, ``lab run``, ``spool status``).
- ``status``: the exit status the process ends with (README, "Exit status").
- ``error``: ``null``, or ``{"code": …, "message": …}`` when the command failed: ``code`` is the
  exit status's name (:data:`CODES`), ``message`` the one line also printed on stderr.
- The command's own keys follow at the top level (lists under a plural name: ``services``,
  ``scenarios``, ``labs``), so that a reader of an older version's keys keeps working.

A failure prints the envelope too: ``_err`` (msgwatch.cli.common) calls :func:`emit_error` for the
command in progress, and :class:`JsonGroup` does the same for usage errors (status 2) of a command
given ``--json``. A scheduled ``run --every`` prints one envelope per run.
"""

from __future__ import annotations

import json
from typing import Any

import click

CODES = {
    1: "internal",
    2: "usage",
    3: "catalogue",
    4: "output",
    5: "environment",
    6: "pending",
    7: "mismatch",
    8: "service",
}
"""The ``error.code`` of each exit status."""


def command_name(ctx: click.Context | None = None) -> str:
    """``lab run`` for ``msgwatch lab run`` (the program's own name dropped)."""
    ctx = ctx or click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:  # the root's name is the program's
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def wants_json(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def envelope(
    data: dict[str, Any] | None = None,
    *,
    status: int = 0,
    error: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    head: dict[str, Any] = {
        "command": command_name() if command is None else command,
        "status": status,
        "error": None if error is None else {"code": CODES.get(status, "error"), "message": error},
    }
    return {**head, **(data or {})}


def emit(
    data: dict[str, Any] | None = None, *, status: int = 0, command: str | None = None
) -> None:
    """Print the envelope with the command's ``data`` on stdout (one line)."""
    click.echo(json.dumps(envelope(data, status=status, command=command)))


def emit_error(message: str, status: int, data: dict[str, Any] | None = None) -> None:
    """The envelope of a failure, when the command in progress was given ``--json``."""
    if wants_json():
        click.echo(json.dumps(envelope(data, status=status, error=message)))


class JsonGroup(click.Group):
    """A group whose usage errors, for a command given ``--json``, also print the envelope."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["msgwatch.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            words: list[str] = ctx.meta.get("msgwatch.args", [])
            if "--json" in words and words:
                name = words[0]
                sub = self.get_command(ctx, name)
                if isinstance(sub, click.Group) and len(words) > 1:
                    name = f"{name} {words[1]}"
                message = exc.format_message()
                click.echo(json.dumps(envelope(status=exc.exit_code, error=message, command=name)))
            raise

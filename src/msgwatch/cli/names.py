"""Service and scenario names on the command line: shell completion ("did you mean" is
:func:`msgwatch.session.errors.did_you_mean`).

Completion is click's (``shell_complete``): enable it with
``eval "$(_MSGWATCH_COMPLETE=bash_source msgwatch)"`` (``zsh_source``, ``fish_source``). It
completes ``--services`` (each item of the comma-separated list), ``catalogue show SERVICE``,
``lab run``/``lab up SCENARIO``. A completion never fails: a catalogue that does not load offers
nothing.

This module is imported when the command line is built, so it imports the catalogue and the lab
only inside the functions that need them (``msgwatch --help`` stays fast).
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem


def service_ids(catalogue_path: str | None = None) -> list[str]:
    """The catalogue's service ids; empty when it cannot be loaded."""
    try:
        from msgwatch.catalogue import load_catalogue

        return [s.id for s in load_catalogue(catalogue_path).services]
    except Exception:  # completion offers nothing rather than failing
        return []


def scenario_names() -> list[str]:
    try:
        from msgwatch.lab.scenario import list_scenarios

        return [s.name for s in list_scenarios()]
    except Exception:  # completion offers nothing rather than failing
        return []


def complete_services(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete the last item of ``--services a,b,wh`` (or a ``SERVICE`` argument)."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    chosen = set(done.split(",")) if done else set()
    ids = service_ids(ctx.params.get("catalogue_path"))
    return [
        CompletionItem(prefix + sid) for sid in ids if sid.startswith(last) and sid not in chosen
    ]


def complete_scenarios(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    return [CompletionItem(name) for name in scenario_names() if name.startswith(incomplete)]

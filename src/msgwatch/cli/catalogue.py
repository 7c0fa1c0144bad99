"""``msgwatch catalogue list|show|validate``: the service catalogue from the command line."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import EXIT_CATALOGUE, _err, catalogue_option, json_option, load_catalogue
from msgwatch.cli.envelope import emit
from msgwatch.cli.names import complete_services
from msgwatch.session.errors import did_you_mean


@click.group("catalogue")
def catalogue_group() -> None:
    """List, show and validate the service catalogue."""


@catalogue_group.command("list")
@catalogue_option
@json_option(None)
def catalogue_list(catalogue_path: str | None, as_json: bool) -> None:
    """The services and their functions."""
    catalogue = load_catalogue(catalogue_path)
    rows = [
        {"service": s.id, "functions": [f.function for f in s.functions]}
        for s in catalogue.services
    ]
    if as_json:
        emit({"services": rows})
        return
    from msgwatch.cli.render import catalogue_table

    Console().print(catalogue_table(catalogue))


@catalogue_group.command("show")
@click.argument("service", shell_complete=complete_services)
@catalogue_option
@json_option(None)
def catalogue_show(service: str, catalogue_path: str | None, as_json: bool) -> None:
    """One service: its functions, endpoints and sources."""
    catalogue = load_catalogue(catalogue_path)
    found = catalogue.service(service)
    if found is None:
        hint = did_you_mean([service], (s.id for s in catalogue.services))
        raise _err(
            f"unknown service: {service}{hint}; `msgwatch catalogue list` names them all",
            EXIT_CATALOGUE,
        )
    data = {
        "service": found.id,
        "name": found.name,
        "note": found.note,
        "retired": found.retired,
        "successor": found.successor,
        "networks": [n.model_dump(mode="json") for n in found.networks],
        "sources": [s.model_dump(mode="json") for s in found.sources],
        "functions": [
            {
                "function": f.function,
                "mode": f.mode,
                "note": f.note,
                "endpoints": [e.model_dump(mode="json") for e in f.endpoints],
            }
            for f in found.functions
        ],
    }
    if as_json:
        emit(data)
        return
    from msgwatch.cli.render import endpoints_table

    console = Console()
    console.print(f"[bold]{escape(found.name)}[/] ({found.id}) — {escape(found.note)}")
    for f in found.functions:
        console.print(endpoints_table(f))


@catalogue_group.command("validate")
@click.argument("path", required=False, type=click.Path())
def catalogue_validate(path: str | None) -> None:
    """Check a catalogue directory (the shipped one by default); list every problem."""
    catalogue = load_catalogue(path)
    endpoints = sum(len(f.endpoints) for s in catalogue.services for f in s.functions)
    click.echo(
        f"catalogue {catalogue.version}: {len(catalogue.services)} services, "
        f"{endpoints} endpoints: valid"
    )

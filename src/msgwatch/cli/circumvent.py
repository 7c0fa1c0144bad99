"""``msgwatch circumvent``: test Tor, bridges, VPNs and proxies stage by stage, and what goes
through them (each service's text path and calls); the options parsed into
:class:`msgwatch.session.circumvent.CircumventOptions`, the report shown (the verdict table, or
the ``--json`` envelope). ``msgwatch run --circumvention [FILE]`` prepares the same before its run
and runs it after (:mod:`msgwatch.cli.run`): its rows join the run's verdict table
(:func:`show_details` prints the rest), its report the run's JSON document.

Everything else (the entries, consent, the spool, the output file, the judge) is
:mod:`msgwatch.session.circumvent`'s. Imports are light at the top: ``msgwatch --help`` loads
this module.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import OUTPUT_HELP, catalogue_option, fail, json_option, split_list
from msgwatch.cli.envelope import emit
from msgwatch.session.errors import SessionError

if TYPE_CHECKING:
    from msgwatch.session.circumvent import CircumventOptions, CircumventReport
    from msgwatch.session.consent import Ask

DEFAULT_SERVICES = "whatsapp"


@click.command("circumvent")
@click.option("--circumvention", "file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Your VPN, proxy and bridge endpoints (TOML or JSON: [[transport]] tables; "
                   "see docs/spec/ts-msgwatch-circumvention.md), tested after the catalogue's.")  # fmt: skip
@click.option("--no-catalogue-entries", is_flag=True,
              help="Only the entries of --circumvention FILE, not the catalogue's.")  # fmt: skip
@click.option("--services", default=DEFAULT_SERVICES, show_default=True,
              help="Services whose text and calls go through each tunnel (comma-separated; "
                   "'none' for none, 'all' for every one).")  # fmt: skip
@catalogue_option
@click.option("--helper", required=True,
              help="The test helper's address: transfer, sustain and calls go to its echo.")  # fmt: skip
@click.option("--helper-port", type=click.IntRange(1, 65535), default=40000, show_default=True,
              help="The helper's TCP/UDP echo port for transfer and sustain.")  # fmt: skip
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False),
              help="Trusted CAs (PEM) for the text path's TLS through the tunnels.")  # fmt: skip
@click.option("--resolver", help="DNS server IP:PORT for entries' and endpoints' names.")
@click.option("--sustain", "sustain_seconds", type=click.FloatRange(0.5, 600), default=5.0,
              show_default=True, help="Seconds of steady traffic through each tunnel.")  # fmt: skip
@click.option("--call-seconds", type=click.FloatRange(0.2, 30), default=2.0, show_default=True,
              help="Seconds of each call replay (original, control) through a tunnel.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Entries tested at once.")  # fmt: skip
@click.option("--budget", "budgets", multiple=True, metavar="TYPE=SECONDS",
              help="Seconds a type's tunnel may take to come up (repeatable), e.g. tor=30; "
                   "defaults: tor/obfs4 90, openvpn 25, others 15-20.")  # fmt: skip
@click.option("--budget-mb", type=click.FloatRange(0.1, 10_000), default=40.0, show_default=True,
              help="Megabytes the run may send and receive in all.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replays.")
@click.option("--yes", "assume_yes", is_flag=True,
              help="Unattended: consent to circumvention tests without asking.")  # fmt: skip
@click.option("--output", type=click.Path(), help=OUTPUT_HELP)
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="The spool (default: $MSGWATCH_STATE_DIR or the user's default).")  # fmt: skip
@json_option("Print one JSON object on stdout.")
def circumvent_command(
    file: str | None,
    no_catalogue_entries: bool,
    services: str,
    catalogue_path: str | None,
    helper: str,
    helper_port: int,
    ca_bundle: str | None,
    resolver: str | None,
    sustain_seconds: float,
    call_seconds: float,
    concurrency: int,
    budgets: tuple[str, ...],
    budget_mb: float,
    seed: int,
    assume_yes: bool,
    output: str | None,
    state_dir: str | None,
    as_json: bool,
) -> None:
    """Test each circumvention entry (Tor, obfs4 bridges, OpenVPN, WireGuard, Shadowsocks, SOCKS5,
    HTTP CONNECT) stage by stage: resolve, connect, handshake, tunnel, transfer, sustain; then the
    services' text and calls through each tunnel that came up. Measurements go to the spool and
    --output; the verdicts name the failing stage and the mechanism."""
    from msgwatch.session.circumvent import CircumventOptions

    options = CircumventOptions(
        file=file,
        catalogue_entries=not no_catalogue_entries,
        services=parse_services(services),
        catalogue=catalogue_path,
        helper=helper,
        helper_port=helper_port,
        ca_bundle=ca_bundle,
        resolver=resolver,
        sustain_seconds=sustain_seconds,
        call_seconds=call_seconds,
        concurrency=concurrency,
        budgets=parse_budgets(budgets),
        budget_mb=budget_mb,
        seed=seed,
        assume_yes=assume_yes,
        output=output,
        state_dir=state_dir,
    )
    circumvent(options, as_json)


def parse_budgets(items: tuple[str, ...]) -> dict[str, float]:
    """``--budget TYPE=SECONDS`` (repeatable) → {type: seconds}; a bad one is a usage error."""
    from msgwatch.circumvention.model import TYPES

    out: dict[str, float] = {}
    for item in items:
        kind, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if kind.strip() not in TYPES or not 0.5 <= seconds <= 600:
            raise click.BadParameter(
                f"{item!r}: TYPE=SECONDS with TYPE one of {', '.join(TYPES)} and 0.5-600 seconds",
                param_hint="--budget",
            )
        out[kind.strip()] = seconds
    return out


def parse_services(text: str) -> tuple[str, ...] | None:
    """``--services``: 'all' is None (every service), 'none' is ()."""
    if text.strip() == "all":
        return None
    if text.strip() in ("none", ""):
        return ()
    return tuple(split_list(text) or ())


def circumvent(options: CircumventOptions, as_json: bool) -> CircumventReport:
    """Prepare, run and show one circumvention session; a session's error is the command's."""
    from msgwatch.session.circumvent import prepare, run

    try:
        prepared = prepare(options, asker())
        report = run(prepared, on_done=None if as_json else progress)
    except SessionError as exc:
        raise fail(exc) from exc
    show(report, as_json)
    return report


def asker() -> Ask | None:
    """Consent to circumvention tests asked on the terminal; None when there is none."""
    if not sys.stdin.isatty():
        return None

    def ask(explanation: str) -> bool:
        Console(stderr=True).print(escape(explanation))
        return click.confirm("Run the circumvention tests?", default=False, err=True)

    return ask


def progress(run: Any) -> None:
    """One line on stderr as each entry ends."""
    stage = run.failed_stage
    what = "up and used" if stage is None else f"failed at {stage}: {run.failure}"
    Console(stderr=True).print(escape(f"{run.entry.name} ({run.entry.type}): {what}"))


def show(report: CircumventReport, as_json: bool) -> None:
    """The report: the ``--json`` envelope, or the verdict table and where everything went."""
    if as_json:
        emit(report.to_json(), command="circumvent")
        return
    from msgwatch.cli.render import verdict_table

    console = Console()
    if report.verdicts:
        console.print(verdict_table(report.verdicts, title="Circumvention verdicts"))
    show_details(report, console)


def show_details(report: CircumventReport, console: Console) -> None:
    """What the report says besides its verdicts: each entry's stages, the warnings, where the
    measurements went."""
    for run in report.runs:
        stages = ", ".join(
            f"{s.stage}{'' if s.failure is None else ' ' + str(s.failure)}" for s in run.stages
        )
        console.print(escape(f"{run.entry.name} ({run.entry.type}): {stages}"))
    for warning in report.warnings:
        console.print(f"[yellow]{escape(warning)}[/]")
    console.print(
        f"Measurements: {escape(str(report.output))}; spooled {report.spool['spooled']} in "
        f"{escape(report.spool['state_dir'])} ({report.spool['pending']} pending; "
        "`msgwatch submit` sends them)"
    )

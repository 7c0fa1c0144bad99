"""``msgwatch run``: the options of a run, parsed into :class:`msgwatch.session.options.RunOptions`,
and the session's report shown (a Rich table, or the ``--json`` envelope).

Everything else (checking the options against the library, the spool, the output file, the
submission, the schedule, consent) is :mod:`msgwatch.session.run`'s; its errors carry their exit
status (:func:`msgwatch.cli.common.fail`). Defaults are ``RunOptions()``'s.

``--circumvention [FILE]`` adds :mod:`msgwatch.session.circumvent`'s session: prepared (the
fence, the catalogue's entries and FILE's, consent) before the run sends anything, run after it
under the same ``run.lock``, its measurements sharing the run's report id; its verdict rows join
the run's in one table (or one ``--json`` document: the rows in ``verdicts``, the rest under
``circumvention``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import (
    FUNCTIONS_HELP,
    OUTPUT_HELP,
    catalogue_option,
    collector_option,
    collector_trust_options,
    fail,
    json_option,
    parse_hostport,
    progress_bar,
    split_list,
)
from msgwatch.cli.config import load_config
from msgwatch.cli.envelope import emit
from msgwatch.cli.names import complete_services
from msgwatch.session.errors import SessionError
from msgwatch.session.options import RunOptions

if TYPE_CHECKING:
    from msgwatch.session.circumvent import CircumventOptions, CircumventReport, Prepared
    from msgwatch.session.consent import Ask
    from msgwatch.session.run import RunReport, Session

DEFAULTS = RunOptions()


@click.command("run")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=load_config, help="A TOML file of these options (keys: their long names; "
              "the command line wins). See docs/spool.md.")  # fmt: skip
@click.option("--services", help="Comma-separated service ids (default: all).",
              shell_complete=complete_services)  # fmt: skip
@click.option("--functions", help=f"Comma-separated functions ({FUNCTIONS_HELP}).")
@catalogue_option
@click.option("--resolver", help="DNS server HOST:PORT to query over UDP (default: system).")
@click.option(
    "--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="Trusted CAs (PEM)."
)
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=DEFAULTS.timeout,
              show_default=True,
              help="Seconds each measurement chain has, from its start; the run takes about "
                   "this long, twice when failed chains are retried.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 4096),
              help="Chains at once (default: from the file-descriptor limit).")  # fmt: skip
@click.option("--helper", help="Test helper address: adds the call path (STUN on call ports).")
@click.option("--domestic-helper", help="A test helper inside the country (domestic calls).")
@click.option("--download-path", help="Path of a large object for media throughput tests.")
@click.option("--replay-seed", type=int, help="Seed of the replays (default: a random one).")
@click.option("--replay-seconds", type=click.FloatRange(0, 60), default=DEFAULTS.replay_seconds,
              show_default=True,
              help="With --helper: seconds of each call-traffic replay (0: no replays).")  # fmt: skip
@click.option("--replay-rounds", type=click.IntRange(1, 10), default=DEFAULTS.replay_rounds,
              show_default=True,
              help="With --replay-seconds: original/control pairs, each a slice of the replay.")  # fmt: skip
@click.option("--neutral-port", type=click.IntRange(1, 65535), default=DEFAULTS.neutral_port,
              show_default=True,
              help="The helper's UDP port that no service uses (the plain-UDP control).")  # fmt: skip
@click.option("--helper-control-port", type=click.IntRange(1, 65535),
              default=DEFAULTS.helper_control_port, show_default=True,
              help="The helper's control API port.")  # fmt: skip
@click.option("--budget-mb", type=click.FloatRange(0.1, 10_000), default=DEFAULTS.budget_mb,
              show_default=True, help="Megabytes the run may send and receive in all.")  # fmt: skip
@click.option("--yes", "assume_yes", is_flag=True,
              help="Unattended: consent to call tests without asking.")  # fmt: skip
@click.option("--output", type=click.Path(), help=OUTPUT_HELP)
@click.option("--probe-asn",
              help="The network's ASN (recorded as AS<n>; default: from --geoip-db, else AS0).")  # fmt: skip
@click.option("--probe-cc", help="The country code (default: from --geoip-db, else ZZ).")
@click.option("--geoip-db", "geoip_dbs", multiple=True, type=click.Path(dir_okay=False),
              help="A MaxMind-format database (GeoLite2-ASN/-Country, DB-IP, OONI's) giving the "
                   "network of the probe's own address (repeatable; default: $MSGWATCH_GEOIP_DB, "
                   "':'-separated). The address itself is never recorded.")  # fmt: skip
@click.option("--probe-ip", "probe_ips", multiple=True, metavar="ADDRESS",
              help="The probe's public address, if known: looked up in --geoip-db before those "
                   "the run learns (STUN), and scrubbed like them.")  # fmt: skip
@json_option("Print one JSON object on stdout (one line per run with --every).")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="The spool, the probe id and run.lock (default: $MSGWATCH_STATE_DIR, else "
                   "/var/lib/msgwatch for root, ~/.local/state/msgwatch for others).")  # fmt: skip
@collector_option(
    "Submit to this collector (repeatable, tried in order; default: $MSGWATCH_COLLECTORS, "
    "comma-separated)."
)
@collector_trust_options
@click.option("--every", metavar="DURATION",
              help="Run again and again, this far apart (90s, 30m, 1h); stop with SIGTERM.")  # fmt: skip
@click.option("--jitter", metavar="DURATION",
              help="With --every: move each start by up to this much (default: 10% of it).")  # fmt: skip
@click.option("--count", type=click.IntRange(1), help="With --every: stop after N starts.")
@click.option("--no-submit", is_flag=True, help="Spool the measurements, submit nothing.")
@click.option("--submit-timeout", type=click.FloatRange(0.1, 600),
              default=DEFAULTS.submit_timeout, show_default=True,
              help="Seconds to connect to a collector (and to wait between its answer's bytes).")  # fmt: skip
@click.option("--circumvention", type=click.Path(dir_okay=False), is_flag=False, flag_value="",
              default=None, metavar="[FILE]",
              help="After the run, test the catalogue's circumvention entries (Tor, bridges) "
                   "and those of FILE (your VPNs and proxies) through --helper, as `msgwatch "
                   "circumvent` does (not with --every).")  # fmt: skip
def run_command(
    services: str | None,
    functions: str | None,
    catalogue_path: str | None,
    resolver: str | None,
    ca_bundle: str | None,
    timeout: float,
    concurrency: int | None,
    helper: str | None,
    domestic_helper: str | None,
    download_path: str | None,
    replay_seed: int | None,
    replay_seconds: float,
    replay_rounds: int,
    neutral_port: int,
    helper_control_port: int,
    budget_mb: float,
    assume_yes: bool,
    output: str | None,
    probe_asn: str | None,
    probe_cc: str | None,
    geoip_dbs: tuple[str, ...],
    probe_ips: tuple[str, ...],
    as_json: bool,
    state_dir: str | None,
    collectors: tuple[str, ...],
    collector_ca: str | None,
    collector_token_file: str | None,
    every: str | None,
    jitter: str | None,
    count: int | None,
    no_submit: bool,
    submit_timeout: float,
    circumvention: str | None,
) -> None:
    """Measure every function of the selected services and print the verdicts.

    Every measurement is first written to the spool (STATE/spool/pending, fsync'd), then to
    --output, then submitted to the collectors when there are any; what is not acknowledged stays
    in the spool for the next run or `msgwatch submit`. See docs/spool.md."""
    options = RunOptions(
        services=split_list(services),
        functions=tuple(f.strip() for f in functions.split(",")) if functions else None,
        catalogue=catalogue_path,
        ca_bundle=ca_bundle,
        timeout=timeout,
        concurrency=concurrency,
        helper=helper,
        domestic_helper=domestic_helper,
        download_path=download_path,
        replay_seed=replay_seed,
        replay_seconds=replay_seconds,
        replay_rounds=replay_rounds,
        neutral_port=neutral_port,
        helper_control_port=helper_control_port,
        budget_mb=budget_mb,
        assume_yes=assume_yes,
        output=output,
        probe_asn=probe_asn,
        probe_cc=probe_cc,
        geoip_databases=geoip_dbs,
        probe_addresses=probe_ips,
        state_dir=state_dir,
        collectors=collectors,
        collector_ca=collector_ca,
        collector_token_file=collector_token_file,
        submit=not no_submit,
        submit_timeout=submit_timeout,
    )
    if circumvention is not None and (every is not None or not helper):
        raise click.UsageError("--circumvention needs --helper and cannot go with --every")
    tunnels = None
    if circumvention is not None:
        tunnels = _circumvention_options(options, circumvention or None, resolver)
    try:
        _run(options, resolver, as_json, every, jitter, count, tunnels)
    except SessionError as exc:
        raise fail(exc) from exc


def _run(
    options: RunOptions,
    resolver: str | None,
    as_json: bool,
    every: str | None,
    jitter: str | None,
    count: int | None,
    tunnels: CircumventOptions | None = None,
) -> None:
    """Prepare the session (and the circumvention session, ``tunnels``: everything checked and
    consented to before anything is sent), then run it once or on the ``--every`` schedule."""
    from dataclasses import replace

    from msgwatch.session.run import prepare
    from msgwatch.session.schedule import Stopper

    if every is None and (jitter is not None or count is not None):
        raise click.UsageError("--jitter and --count need --every")
    parsed = parse_hostport(resolver) if resolver else None
    session = prepare(replace(options, resolver=parsed), _asker())
    prepared = None
    if tunnels is not None:
        from msgwatch.cli.circumvent import asker
        from msgwatch.session.circumvent import prepare as prepare_tunnels

        prepared = prepare_tunnels(tunnels, asker())
    progress = progress_bar if not as_json and sys.stderr.isatty() else None
    if every is None:
        with session.locked(wait=True, on_wait=_waiting):
            report = session.run_once(progress=progress)
            through = None if prepared is None else _circumvent(prepared, report, as_json)
            _show(report, as_json, through)
        return
    period = _duration(every, "--every")
    spread = period / 10 if jitter is None else _duration(jitter, "--jitter")
    if period <= 0 or spread >= period:
        raise click.BadParameter("--every must be positive and --jitter less than it")
    stopper = Stopper()
    with stopper.installed():
        session.repeat(
            every=period,
            jitter=spread,
            wait=stopper.wait,
            on_report=lambda report: _show(report, as_json),
            on_skip=lambda index: _skipped(session, index, as_json),
            count=count,
            progress=progress,
        )


def _circumvention_options(
    options: RunOptions, file: str | None, resolver: str | None
) -> CircumventOptions:
    """``--circumvention [FILE]``: the circumvention session with the run's options (without
    FILE: the catalogue's entries only)."""
    from msgwatch.session.circumvent import CircumventOptions

    if resolver:
        host, port = parse_hostport(resolver)
        resolver = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return CircumventOptions(
        file=file,
        services=options.services,
        catalogue=options.catalogue,
        helper=options.helper,
        ca_bundle=options.ca_bundle,
        resolver=resolver,
        seed=options.replay_seed or 0,
        budget_mb=options.budget_mb,
        assume_yes=options.assume_yes,
        output=_beside(options.output),
        state_dir=options.state_dir,
    )


def _circumvent(prepared: Prepared, report: RunReport, as_json: bool) -> CircumventReport:
    """The prepared circumvention session, run after ``report``'s run with its report id. An
    error now (its output) comes after the run's own report (in ``--json``: the run's keys in
    the error's document, still one document)."""
    from dataclasses import replace

    from msgwatch.cli.circumvent import progress
    from msgwatch.cli.envelope import emit_error
    from msgwatch.session.circumvent import run, run_info_of

    info = run_info_of(report.measurements[0]) if report.measurements else None
    prepared = replace(prepared, options=replace(prepared.options, run_info=info))
    try:
        return run(prepared, on_done=None if as_json else progress)
    except SessionError as exc:
        if not as_json:
            _show(report, as_json)
            raise fail(exc) from exc
        emit_error(exc.message, exc.code, report.to_json())
        Console(stderr=True, soft_wrap=True).print(f"[bold red]msgwatch:[/] {escape(exc.message)}")
        raise click.exceptions.Exit(exc.code) from exc


def _beside(output: str | None) -> str | None:
    """Where the circumvention measurements go for ``run --output``: a directory stays the
    directory; a file gets a ``-circumvention`` sibling."""
    if output is None or output.endswith("/") or Path(output).is_dir():
        return output
    path = Path(output)
    return str(path.with_name(f"{path.stem}-circumvention{path.suffix or '.jsonl'}"))


def _asker() -> Ask | None:
    """Consent asked on the terminal; None when there is none to ask on."""
    if not sys.stdin.isatty():
        return None

    def ask(explanation: str) -> bool:
        Console(stderr=True).print(explanation)
        return click.confirm("Run the call tests?", default=False, err=True)

    return ask


def _waiting(lock: Path) -> None:
    Console(stderr=True).print(f"waiting for another msgwatch run ({escape(str(lock))})")


def _duration(text: str, option: str) -> float:
    from msgwatch.session.schedule import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


def _skipped(session: Session, index: int, as_json: bool) -> None:
    from msgwatch.session.run import now

    lock = session.spool.state_dir / "run.lock"
    if as_json:
        emit({"run": {"index": index, "skipped": "locked", "at": now()}})
    else:
        Console(stderr=True).print(
            f"run {index} skipped: another msgwatch run holds {escape(str(lock))}"
        )


def _show(report: RunReport, as_json: bool, through: CircumventReport | None = None) -> None:
    """The report: the ``--json`` envelope, or the verdict table and where everything went;
    with ``through`` (``--circumvention``), its rows in the same table and document."""
    verdicts = report.verdicts + (through.verdicts if through is not None else [])
    if as_json:
        data = report.to_json()
        if through is not None:
            data["verdicts"] += through.to_json()["verdicts"]
            data["circumvention"] = {k: v for k, v in through.to_json().items() if k != "verdicts"}
        emit(data)
        return
    from msgwatch.cli.circumvent import show_details
    from msgwatch.cli.render import verdict_table

    console = Console()
    network = report.network
    where = f"{network.asn}, {network.cc}" if network.known else "network unknown"
    console.print(verdict_table(verdicts, title=f"Verdicts ({where})"))
    console.print(escape(network.describe()))
    console.print(
        f"Measurements: {escape(str(report.output))}; moved {report.sent:,} bytes out, "
        f"{report.received:,} in (budget {report.budget_mb:g} MB)"
    )
    spooled = report.spool
    console.print(
        f"Spooled {spooled['spooled']} in {escape(spooled['state_dir'])} "
        f"({spooled['pending']} pending)"
    )
    submitted = report.submission
    if submitted is not None and submitted.get("ok"):
        console.print(
            f"Submitted: {submitted['stored']} stored, {submitted['duplicate']} already "
            f"there, {submitted['rejected']} rejected"
        )
    elif submitted is not None:
        console.print(
            f"[yellow]Submission incomplete[/] ({escape(str(submitted.get('error')))}); "
            "the spool keeps the rest for the next run or `msgwatch submit`"
        )
    if through is not None:
        show_details(through, console)

"""``msgwatch``: the command line.

Exit status (all commands):

    0  the command completed (for ``run``: whatever the verdicts are)
    1  an unexpected internal error
    2  wrong usage (an unknown option, a malformed value)
    3  the catalogue is invalid or a named service is not in it
    4  the measurements could not be written
    5  the environment lacks something the command needs (root, a Debian package)
    6  ``submit``: measurements remain pending (msgwatch.cli.spool)
    7  ``lab run``, ``demo``: some verdict differs from the ground truth
    8  a server could not start (``collector serve``: its port is in use, its data directory
       cannot be made or is another collector's, its index database cannot be reached)

With ``--json``, every command prints one JSON envelope per line, failures included
(msgwatch.cli.envelope); ``--output`` follows one rule everywhere (msgwatch.cli.output).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from msgwatch import __version__
from msgwatch.cli.config import load_config
from msgwatch.cli.envelope import JsonGroup, emit
from msgwatch.cli.names import complete_services, did_you_mean

# Start-up (issue 9, item 19): `msgwatch --help` must not pay for the probe, the catalogue's
# pydantic models, asyncio or the spool; each command imports what it runs, inside its function
# (tests/unit/test_cli_startup.py checks which modules `--help` loads).
if TYPE_CHECKING:
    from msgwatch.catalogue import Catalogue
    from msgwatch.probe.runner import RunConfig, ServiceRun
    from msgwatch.spool.client import URL, Client
    from msgwatch.spool.spool import Spool

FUNCTIONS_HELP = "text, voice, video, media, web, registration"
"""``msgwatch.catalogue.FUNCTIONS`` for the help text, without importing the catalogue (a test
checks that they agree)."""

EXIT_INTERNAL, EXIT_USAGE, EXIT_CATALOGUE, EXIT_OUTPUT, EXIT_ENVIRONMENT = 1, 2, 3, 4, 5
EXIT_MISMATCH = 7
EXIT_SERVICE = 8  # a server could not start (collector serve: port, data directory, index)
"""``lab run``, ``demo``: the run completed and some verdict differs from the ground truth."""
OUTPUT_HELP = (
    "The measurements file (JSONL, mode 0600); an existing directory or a path ending in / "
    "gets the default name inside it. A report goes beside it (.html)."
)


def _err(message: str, code: int) -> click.exceptions.Exit:
    """The error on stderr as one unbroken line (and as the JSON envelope on stdout when the
    command was given --json: msgwatch.cli.envelope); raise what it returns."""
    from msgwatch.cli.envelope import emit_error

    emit_error(message, code)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]msgwatch:[/] {escape(message)}")
    return click.exceptions.Exit(code)


def _load(path: str | None) -> Catalogue:
    from msgwatch.catalogue import CatalogueError, load_catalogue

    try:
        return load_catalogue(path)
    except CatalogueError as exc:
        raise _err("invalid catalogue:\n" + "\n".join(exc.problems), EXIT_CATALOGUE) from exc


def parse_hostport(value: str, default_port: int = 53) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:53``, ``[2001:db8::1]:53`` or ``2001:db8::1``."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host, int(port)


def write_jsonl(path: Path, measurements: list[dict[str, Any]]) -> None:
    """Atomically, mode 0600, no temporary file left on failure (msgwatch.cli.output)."""
    from msgwatch.cli.output import write_jsonl as write

    write(path, measurements)


def _ask_consent() -> None:
    """Call tests need consent once (see msgwatch.session.consent); unattended runs pass --yes."""
    from msgwatch.session.consent import EXPLANATION, has_consent, record_consent

    if has_consent():
        return
    if not sys.stdin.isatty():
        raise _err(
            "call tests (--helper) need consent: run once on a terminal and answer, or pass --yes",
            EXIT_ENVIRONMENT,
        )
    Console(stderr=True).print(EXPLANATION)
    if not click.confirm("Run the call tests?", default=False, err=True):
        raise _err("call tests not run: no consent", EXIT_ENVIRONMENT)
    record_consent()


def default_output(prefix: str = "msgwatch") -> Path:
    return Path(f"{prefix}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl")


def output_path(given: str | None, prefix: str = "msgwatch") -> Path:
    """``--output`` by the rule of every command (msgwatch.cli.output): the measurements file, or
    the default name inside a directory."""
    from msgwatch.cli.output import resolve_output

    return resolve_output(given, default_output(prefix).name)


def execute(
    catalogue: Catalogue,
    services: list[str] | None,
    config: RunConfig,
    show_progress: bool,
) -> list[ServiceRun]:
    """Run the probe, with a Rich progress bar on stderr when asked."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from msgwatch.probe.runner import count_chains, run

    try:
        selected = catalogue.select(services)
    except KeyError as exc:
        unknown = str(exc.args[0])
        hint = did_you_mean(unknown.split(", "), (s.id for s in catalogue.services))
        raise _err(
            f"unknown service(s): {unknown}{hint}; `msgwatch catalogue list` names them all",
            EXIT_CATALOGUE,
        ) from exc
    total = count_chains(selected, config.functions, config.helper)
    if not show_progress:
        return asyncio.run(run(catalogue, selected, config))
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"measuring {len(selected)} services", total=total)
        return asyncio.run(
            run(catalogue, selected, config, progress=lambda _s, _o: bar.advance(task))
        )


@click.group(cls=JsonGroup)
@click.version_option(__version__, prog_name="msgwatch")
def cli() -> None:
    """msgwatch: does each messenger function (text, calls, media, web, registration) work here,
    and if not, how is it blocked?"""


@cli.command("run")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=load_config, help="A TOML file of these options (keys: their long names; "
              "the command line wins). See docs/spool.md.")  # fmt: skip
@click.option("--services", help="Comma-separated service ids (default: all).",
              shell_complete=complete_services)  # fmt: skip
@click.option("--functions", help=f"Comma-separated functions ({FUNCTIONS_HELP}).")
@click.option("--catalogue", "catalogue_path", type=click.Path(), help="Catalogue directory.")
@click.option("--resolver", help="DNS server HOST:PORT to query over UDP (default: system).")
@click.option(
    "--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="Trusted CAs (PEM)."
)
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds each measurement chain has, from its start; the run takes about "
                   "this long, twice when failed chains are retried.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 4096),
              help="Chains at once (default: from the file-descriptor limit).")  # fmt: skip
@click.option("--helper", help="Test helper address: adds the call path (STUN on call ports).")
@click.option("--domestic-helper", help="A test helper inside the country (domestic calls).")
@click.option("--download-path", help="Path of a large object for media throughput tests.")
@click.option("--replay-seed", type=int, help="Seed of the replays (default: a random one).")
@click.option("--replay-seconds", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="With --helper: seconds of each call-traffic replay (0: no replays).")  # fmt: skip
@click.option("--replay-rounds", type=click.IntRange(1, 10), default=3, show_default=True,
              help="With --replay-seconds: original/control pairs, each a slice of the replay.")  # fmt: skip
@click.option("--neutral-port", type=click.IntRange(1, 65535), default=40000, show_default=True,
              help="The helper's UDP port that no service uses (the plain-UDP control).")  # fmt: skip
@click.option("--helper-control-port", type=click.IntRange(1, 65535), default=8765,
              show_default=True, help="The helper's control API port.")  # fmt: skip
@click.option("--budget-mb", type=click.FloatRange(0.1, 10_000), default=40.0, show_default=True,
              help="Megabytes the run may send and receive in all.")  # fmt: skip
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
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout (one line per run with --every).")  # fmt: skip
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="The spool, the probe id and run.lock (default: $MSGWATCH_STATE_DIR, else "
                   "/var/lib/msgwatch for root, ~/.local/state/msgwatch for others).")  # fmt: skip
@click.option("--collector", "collectors", multiple=True, metavar="URL",
              help="Submit to this collector (repeatable, tried in order; default: "
                   "$MSGWATCH_COLLECTORS, comma-separated).")  # fmt: skip
@click.option("--collector-ca", type=click.Path(exists=True, dir_okay=False),
              help="Trust only these CAs (PEM) for https:// collectors.")  # fmt: skip
@click.option("--collector-token-file", type=click.Path(dir_okay=False),
              help="A file whose first line is the collector's bearer token.")  # fmt: skip
@click.option("--every", metavar="DURATION",
              help="Run again and again, this far apart (90s, 30m, 1h); stop with SIGTERM.")  # fmt: skip
@click.option("--jitter", metavar="DURATION",
              help="With --every: move each start by up to this much (default: 10% of it).")  # fmt: skip
@click.option("--count", type=click.IntRange(1), help="With --every: stop after N starts.")
@click.option("--no-submit", is_flag=True, help="Spool the measurements, submit nothing.")
@click.option("--submit-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds to connect to a collector (and to wait between its answer's bytes).")  # fmt: skip
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
) -> None:
    """Measure every function of the selected services and print the verdicts.

    Every measurement is first written to the spool (STATE/spool/pending, fsync'd), then to
    --output, then submitted to the collectors when there are any; what is not acknowledged stays
    in the spool for the next run or `msgwatch submit`. See docs/spool.md."""
    from msgwatch.catalogue import FUNCTIONS
    from msgwatch.probe.chains import ChainConfig
    from msgwatch.probe.runner import RunConfig
    from msgwatch.session.schedule import Stopper, run_every
    from msgwatch.spool.spool import Spool, resolve_state_dir
    from msgwatch.spool.submit import plain_sleep

    catalogue = _load(catalogue_path)
    from msgwatch.fence import FenceError, check_fence

    try:  # a malformed fence stops the run here, before anything is sent or spooled
        check_fence()
    except FenceError as exc:
        raise _err(str(exc), EXIT_USAGE) from exc
    if helper and not assume_yes:
        _ask_consent()
    wanted = tuple(f.strip() for f in functions.split(",")) if functions else None
    if wanted and (bad := [f for f in wanted if f not in FUNCTIONS]):
        hint = did_you_mean(bad, FUNCTIONS)
        message = f"unknown function(s): {', '.join(bad)}{hint}"
        raise click.BadParameter(message, param_hint="--functions")
    config = RunConfig(
        chain=ChainConfig(
            resolver=parse_hostport(resolver) if resolver else None,
            ca_bundle=ca_bundle,
            download_path=download_path,
        ),
        timeout=timeout,
        concurrency=concurrency,
        helper=helper,
        replay_seconds=replay_seconds,
        replay_rounds=replay_rounds,
        neutral_port=neutral_port,
        helper_control_port=helper_control_port,
        replay_seed=replay_seed,
        domestic_helper=domestic_helper,
        budget_bytes=int(budget_mb * 1_000_000),
        functions=wanted,
        probe_asn=probe_asn,
        probe_cc=probe_cc,
        geoip_databases=_geoip_databases(geoip_dbs, probe_asn, probe_cc),
        probe_addresses=_addresses(probe_ips),
    )
    ids = [s.strip() for s in services.split(",") if s.strip()] if services else None
    sending = (
        None
        if no_submit
        else _submission(collectors, collector_ca, collector_token_file, submit_timeout)
    )
    plan = _RunPlan(
        catalogue=catalogue,
        services=ids,
        config=config,
        output=output,
        as_json=as_json,
        budget_mb=budget_mb,
        spool=Spool(resolve_state_dir(state_dir)),
        submission=sending,
    )
    if every is None:
        if jitter is not None or count is not None:
            raise click.UsageError("--jitter and --count need --every")
        with _locked(plan.spool.state_dir, wait=True):
            plan.once(None, plain_sleep)
        return
    period = _duration(every, "--every")
    spread = period / 10 if jitter is None else _duration(jitter, "--jitter")
    if period <= 0 or spread >= period:
        raise click.BadParameter("--every must be positive and --jitter less than it")
    stopper = Stopper()
    with stopper.installed():
        run_every(
            lambda index: plan.once(index, stopper.wait),
            every=period,
            jitter=spread,
            lock=lambda: _locked(plan.spool.state_dir, wait=False),
            wait=stopper.wait,
            on_skip=plan.skipped,
            count=count,
        )


def _geoip_databases(given: tuple[str, ...], asn: str | None, cc: str | None) -> tuple[str, ...]:
    """The GeoIP databases to use (none when both values are given), each checked now."""
    from msgwatch.probe.network import GeoipError, check_databases, database_paths

    if asn is not None and cc is not None:
        return ()
    paths = database_paths(given)
    try:
        check_databases(paths)
    except GeoipError as exc:
        raise click.BadParameter(str(exc), param_hint="--geoip-db") from exc
    return tuple(paths)


def _addresses(given: tuple[str, ...]) -> tuple[str, ...]:
    import ipaddress

    try:
        return tuple(str(ipaddress.ip_address(a.strip())) for a in given)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--probe-ip") from exc


def _duration(text: str, option: str) -> float:
    from msgwatch.session.schedule import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


def _submission(
    given: tuple[str, ...], ca_file: str | None, token_file: str | None, timeout: float = 10.0
) -> _Submission | None:
    """The collectors to submit to (None when there are none), checked before anything runs."""
    from msgwatch.spool.client import Client
    from msgwatch.spool.submit import collector_urls, read_token

    try:
        urls = collector_urls(given)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--collector") from exc
    if not urls:
        return None
    try:
        token = read_token(token_file) if token_file else None
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--collector-token-file") from exc
    client = Client(ca_file=ca_file, connect_timeout=timeout, io_timeout=max(timeout, 30.0))
    return _Submission(urls, client, token)


@contextlib.contextmanager
def _locked(state_dir: Path, *, wait: bool) -> Iterator[bool]:
    """``run.lock`` (see msgwatch.session.schedule); a one-shot run says that it waits, then waits."""
    from msgwatch.session.schedule import run_lock

    with contextlib.ExitStack() as stack:
        try:
            acquired = stack.enter_context(run_lock(state_dir, wait=False))
            if not acquired and wait:
                Console(stderr=True).print(
                    f"waiting for another msgwatch run ({escape(str(state_dir))}/run.lock)"
                )
                acquired = stack.enter_context(run_lock(state_dir, wait=True))
        except OSError as exc:
            from msgwatch.cli.output import explain

            problem = explain(exc, "pass --state-dir with a directory of your own")
            message = f"cannot use the state directory {state_dir}: {problem}"
            raise _err(message, EXIT_OUTPUT) from exc
        yield acquired


@dataclass(frozen=True)
class _Submission:
    collectors: list[URL]
    client: Client
    token: str | None


@dataclass(frozen=True)
class _RunPlan:
    """What one run of ``msgwatch run`` does, repeated by ``--every``."""

    catalogue: Catalogue
    services: list[str] | None
    config: RunConfig
    output: str | None
    as_json: bool
    budget_mb: float
    spool: Spool
    submission: _Submission | None

    def once(self, index: int | None, sleep: Callable[[float], bool]) -> None:
        from msgwatch.spool.submit import submit

        started = _now()
        show = not self.as_json and sys.stderr.isatty()
        results = execute(self.catalogue, self.services, self.config, show_progress=show)
        measurements = [r.measurement for r in results]
        # A service whose destinations the fence refused is shown and written, never spooled.
        spoolable = [r.measurement for r in results if r.measured]
        from msgwatch.cli.output import storage_failure

        spool_error: OSError | None = None
        output_error: OSError | None = None
        keys: list[str] = []
        try:  # the spool first: nothing else happens to a measurement before it is durable
            self.spool.add(spoolable, written=keys)
        except OSError as exc:
            spool_error = exc
        path = output_path(self.output)
        try:
            write_jsonl(path, measurements)
        except OSError as exc:
            output_error = exc
        failure = storage_failure(
            spool_root=self.spool.root, pending_dir=self.spool.pending_dir, output=path,
            total=len(spoolable), spooled=len(keys),
            spool_error=spool_error, output_error=output_error,
        )  # fmt: skip
        if failure is not None:
            raise _err(failure, EXIT_OUTPUT)
        submitted: dict[str, Any] | None = None
        if self.submission is not None:
            try:
                summary = submit(
                    self.spool,
                    self.submission.collectors,
                    client=self.submission.client,
                    token=self.submission.token,
                    sleep=sleep,
                )
                submitted = summary.to_json()
            except OSError as exc:  # reported, never fatal: the spool keeps them
                submitted = {"ok": False, "error": f"spool: {exc.strerror or exc}"}
        spooled = {
            "state_dir": str(self.spool.state_dir),
            "spooled": len(keys),
            "pending": self.spool.pending_count(),
        }
        run_info: dict[str, Any] = {"started_at": started, "finished_at": _now()}
        if index is not None:
            run_info = {"index": index, **run_info}
        self._report(results, path, spooled, submitted, run_info)

    def skipped(self, index: int) -> None:
        lock = self.spool.state_dir / "run.lock"
        if self.as_json:
            run_info = {"index": index, "skipped": "locked", "at": _now()}
            emit({"run": run_info})
        else:
            Console(stderr=True).print(
                f"run {index} skipped: another msgwatch run holds {escape(str(lock))}"
            )

    def _report(
        self,
        results: list[ServiceRun],
        path: Path,
        spooled: dict[str, Any],
        submitted: dict[str, Any] | None,
        run_info: dict[str, Any],
    ) -> None:
        from msgwatch.cli.render import verdict_table
        from msgwatch.probe.network import Network, from_measurement

        verdicts = [v for r in results for v in r.verdicts]
        network = from_measurement(results[0].measurement) if results else Network()
        moved = {
            "sent": sum(r.measurement["test_keys"]["msgwatch_bytes"]["sent"] for r in results),
            "received": sum(
                r.measurement["test_keys"]["msgwatch_bytes"]["received"] for r in results
            ),
        }
        if self.as_json:
            public = [
                {k: v[k] for k in ("service", "function", "verdict", "mechanism", "evidence")}
                for v in verdicts
            ]
            data = {"verdicts": public, "output": str(path), "bytes": moved,
                    "budget_mb": self.budget_mb, "spool": spooled,
                    "submission": submitted, "run": run_info,
                    "network": {"probe_asn": network.asn, "probe_cc": network.cc,
                                "asn_source": network.asn_source,
                                "cc_source": network.cc_source}}  # fmt: skip
            emit(data)
            return
        console = Console()
        where = f"{network.asn}, {network.cc}" if network.known else "network unknown"
        console.print(verdict_table(verdicts, title=f"Verdicts ({where})"))
        console.print(escape(network.describe()))
        console.print(
            f"Measurements: {escape(str(path))}; moved {moved['sent']:,} bytes out, "
            f"{moved['received']:,} in (budget {self.budget_mb:g} MB)"
        )
        console.print(
            f"Spooled {spooled['spooled']} in {escape(spooled['state_dir'])} "
            f"({spooled['pending']} pending)"
        )
        if submitted is None:
            return
        if submitted.get("ok"):
            console.print(
                f"Submitted: {submitted['stored']} stored, {submitted['duplicate']} already "
                f"there, {submitted['rejected']} rejected"
            )
        else:
            console.print(
                f"[yellow]Submission incomplete[/] ({escape(str(submitted.get('error')))}); "
                "the spool keeps the rest for the next run or `msgwatch submit`"
            )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@cli.command("demo")
@click.option("--mini", is_flag=True, help="The loopback mini-Internet instead of the lab.")
@click.option("--timeout", type=click.FloatRange(0.5, 60), default=4.0, show_default=True,
              help="With --mini: the probe's deadline.")  # fmt: skip
@click.option("--output", type=click.Path(), help=OUTPUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def demo_command(mini: bool, timeout: float, output: str | None, as_json: bool) -> None:
    """The censorship lab's az-2017 scenario: calls abroad blocked, text working; every verdict
    against the ground truth, and an HTML report. ``--mini``: a loopback Internet, no namespaces."""
    if mini:
        from msgwatch.cli.demo import run_demo

        run_demo(timeout=timeout, output=output, as_json=as_json)
        return
    from msgwatch.cli.lab import lab_demo

    lab_demo(output, as_json)


@cli.group("catalogue")
def catalogue_group() -> None:
    """List, show and validate the service catalogue."""


@catalogue_group.command("list")
@click.option("--catalogue", "catalogue_path", type=click.Path(), help="Catalogue directory.")
@click.option("--json", "as_json", is_flag=True)
def catalogue_list(catalogue_path: str | None, as_json: bool) -> None:
    """The services and their functions."""
    catalogue = _load(catalogue_path)
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
@click.option("--catalogue", "catalogue_path", type=click.Path(), help="Catalogue directory.")
@click.option("--json", "as_json", is_flag=True)
def catalogue_show(service: str, catalogue_path: str | None, as_json: bool) -> None:
    """One service: its functions, endpoints and sources."""
    catalogue = _load(catalogue_path)
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
    catalogue = _load(path)
    endpoints = sum(len(f.endpoints) for s in catalogue.services for f in s.functions)
    click.echo(
        f"catalogue {catalogue.version}: {len(catalogue.services)} services, "
        f"{endpoints} endpoints: valid"
    )


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


# The lab's commands live in their own module; importing it registers them on `cli`.
from msgwatch.cli import helper as _helper  # noqa: E402, F401
from msgwatch.cli import lab as _lab  # noqa: E402, F401
from msgwatch.cli.collector import collector_group as _collector  # noqa: E402, F401
from msgwatch.cli.spool import spool_group as _spool  # noqa: E402, F401

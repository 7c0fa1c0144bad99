"""``msgwatch collector serve`` and ``msgwatch export``: the collector from the command line.

Options parse into :class:`msgwatch.collector.settings.Settings`; each also reads an environment
variable (a secret such as the admin token is better there than in ``ps``). See
docs/design/002-collector.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from msgwatch.cli.common import (
    EXIT_OUTPUT,
    EXIT_SERVICE,
    EXIT_USAGE,
    _err,
    log_level_option,
    setting,
)


@click.group("collector")
def collector_group() -> None:
    """The collector: accepts measurements from probes, stores them durably, serves them."""


@collector_group.command("serve")
@setting(
    "--host",
    default="127.0.0.1",
    envvar="MSGWATCH_COLLECTOR_HOST",
    help="Address to listen on.",
)
@setting(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    envvar="MSGWATCH_COLLECTOR_PORT",
    help="TCP port to listen on.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MSGWATCH_COLLECTOR_DIR",
    help="Archive and SQLite index [default: /var/lib/msgwatch-collector for root, "
    "~/.local/share/msgwatch/collector otherwise].",
)
@click.option(
    "--database",
    metavar="URL",
    envvar="MSGWATCH_DATABASE",
    help="postgresql://… for a PostgreSQL index (default: SQLite in the data directory).",
)
@click.option(
    "--probe-tokens",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="MSGWATCH_PROBE_TOKENS",
    help="File of probe tokens, one per line: submissions then need one.",
)
@click.option(
    "--admin-token",
    metavar="T",
    envvar="MSGWATCH_ADMIN_TOKEN",
    help="Token that /metrics then needs (better given as $MSGWATCH_ADMIN_TOKEN).",
)
@setting(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=0,
    envvar="MSGWATCH_RATE_LIMIT",
    help="Submissions per second per client, burst twice that (0: no limit).",
)
@setting(
    "--graceful-seconds",
    type=click.FloatRange(min=0),
    default=10,
    envvar="MSGWATCH_COLLECTOR_GRACEFUL_SECONDS",
    help="On SIGTERM/SIGINT, how long requests in flight may take to finish (whole seconds, "
    "rounded up); those still running then are answered 503.",
)
@setting(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1024,
    envvar="MSGWATCH_COLLECTOR_MAX_CONNECTIONS",
    help="Client connections held at once; when full, the one waiting longest for a request "
    "head is closed to make room.",
)
@setting(
    "--max-connections-per-client",
    type=click.IntRange(min=1),
    default=64,
    envvar="MSGWATCH_COLLECTOR_MAX_CONNECTIONS_PER_CLIENT",
    help="Client connections held at once per address (IPv6: per /64); proxies of "
    "--forwarded-allow-ips are exempt.",
)
@setting(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=10,
    envvar="MSGWATCH_COLLECTOR_HEADER_TIMEOUT",
    help="Seconds a request head may take to arrive; a slower connection is closed.",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="ADDRS",
    envvar="MSGWATCH_FORWARDED_ALLOW_IPS",
    help="Reverse-proxy addresses or networks (comma-separated) whose X-Forwarded-For names the "
    "client (scrubbed from bodies, rate-limited); from anyone else it is ignored [default: none].",
)
@click.option(
    "--analysis-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MSGWATCH_ANALYSIS_DIR",
    help="The analysis's output directory (msgwatch analyse OUT): /api/v1/events, aggregates, "
    "observations and verdicts serve its last pass [default: none, they answer 503].",
)
@setting(
    "--analyse-every",
    type=click.FloatRange(min=0),
    default=0,
    envvar="MSGWATCH_ANALYSE_EVERY",
    help="Seconds between incremental analysis passes over the archive into --analysis-dir "
    "(0: none; another process, e.g. the systemd timer, writes it).",
)
@setting(
    "--analysis-bucket",
    default="1h",
    envvar="MSGWATCH_ANALYSIS_BUCKET",
    help="The bucket of those passes' aggregates and events: 1h, 10m, 30s, 2d or seconds"
    " (1 s to 365 days).",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=False,
    envvar="MSGWATCH_COLLECTOR_DASHBOARD",
    help="Serve the web dashboard over --analysis-dir at /dashboard (read-only).",
)
@log_level_option("debug", "info", "warning", "error")
def serve_command(
    host: str,
    port: int,
    data_dir: Path | None,
    database: str | None,
    probe_tokens: Path | None,
    admin_token: str | None,
    rate_limit: float,
    graceful_seconds: float,
    max_connections: int,
    max_connections_per_client: int,
    header_timeout: float,
    forwarded_allow_ips: str | None,
    analysis_dir: Path | None,
    analyse_every: float,
    analysis_bucket: str,
    dashboard: bool,
    log_level: str,
) -> None:
    """Serve the collector until SIGTERM or SIGINT."""
    from msgwatch.cli.analyse import parse_bucket
    from msgwatch.collector.auth import TokenFileError, read_tokens
    from msgwatch.collector.server import configure_logging, serve
    from msgwatch.collector.settings import Settings, default_data_dir
    from msgwatch.collector.startup import StartupError, preflight
    from msgwatch.collector.transport import parse_networks

    if probe_tokens is not None:
        try:
            read_tokens(probe_tokens)
        except TokenFileError as exc:
            raise _err(str(exc), EXIT_USAGE) from exc
    if database is not None and not database.startswith(("postgresql://", "postgres://")):
        raise _err("--database takes a postgresql:// URL", EXIT_USAGE)
    if analyse_every > 0 and analysis_dir is None:
        raise click.UsageError("--analyse-every needs --analysis-dir")
    if dashboard and analysis_dir is None:
        raise click.UsageError("--dashboard needs --analysis-dir")
    proxies = tuple((forwarded_allow_ips or "").replace(",", " ").split())
    try:
        parse_networks(proxies)
    except ValueError as exc:
        raise _err(f"--forwarded-allow-ips: {exc}", EXIT_USAGE) from exc
    settings = Settings(
        data_dir=data_dir or default_data_dir(),
        database=database or None,
        host=host,
        port=port,
        probe_tokens_file=probe_tokens,
        admin_token=admin_token or None,
        rate_limit=rate_limit,
        graceful_seconds=graceful_seconds,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
        header_timeout=header_timeout,
        forwarded_allow_ips=proxies,
        analysis_dir=analysis_dir,
        analyse_every=analyse_every,
        analysis_bucket=parse_bucket(analysis_bucket, "--analysis-bucket"),
        dashboard=dashboard,
    )
    try:  # the causes an operator can fix, in one line, before anything starts (startup.py)
        preflight(settings.host, settings.port, settings.data_dir, settings.database)
    except StartupError as exc:
        click.echo(f"msgwatch: {exc}", err=True)  # one line at any terminal width
        raise click.exceptions.Exit(EXIT_SERVICE) from exc
    configure_logging(log_level)
    try:
        started = serve(settings, log_level)
    except SystemExit:  # uvicorn's exit on a failed start; the cause is logged, in one line
        started = False
    if not started:
        raise _err("the collector did not start (the cause is logged above)", EXIT_SERVICE)


@click.command("export")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    envvar="MSGWATCH_COLLECTOR_DIR",
    help="The collector's data directory.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "parquet"]), required=True, help="Output format."
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output file."
)
@click.option("--since", metavar="D", help="YYYY-MM-DD[ HH:MM:SS], inclusive (measurement time).")
@click.option("--until", metavar="D", help="YYYY-MM-DD[ HH:MM:SS], exclusive.")
@click.option(
    "--database",
    metavar="URL",
    envvar="MSGWATCH_DATABASE",
    help="The collector's postgresql:// index, when it is not SQLite in the data directory.",
)
def export_command(
    data_dir: Path,
    fmt: str,
    output: Path,
    since: str | None,
    until: str | None,
    database: str | None,
) -> None:
    """Export the collector's measurements as JSON Lines or Parquet (beside a running collector)."""
    from msgwatch.collector.export import export

    try:
        count = export(data_dir, fmt, output, since=since, until=until, database=database)
    except ValueError as exc:
        raise _err(str(exc), EXIT_USAGE) from exc
    except OSError as exc:
        raise _err(f"cannot export: {exc}", EXIT_OUTPUT) from exc
    click.echo(f"{count} measurements written to {output}", err=True)

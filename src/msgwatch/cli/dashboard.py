"""``msgwatch dashboard serve``: the read-only web dashboard (:mod:`msgwatch.dashboard.app`) over an
analysis's output directory, served by uvicorn.

Rules:

- It only reads: the lake of ``--analysis-dir`` (its newest committed pass, at every request) and,
  for the measurement pages' raw JSON, the ``--measurements`` JSONL files.
- It binds ``127.0.0.1`` unless told otherwise; a port in use or an address that cannot be bound
  exits 8 (the CLI's "a server could not start").
- Imports are light (``msgwatch --help`` loads this module): the dashboard and uvicorn are
  imported inside the command.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from msgwatch.cli.common import EXIT_SERVICE, _err, log_level_option


@click.group("dashboard")
def dashboard_group() -> None:
    """The web dashboard over the analysis: overview, networks, events, measurements, feeds."""


@dashboard_group.command("serve")
@click.option(
    "--analysis-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    envvar="MSGWATCH_ANALYSIS_DIR",
    help="The analysis's output directory (msgwatch analyse OUT).",
)
@click.option(
    "--measurements",
    "measurements",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    multiple=True,
    help="JSONL (or .jsonl.gz) measurements the analysis read, for the raw JSON of a measurement "
    "page (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="TCP port."
)
@click.option("--title", default="msgwatch", show_default=True, help="The pages' title.")
@log_level_option("debug", "info", "warning", "error")
def serve_command(
    analysis_dir: Path,
    measurements: tuple[Path, ...],
    host: str,
    port: int,
    title: str,
    log_level: str,
) -> None:
    """Serve the dashboard until SIGTERM or SIGINT."""
    import uvicorn

    from msgwatch.dashboard.app import DashboardConfig, create_app
    from msgwatch.dashboard.measurements import JsonlMeasurements

    source = JsonlMeasurements(list(measurements)) if measurements else None
    app = create_app(DashboardConfig(analysis_dir, source, title))
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
    server = uvicorn.Server(config)
    click.echo(f"msgwatch dashboard on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    with contextlib.suppress(SystemExit):  # uvicorn's exit on a failed start (the cause logged)
        server.run()
    if not server.started:
        raise _err(f"the dashboard did not start on {host}:{port} (see above)", EXIT_SERVICE)

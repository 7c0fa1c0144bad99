"""``msgwatch spool status`` and ``msgwatch submit``: the spool seen from the command line.

Exit status, besides the common ones (docs in msgwatch.cli.main, numbers in msgwatch.cli.common):

    0  ``submit``: every pending measurement was acknowledged or rejected
    2  ``submit``: no collector given (--collector or $MSGWATCH_COLLECTORS)
    4  the state directory cannot be read or written (``spool status``: it does not exist)
    6  ``submit``: measurements remain pending (no collector took them, or stopped by a signal)
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from msgwatch.cli.common import (
    EXIT_OUTPUT,
    EXIT_PENDING,
    EXIT_USAGE,
    _err,
    collector_option,
    collector_trust_options,
    fail,
    json_option,
    state_dir_option,
)
from msgwatch.cli.envelope import emit
from msgwatch.session.output import explain


@click.group("spool")
def spool_group() -> None:
    """The on-disk spool of measurements waiting for a collector."""


@spool_group.command("status")
@state_dir_option()
@json_option()
def spool_status(state_dir: str | None, as_json: bool) -> None:
    """Pending measurements (count, bytes, oldest, attempts, last error), the last submission,
    submitted and rejected counts, and the probe id. Reads only."""
    from msgwatch.spool.spool import Spool, resolve_state_dir

    spool = Spool(resolve_state_dir(state_dir))
    if not spool.state_dir.exists():
        raise _err(
            f"no state directory at {spool.state_dir}: nothing was ever spooled there (a run "
            "makes it; name the probe's own with --state-dir or $MSGWATCH_STATE_DIR)",
            EXIT_OUTPUT,
        )
    try:
        status = spool.status()
    except OSError as exc:
        problem = explain(exc, "name another with --state-dir")
        raise _err(f"cannot read {spool.state_dir}: {problem}", EXIT_OUTPUT) from exc
    if as_json:
        emit(status)
        return
    pending = status["pending"]
    last_error = pending["last_error"]
    last = status["last_submission"]
    rows = [
        ("state directory", status["state_dir"]),
        ("probe id", status["probe_id"] or "(none yet)"),
        ("pending", f"{pending['count']:,} measurements, {pending['bytes']:,} bytes"),
        ("oldest pending", pending["oldest"] or "-"),
        ("attempts", f"{pending['attempted']:,} tried, at most {pending['max_attempts']} times"),
        ("last error", f"{last_error['error']} at {last_error['time']}" if last_error else "-"),
        ("last submission", _describe(last) if last else "-"),
        ("submitted", f"{status['submitted']:,}"),
        ("rejected", f"{status['rejected']:,} (see spool/rejected/)"),
    ]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    Console().print(table)


def _describe(last: dict[str, Any]) -> str:
    text = (
        f"{last.get('time')}: {last.get('stored', 0)} stored, {last.get('duplicate', 0)} "
        f"duplicate, {last.get('rejected', 0)} rejected, {last.get('remaining', 0)} left"
    )
    return text + (f" ({last['error']})" if last.get("error") else "")


@click.command("submit")
@collector_option(
    "Collector URL (repeatable, tried in order; default: $MSGWATCH_COLLECTORS, comma-separated)."
)
@state_dir_option()
@collector_trust_options
@json_option()
def submit_command(
    collectors: tuple[str, ...],
    state_dir: str | None,
    collector_ca: str | None,
    collector_token_file: str | None,
    as_json: bool,
) -> None:
    """Send the spool's pending measurements to the collectors now."""
    from msgwatch.session.errors import SessionError
    from msgwatch.session.run import submission_to
    from msgwatch.session.schedule import Stopper
    from msgwatch.spool.spool import Spool, resolve_state_dir
    from msgwatch.spool.submit import submit

    try:
        to = submission_to(collectors, collector_ca, collector_token_file)
    except SessionError as exc:
        raise fail(exc) from exc
    if to is None:
        raise _err("no collector: pass --collector URL or set MSGWATCH_COLLECTORS", EXIT_USAGE)
    spool = Spool(resolve_state_dir(state_dir))
    stopper = Stopper()
    try:
        with stopper.installed():
            summary = submit(
                spool, to.collectors, client=to.client, token=to.token, sleep=stopper.wait
            )
    except OSError as exc:
        problem = explain(exc, "name another with --state-dir")
        raise _err(f"cannot use {spool.root}: {problem}", EXIT_OUTPUT) from exc
    data = summary.to_json()
    if as_json:
        emit(data, status=0 if summary.ok else EXIT_PENDING)
    else:
        console = Console()
        console.print(
            f"{data['pending']} pending: {data['stored']} stored, {data['duplicate']} already "
            f"there, {data['rejected']} rejected, {data['invalid']} unreadable, "
            f"{data['remaining']} left"
        )
        for c in data["collectors"]:
            error = f", last error {c['last_error']}" if c["last_error"] else ""
            console.print(
                f"  {escape(c['url'])}: {c['state']}, {c['requests']} requests, "
                f"{c['acknowledged']} acknowledged{escape(error)}"
            )
    if not summary.ok:
        raise click.exceptions.Exit(EXIT_PENDING)

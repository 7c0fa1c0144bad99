"""``msgwatch``: the command line, assembled from one module per command group.

Exit status (all commands; the numbers are :mod:`msgwatch.cli.common`'s):

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
(msgwatch.cli.envelope); ``--output`` follows one rule everywhere (msgwatch.session.output).

Start-up (issue 9, item 19): ``msgwatch --help`` must not pay for the probe, the catalogue's
pydantic models, asyncio or the spool; each command imports what it runs, inside its function
(tests/unit/test_cli_startup.py checks which modules ``--help`` loads).
"""

from __future__ import annotations

import sys

import click
from rich.console import Console

from msgwatch import __version__
from msgwatch.cli.analyse import analyse_command, events_command
from msgwatch.cli.catalogue import catalogue_group
from msgwatch.cli.circumvent import circumvent_command
from msgwatch.cli.collector import collector_group, export_command
from msgwatch.cli.dashboard import dashboard_group
from msgwatch.cli.envelope import JsonGroup
from msgwatch.cli.helper import helper_group
from msgwatch.cli.lab import demo_command, lab_group
from msgwatch.cli.report import report_command
from msgwatch.cli.run import run_command
from msgwatch.cli.spool import spool_group, submit_command


@click.group(cls=JsonGroup)
@click.version_option(__version__, prog_name="msgwatch")
def cli() -> None:
    """msgwatch: does each messenger function (text, calls, media, web, registration) work here,
    and if not, how is it blocked?"""


for _command in (
    run_command,
    circumvent_command,
    demo_command,
    catalogue_group,
    lab_group,
    helper_group,
    collector_group,
    dashboard_group,
    export_command,
    spool_group,
    submit_command,
    analyse_command,
    events_command,
    report_command,
):
    cli.add_command(_command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)

"""What every command module shares: exit statuses, errors, value parsers, option decorators.

Rules:

- Command modules (``run``, ``catalogue``, ``lab`` with ``demo``, ``helper``, ``collector``,
  ``spool``) import this module and the leaves beside it (``envelope``, ``names``, ``render``,
  ``config``), never :mod:`msgwatch.cli.main`, which imports them all and adds their commands to
  the root group: no import cycle (tests/unit/test_cli_common.py).
- An error is one line on stderr and, for a command given ``--json``, the envelope on stdout
  (:func:`_err`); a :class:`~msgwatch.session.errors.SessionError` becomes that, or a usage
  error of the option it names (:func:`fail`).
- Imports are light on purpose (``msgwatch --help`` loads this module): the library is imported
  inside the functions that use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.session import errors

# the --output rule and its writer, for the command modules that write measurements
from msgwatch.session.output import output_path as output_path
from msgwatch.session.output import write_jsonl as write_jsonl

if TYPE_CHECKING:
    from msgwatch.catalogue import Catalogue
    from msgwatch.probe.runner import RunConfig, ServiceRun

EXIT_INTERNAL = 1
EXIT_USAGE = errors.USAGE
EXIT_CATALOGUE = errors.CATALOGUE
EXIT_OUTPUT = errors.OUTPUT
EXIT_ENVIRONMENT = errors.ENVIRONMENT
EXIT_PENDING = 6
"""``submit``: measurements remain pending."""
EXIT_MISMATCH = 7
"""``lab run``, ``demo``: the run completed and some verdict differs from the ground truth."""
EXIT_SERVICE = 8
"""A server could not start (``collector serve``: port, data directory, index)."""

FUNCTIONS_HELP = "text, voice, video, media, web, registration"
"""``msgwatch.catalogue.FUNCTIONS`` for the help text, without importing the catalogue (a test
checks that they agree)."""
OUTPUT_HELP = (
    "The measurements file (JSONL, mode 0600); an existing directory or a path ending in / "
    "gets the default name inside it. A report goes beside it (.html)."
)
STATE_DIR_HELP = (
    "State directory (default: $MSGWATCH_STATE_DIR, else /var/lib/msgwatch for root, "
    "~/.local/state/msgwatch for others)."
)

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str, code: int) -> click.exceptions.Exit:
    """The error on stderr as one unbroken line (and as the JSON envelope on stdout when the
    command was given --json: msgwatch.cli.envelope); raise what it returns."""
    from msgwatch.cli.envelope import emit_error

    emit_error(message, code)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]msgwatch:[/] {escape(message)}")
    return click.exceptions.Exit(code)


def fail(error: errors.SessionError) -> click.ClickException | click.exceptions.Exit:
    """What the command raises for a session's error: a usage error of the option it names, else
    :func:`_err` with its exit status."""
    if error.option is not None:
        return click.BadParameter(error.message, param_hint=error.option)
    return _err(error.message, error.code)


def load_catalogue(path: str | None) -> Catalogue:
    """The catalogue (the shipped one when ``path`` is None); an invalid one exits 3."""
    from msgwatch.session.run import open_catalogue

    try:
        return open_catalogue(path)
    except errors.SessionError as exc:
        raise fail(exc) from exc


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


def split_list(text: str | None) -> tuple[str, ...] | None:
    """``a, b,`` → ``("a", "b")``; nothing given (None or empty) is None."""
    if not text:
        return None
    return tuple(item.strip() for item in text.split(",") if item.strip())


@contextlib.contextmanager
def progress_bar(chains: int, services: int) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr for a run (msgwatch.session.run's ``ShowProgress``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"measuring {services} services", total=chains)
        yield lambda: bar.advance(task)


def execute(
    catalogue: Catalogue, services: list[str] | None, config: RunConfig, show_progress: bool
) -> list[ServiceRun]:
    """Run the probe over the named services (all when None), with a progress bar when asked."""
    from msgwatch.session.run import measure, select

    try:
        selected = select(catalogue, services)
    except errors.SessionError as exc:
        raise fail(exc) from exc
    return measure(catalogue, selected, config, progress_bar if show_progress else None)


# -- options shared by several commands -----------------------------------------------------------


class LazyDefault(click.Option):
    """An option whose default is a function of the library, called when the command needs it
    (its run, its ``--help``) and shown as its value: the module that knows the value is imported
    then, not when the command line is built (``msgwatch --help`` stays light)."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        return super().get_default(ctx, call=True)


def setting(*decls: str, default: Any, help: str | None, **kwargs: Any) -> Callable[[F], F]:
    """An option whose default the help shows (a server's settings)."""
    return click.option(*decls, default=default, show_default=True, help=help, **kwargs)


def json_option(help: str | None = "Print one JSON object on stdout.") -> Callable[[F], F]:
    """``--json``: the command's answer as one envelope a line (msgwatch.cli.envelope)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def catalogue_option(func: F) -> F:
    """``--catalogue DIR`` (the shipped catalogue by default)."""
    return click.option(
        "--catalogue", "catalogue_path", type=click.Path(), help="Catalogue directory."
    )(func)


def state_dir_option(help: str = STATE_DIR_HELP) -> Callable[[F], F]:
    """``--state-dir``: the probe's spool (msgwatch.spool)."""
    return click.option("--state-dir", type=click.Path(file_okay=False), help=help)


def collector_option(help: str) -> Callable[[F], F]:
    """``--collector URL`` (repeatable)."""
    return click.option("--collector", "collectors", multiple=True, metavar="URL", help=help)


def collector_trust_options(func: F) -> F:
    """``--collector-ca`` and ``--collector-token-file``."""
    func = click.option(
        "--collector-token-file",
        type=click.Path(dir_okay=False),
        help="A file whose first line is the collector's bearer token.",
    )(func)
    return click.option(
        "--collector-ca",
        type=click.Path(exists=True, dir_okay=False),
        help="Trust only these CAs (PEM) for https:// collectors.",
    )(func)


def log_level_option(*levels: str) -> Callable[[F], F]:
    """``--log-level``, ``info`` by default."""
    return setting("--log-level", type=click.Choice(list(levels)), default="info", help=None)

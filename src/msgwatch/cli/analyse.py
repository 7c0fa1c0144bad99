"""``msgwatch analyse`` and ``msgwatch events``: the analysis from the command line.

``analyse OUT`` runs one pass (:func:`msgwatch.analysis.passes.run_pass`) over the sources named by
the options into the output directory ``OUT``: the collector's archive (``--archive DATA``, read
incrementally), JSONL files (``--jsonl``), OONI's bucket layout (``--ooni DIR``, narrowed by
``--ooni-since``/``--ooni-until``/``--ooni-cc``). ``--engine spark`` hands the same configuration
to :mod:`msgwatch.analysis.spark` (pyspark, an optional extra). ``events OUT`` lists the events of
the last committed pass (:class:`msgwatch.analysis.query.Lake`).

Rules:

- At least one source; ``--ooni-*`` only with ``--ooni``; a bucket is ``1h``, ``10m``, ``30s``,
  ``2d`` or plain seconds, from one second to 365 days. Anything else is a usage error (exit 2).
- A Rich progress bar on stderr while the pass runs, only on a terminal and never with ``--json``:
  the bytes of the sources' files read of what they had left (each source's ``bytes_left``), the
  phase and counts; at the end a summary (read, analysed, skipped by reason, problems with where, events).
- ``--json`` prints the envelope with the pass report's keys (``PassReport.to_json()``) or, for
  ``events``, ``{"events": [...]}``.
- Exit statuses: 4 when ``OUT`` cannot be written, 5 when pyspark is missing for
  ``--engine spark``, 2 when ``events`` finds no committed pass in ``OUT``.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import EXIT_ENVIRONMENT, EXIT_OUTPUT, EXIT_USAGE, _err, json_option

if TYPE_CHECKING:
    from msgwatch.analysis.inputs import Source
    from msgwatch.analysis.passes import PassProgress

OoniFilter = tuple[dt.date | None, dt.date | None, set[str] | None]
"""``--ooni-since``, ``--ooni-until``, ``--ooni-cc``."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_BUCKET = re.compile(r"([0-9]{1,9})([smhd]?)")


def parse_bucket(text: str, option: str = "--bucket") -> int:
    """``1h``, ``10m``, ``30s``, ``2d`` or plain seconds → seconds (1 s to 365 days)."""
    from msgwatch.analysis.schema import MAX_BUCKET_SECONDS

    match = _BUCKET.fullmatch(text.strip().lower())
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"] if match else 0
    if not 1 <= seconds <= MAX_BUCKET_SECONDS:
        message = f"{text!r} is not a bucket: 1h, 10m, 30s, 2d or seconds (1 s to 365 days)"
        raise click.BadParameter(message, param_hint=option)
    return seconds


def parse_moment(text: str | None, option: str) -> dt.datetime | None:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` (``T`` allowed, an offset converted) → naive UTC."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        message = f"{text!r} is not YYYY-MM-DD[ HH:MM:SS]"
        raise click.BadParameter(message, param_hint=option) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class Inputs:
    """What ``analyse``'s options ask for (the sources, before they are built)."""

    out: Path
    archives: tuple[Path, ...]
    database: str | None
    jsonl: tuple[Path, ...]
    ooni: Path | None
    ooni_filter: OoniFilter
    bucket_seconds: int


def build_sources(inputs: Inputs) -> list[Source]:
    """The sources the options name: each archive, each JSONL file, the OONI directory."""
    from msgwatch.analysis.inputs.jsonl import jsonl_sources
    from msgwatch.collector.store.feed import ArchiveSource

    sources: list[Source] = [ArchiveSource(d, inputs.database) for d in inputs.archives]
    sources += jsonl_sources(list(inputs.jsonl))
    if inputs.ooni is not None:
        from msgwatch.analysis.inputs.ooni_bucket import OoniBucketSource

        since, until, ccs = inputs.ooni_filter
        # --ooni-until is the last day read; the source's until is the first day left out
        after = until + dt.timedelta(days=1) if until and until < dt.date.max else None
        sources.append(OoniBucketSource(inputs.ooni, since=since, until=after, ccs=ccs))
    return sources


@contextmanager
def progress_callback(show: bool) -> Iterator[Callable[[PassProgress], None] | None]:
    """A Rich progress bar on stderr fed by the pass's progress callback (None when not shown):
    the sources' bytes read of what they had left (a pulsing bar when a source cannot say), the
    phase, the counts, the time spent and, while reading, the time left."""
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        SpinnerColumn(),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("analysing", total=None)

        def update(progress: PassProgress) -> None:
            where = escape(str(progress.where or "")[-32:])
            bar.update(
                task,
                total=progress.total_bytes,
                completed=progress.read_bytes,
                description=f"{progress.phase}: {progress.read:,} read, {progress.analysed:,}"
                f" analysed, {progress.problems:,} problems  [dim]{where}[/]",
            )

        yield update


def run_duckdb(
    inputs: Inputs, workers: int, rebuild: bool, progress: Callable[[PassProgress], None] | None
) -> dict[str, Any]:
    """One incremental pass (:func:`msgwatch.analysis.passes.run_pass`); its report as JSON."""
    from msgwatch.analysis.passes import PassBusy, PassConfig, run_pass

    config = PassConfig(
        sources=build_sources(inputs),
        out_dir=inputs.out,
        bucket_seconds=inputs.bucket_seconds,
        workers=workers,
        rebuild=rebuild,
        progress=progress,
    )
    try:
        return run_pass(config).to_json()
    except PassBusy as exc:
        raise _err(str(exc), EXIT_OUTPUT) from exc


def run_spark(inputs: Inputs) -> dict[str, Any]:
    """The same analysis on Spark (:func:`msgwatch.analysis.spark.run_spark`, a batch rebuild)."""
    from msgwatch.analysis.spark import SparkConfig
    from msgwatch.analysis.spark import run_spark as spark_job

    since, until, ccs = inputs.ooni_filter
    if ccs is not None and len(ccs) > 1:
        raise click.BadParameter("one country with --engine spark", param_hint="--ooni-cc")
    config = SparkConfig(
        out_dir=str(inputs.out),
        jsonl=[str(p) for p in inputs.jsonl],
        archives=[str(p) for p in inputs.archives],
        ooni=[str(inputs.ooni)] if inputs.ooni is not None else [],
        ooni_cc=next(iter(ccs)) if ccs else None,
        ooni_since=since,
        ooni_until=until,
        bucket_seconds=inputs.bucket_seconds,
    )
    try:
        return spark_job(config).to_json()
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "pyspark":
            raise
        message = "--engine spark needs pyspark and Java: pip install 'msgwatch[spark]'"
        raise _err(message, EXIT_ENVIRONMENT) from exc


@click.command("analyse")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--archive", "archives", multiple=True, metavar="DATA",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A collector's data directory (read incrementally; repeatable).")  # fmt: skip
@click.option("--jsonl", "jsonl", multiple=True, metavar="PATH",
              type=click.Path(exists=True, path_type=Path),
              help="A JSONL file of measurements, .jsonl or .jsonl.gz, or a folder of them "
                   "(read in name order; repeatable).")  # fmt: skip
@click.option("--database", metavar="URL", envvar="MSGWATCH_DATABASE",
              help="With --archive: the collector's postgresql:// index (default: its SQLite).")  # fmt: skip
@click.option("--ooni", type=click.Path(exists=True, file_okay=False, path_type=Path),
              metavar="DIR", help="OONI's raw bucket layout: raw/YYYYMMDD/HH/CC/TEST/*.jsonl.gz.")  # fmt: skip
@click.option("--ooni-since", metavar="D", help="With --ooni: first day read (YYYY-MM-DD).")
@click.option("--ooni-until", metavar="D", help="With --ooni: last day read (YYYY-MM-DD).")
@click.option("--ooni-cc", "ooni_cc", multiple=True, metavar="CC", help="With --ooni: countries.")
@click.option("--bucket", default="1h", show_default=True,
              help="Aggregate and event bucket: 1h, 10m, 30s, 2d or seconds (1 s to 365 days).")  # fmt: skip
@click.option("--rebuild", is_flag=True, help="Forget the state: re-read, re-judge, re-detect.")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb",
              show_default=True, help="spark: the same pass on PySpark (docs/analysis-spark.md).")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Processes that parse and judge (1: in this process).")  # fmt: skip
@json_option("Print the pass report as one JSON object.")
def analyse_command(
    out: Path,
    archives: tuple[Path, ...],
    jsonl: tuple[Path, ...],
    database: str | None,
    ooni: Path | None,
    ooni_since: str | None,
    ooni_until: str | None,
    ooni_cc: tuple[str, ...],
    bucket: str,
    rebuild: bool,
    engine: str,
    workers: int,
    as_json: bool,
) -> None:
    """Analyse measurements into OUT: observations, verdicts, aggregates and events."""
    from msgwatch.cli.envelope import emit

    seconds = parse_bucket(bucket)
    if not (archives or jsonl or ooni):
        raise click.UsageError("name at least one source: --archive, --jsonl or --ooni")
    if ooni is None and (ooni_since or ooni_until or ooni_cc):
        raise click.UsageError("--ooni-since, --ooni-until and --ooni-cc need --ooni")
    if any(re.fullmatch(r"[A-Za-z]{2}", cc) is None for cc in ooni_cc):
        raise click.BadParameter("a country is two letters", param_hint="--ooni-cc")
    since, until = (
        parse_moment(ooni_since, "--ooni-since"),
        parse_moment(ooni_until, "--ooni-until"),
    )
    ooni_filter = (
        since.date() if since else None,
        until.date() if until else None,
        {cc.upper() for cc in ooni_cc} or None,
    )
    inputs = Inputs(out, archives, database, jsonl, ooni, ooni_filter, seconds)
    show = not as_json and sys.stderr.isatty()
    with progress_callback(show and engine == "duckdb") as progress:
        try:
            if engine == "spark":
                report = run_spark(inputs)
            else:
                report = run_duckdb(inputs, workers, rebuild, progress)
        except OSError as exc:
            raise _err(f"cannot write {out}: {exc}", EXIT_OUTPUT) from exc
    if as_json:
        emit(report)
    else:
        from msgwatch.cli.analyse_render import print_summary

        print_summary(report, Console())


@click.command("events")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--since", metavar="T", help="Events going on at or after T (YYYY-MM-DD[ HH:MM]).")
@click.option("--until", metavar="T", help="Events started before T.")
@click.option("--cc", metavar="CC", help="Country (two letters).")
@click.option("--asn", metavar="ASN", help="Network: AS<n> or <n>.")
@click.option("--service", metavar="ID", help="Catalogue id (whatsapp, telegram, …).")
@click.option("--function", metavar="F", help="text, voice, video, media, web, registration, …")
@click.option("--level", type=click.Choice(["network", "country"]), help="Only this level.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="At most this many events.")  # fmt: skip
@json_option("Print the events as one JSON object.")
def events_command(
    out: Path,
    since: str | None,
    until: str | None,
    cc: str | None,
    asn: str | None,
    service: str | None,
    function: str | None,
    level: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The blocking events of OUT's last pass, newest first, with the country events' stories."""
    if cc is not None and re.fullmatch(r"[A-Za-z]{2}", cc) is None:
        raise click.BadParameter("two letters", param_hint="--cc")
    if asn is not None and re.fullmatch(r"(?:[Aa][Ss])?[0-9]{1,10}", asn) is None:
        raise click.BadParameter("AS<n> or <n>", param_hint="--asn")
    window = parse_moment(since, "--since"), parse_moment(until, "--until")
    from msgwatch.analysis.query import Filters, Lake, LakeMissing
    from msgwatch.cli.analyse_render import events_table, stories
    from msgwatch.cli.envelope import emit

    filters = Filters(
        since=window[0],
        until=window[1],
        probe_cc=cc.upper() if cc else None,
        probe_asn=("AS" + asn.upper().removeprefix("AS")) if asn else None,
        service=service,
        function=function,
        level=level,
    )
    try:
        lake = Lake(out)
    except LakeMissing as exc:
        raise _err(
            f"{out} holds no analysis (run msgwatch analyse first): {exc}", EXIT_USAGE
        ) from exc
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(events) < limit:
        page = lake.events(filters, limit=min(1000, limit - len(events)), cursor=cursor)
        events += page.results
        cursor = page.next_cursor
        if cursor is None:
            break
    if as_json:
        state = lake.state
        emit({"rules_version": state.get("rules_version"),
              "schema_version": state.get("schema_version"), "events": events})  # fmt: skip
        return
    console = Console()
    console.print(events_table(events))
    for sentence in stories(events):
        console.print(sentence)

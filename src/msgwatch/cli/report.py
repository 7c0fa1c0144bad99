"""``msgwatch report``: the self-contained HTML report (:mod:`msgwatch.dashboard.report`) of a
period, a country or one event, written to ``--output``; and the demo's ending, the same report
over the lab timeline's analysis (:func:`story_report`).

Rules:

- The filters (``--since``, ``--until``, ``--cc``, ``--asn``, ``--service``, ``--function``,
  ``--verdict``) are read as the dashboard reads its URL (:class:`ViewFilters`); one it cannot read
  is a usage error of that option (exit 2). ``--event`` excludes them.
- An analysis directory without a committed pass, or an event it does not hold, is exit 2 with a
  message that says what to do; a report that cannot be written is exit 4.
- Imports are light (``msgwatch --help`` loads this module): the dashboard is imported inside the
  functions.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import EXIT_OUTPUT, EXIT_USAGE, _err, json_option

if TYPE_CHECKING:
    from msgwatch.dashboard.report import ReportScope

EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
FILTERS = ("since", "until", "cc", "asn", "service", "function", "verdict")


@dataclass(frozen=True)
class ReportJob:
    """What to report on, from where, to where."""

    analysis_dir: Path
    measurements: tuple[Path, ...]
    scope: ReportScope
    output: Path


def write_report(job: ReportJob) -> Path:
    """Build the report of ``job.scope`` and write it to ``job.output``. Raises
    :class:`msgwatch.analysis.query.LakeMissing`, :class:`msgwatch.dashboard.report.UnknownEvent`
    and :class:`OSError`."""
    from msgwatch.dashboard.data import Observatory
    from msgwatch.dashboard.measurements import JsonlMeasurements
    from msgwatch.dashboard.report import build_report
    from msgwatch.session.output import write_private

    source = JsonlMeasurements(list(job.measurements)) if job.measurements else None
    observatory = Observatory(job.analysis_dir, source)
    observatory.warm()  # the day and week roll-ups: a long period is read from them, not hour by hour
    html = build_report(observatory, job.scope)
    write_private(job.output, [html.encode("utf-8")])
    return job.output


def serve_command(analysis_dir: Path, measurements: tuple[Path, ...]) -> str:
    """The shell command that serves the dashboard over ``analysis_dir``."""
    words = ["msgwatch", "dashboard", "serve", "--analysis-dir", str(analysis_dir)]
    for path in measurements:
        words += ["--measurements", str(path)]
    return shlex.join(words)


@dataclass(frozen=True)
class StoryReport:
    """The demo's ending: the report written, and the command that serves the dashboard."""

    report: Path
    serve: str


def story_path(measurements: Path) -> Path:
    """The story's report beside a measurements file: ``run.jsonl`` → ``run-story.html``."""
    return measurements.with_name(f"{measurements.stem}-story.html")


def story_report(analysis_dir: Path, measurements: Path, output: Path | None = None) -> StoryReport:
    """The report of everything ``analysis_dir`` holds (its whole span, up to the filters' longest
    range), written to ``output`` (default :func:`story_path`), and the dashboard's command over
    the same data: the demo's ending. Raises as :func:`write_report`."""
    from msgwatch.dashboard.data import Observatory
    from msgwatch.dashboard.report import ReportScope, whole_span

    scope = ReportScope(whole_span(Observatory(analysis_dir)))
    job = ReportJob(analysis_dir, (measurements,), scope, output or story_path(measurements))
    return StoryReport(write_report(job), serve_command(analysis_dir, (measurements,)))


def keep_story(timeline: dict[str, Any], measurements: Path) -> dict[str, str]:
    """Keep a lab timeline run's analysis (``<measurements>-analysis/``) and the collector's
    measurements with their uids (``<measurements>-collected.jsonl``) beside its measurements,
    before the run's internals go: what the report and the dashboard read. Returns the
    timeline's new ``analysis_dir`` and ``collected``. Raises :class:`OSError`."""
    lake = measurements.with_name(f"{measurements.stem}-analysis")
    collected = measurements.with_name(f"{measurements.stem}-collected.jsonl")
    keep_analysis(Path(timeline["analysis_dir"]), lake)
    keep_collected(Path(timeline["data_dir"]), collected)
    return {"analysis_dir": str(lake), "collected": str(collected)}


def keep_collected(data_dir: Path, target: Path) -> Path:
    """The collector's measurements (its archive in ``data_dir``), each with the uid the
    collector gave it (``measurement_uid``, the uid the lake knows it by), as one JSONL file."""
    import orjson

    from msgwatch.analysis.inputs import Item
    from msgwatch.collector.store.feed import ArchiveSource
    from msgwatch.session.output import write_private

    def lines() -> Iterator[bytes]:
        for read in ArchiveSource(data_dir).read(None):
            if isinstance(read, Item) and read.measurement_uid:
                measurement = orjson.loads(read.line)
                if isinstance(measurement, dict):
                    measurement["measurement_uid"] = read.measurement_uid
                    yield orjson.dumps(measurement) + b"\n"

    write_private(target, lines())
    return target


def keep_analysis(source: Path, target: Path) -> Path:
    """Copy a run's analysis directory (a lake) to ``target``, replacing an earlier lake there;
    a ``target`` that exists and is not a lake raises :class:`FileExistsError`."""
    if target.exists():
        if not (target / "state.json").is_file():
            raise FileExistsError(f"{target} exists and holds no analysis")
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".work", "lock"))
    return target


def _scope(values: dict[str, str | None], event: str | None) -> ReportScope:
    """The report's scope from the options (usage errors name the option)."""
    from msgwatch.dashboard.filters import BadQuery, ViewFilters
    from msgwatch.dashboard.report import ReportScope

    given = {name: value for name, value in values.items() if value}
    if event is not None and given:
        raise click.UsageError("--event reports one event: leave out the filters")
    if event is not None and not EVENT_ID.fullmatch(event):
        raise click.BadParameter(
            "not an event id (msgwatch events lists them)", param_hint="--event"
        )
    for name, value in given.items():
        try:
            ViewFilters.parse({name: value})
        except BadQuery as exc:
            reason = str(exc).removeprefix(f"{name}: ")
            raise click.BadParameter(reason, param_hint=f"--{name}") from exc
    try:
        filters = ViewFilters.parse(given)
    except BadQuery as exc:
        raise click.UsageError(str(exc)) from exc
    return ReportScope(filters=filters, event_id=event)


def _filter_options(func: click.decorators.FC) -> click.decorators.FC:
    helps = {
        "since": "From (UTC, inclusive): YYYY-MM-DD or YYYY-MM-DDTHH:MM.",
        "until": "Until (UTC, exclusive): YYYY-MM-DD or YYYY-MM-DDTHH:MM.",
        "cc": "Country (two letters).",
        "asn": "Network (AS<n>).",
        "service": "Service id (whatsapp, telegram, ...).",
        "function": "Function (text, voice, video, media, web, registration).",
        "verdict": "Only events and rows of this verdict.",
    }
    for name in reversed(FILTERS):
        func = click.option(f"--{name}", help=helps[name])(func)
    return func


@click.command("report")
@click.option("--analysis-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The analysis's output directory (msgwatch analyse OUT).")  # fmt: skip
@click.option("--measurements", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The measurements analysed (JSONL, .jsonl.gz); repeatable.")  # fmt: skip
@_filter_options
@click.option("--event", "event_id", help="Report one event (its id) instead of a period.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")  # fmt: skip
@json_option()
def report_command(
    analysis_dir: Path,
    measurements: tuple[Path, ...],
    event_id: str | None,
    output: Path,
    as_json: bool,
    **filters: str | None,
) -> None:
    """One self-contained HTML report (no script, nothing loaded from elsewhere) of a period,
    country or event: the stories, a summary table, per event its chart, controls and evidence
    uids, and the method in plain words. Fit to attach to an article or a complaint."""
    from msgwatch.analysis.query import LakeMissing
    from msgwatch.cli.envelope import emit
    from msgwatch.dashboard.report import UnknownEvent
    from msgwatch.session.output import explain

    job = ReportJob(analysis_dir, measurements, _scope(filters, event_id), output)
    try:
        write_report(job)
    except LakeMissing as exc:
        message = f"{analysis_dir} holds no analysis (run msgwatch analyse first): {exc}"
        raise _err(message, EXIT_USAGE) from exc
    except UnknownEvent as exc:
        raise _err(
            f"{exc.args[0]} (msgwatch events {analysis_dir} lists them)", EXIT_USAGE
        ) from exc
    except OSError as exc:
        raise _err(
            f"cannot write {output}: {explain(exc, 'choose another --output')}", EXIT_OUTPUT
        ) from exc
    if as_json:
        emit({"output": str(output)})
        return
    Console().print(f"Report: {escape(str(output))}")

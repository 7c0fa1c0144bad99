"""``msgwatch lab ...`` and ``msgwatch demo``: the censorship lab from the command line.

``demo`` runs the lab's az-2017 scenario and then its story over time, az-2017-timeline
(:func:`lab_demo`), or with ``--mini`` the loopback mini-Internet (:mod:`msgwatch.cli.demo`). A
scenario with ``[analysis]`` also prints the events the analysis found against the expected ones
and the country events' stories, and writes the events beside the measurements
(``<measurements>-events.json``), keeping its analysis (``-analysis/``) and the collector's
measurements (``-collected.jsonl``) there too. The demo ends with the timeline's report
(``-story.html``, msgwatch.cli.report) and the command that serves the dashboard over it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.cli.common import (
    EXIT_ENVIRONMENT,
    EXIT_MISMATCH,
    EXIT_OUTPUT,
    EXIT_USAGE,
    OUTPUT_HELP,
    _err,
    json_option,
)
from msgwatch.cli.envelope import emit
from msgwatch.cli.names import complete_scenarios, scenario_names
from msgwatch.cli.render import comparison_table, match_cell
from msgwatch.report.tables import Column, FitTable
from msgwatch.session.errors import did_you_mean

if TYPE_CHECKING:  # the lab is imported by the commands that use it (`msgwatch --help` stays fast)
    from msgwatch.cli.report import StoryReport
    from msgwatch.lab.scenario import Scenario

LAB_FENCE = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"


def _scenario(name: str) -> Scenario:
    from msgwatch.lab.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(name)
    except ScenarioError as exc:
        hint = "" if Path(name).suffix else did_you_mean([name], scenario_names())
        raise _err(f"{exc}{hint}", EXIT_USAGE) from exc


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _err(
            "the lab makes network namespaces: run it as root (sudo msgwatch ...)",
            EXIT_ENVIRONMENT,
        )


def results_table(rows: list[dict[str, Any]], title: str) -> FitTable:
    return comparison_table(rows, title)


def events_table(rows: list[dict[str, Any]], title: str) -> FitTable:
    """The events the analysis found against the expected ones (msgwatch.lab.timeline's rows)."""
    table = FitTable(
        Column("isp", key=True),
        Column("service", key=True),
        Column("function", key=True),
        Column("expected", key=True),
        Column("expected from", secondary=True),
        Column("expected until", secondary=True),
        Column("found", key=True),
        Column("start", secondary=True),
        Column("end", secondary=True),
        Column("match", key=True),
        title=title,
        carrier=-2,
    )
    for r in rows:
        table.add_row(
            escape(r["isp"]), escape(str(r["service"])), escape(str(r["function"])),
            escape(r["expected"]), r["expected_start"] or "", r["expected_end"] or "",
            escape(str(r["pattern"] or "no event")), r["start"] or "",
            r["end"] or ("ongoing" if r["pattern"] else ""), match_cell(r["match"]),
        )  # fmt: skip
    return table


def print_timeline(console: Console, summary: dict[str, Any]) -> None:
    """A scenario with time: its phases, the events against the ground truth, the stories."""
    timeline = summary["timeline"]
    phases = ", ".join(f"{p['phase']} {p['start'][11:]}" for p in timeline["phases"])
    console.print(f"Phases (UTC): {escape(phases)}; bucket {timeline['bucket_seconds']} s")
    console.print(events_table(timeline["rows"], "Events the analysis found, against the phases"))
    console.print(f"{timeline['matched']} of {timeline['total']} events match the ground truth.")
    for story in timeline["stories"]:
        console.print(f"Story: {escape(story)}")
    console.print(f"Events: {escape(summary['events_file'])}")


def status_of(summary: dict[str, Any]) -> int:
    """0 when every verdict, and every event of a scenario with time, matches."""
    timeline = summary.get("timeline")
    events_ok = timeline is None or timeline["matched"] == timeline["total"]
    return 0 if summary["matched"] == summary["total"] and events_ok else EXIT_MISMATCH


def run_and_report(
    scenario: Scenario, output: str | None, as_json: bool, work_dir: str | None = None
) -> dict[str, Any]:
    """``lab run``: the scenario end to end. What one would publish goes where ``--output`` says
    (msgwatch.session.output: the measurements of every phase and ISP in one JSONL file, the HTML
    report beside it); the run's internals (each lab probe's state and spool, the rulesets, an
    observatory's collector: msgwatch.lab.run's ``internal/``) go to ``work_dir``, else to a
    private temporary directory that is removed when the run succeeds and kept, and named, when
    it fails."""
    import shutil

    from msgwatch.cli.report import keep_story
    from msgwatch.fence import FENCE_VARIABLE
    from msgwatch.lab.run import run_scenario
    from msgwatch.lab.topology import LabError
    from msgwatch.report.html import scenario_report
    from msgwatch.session.output import (
        explain,
        output_path,
        report_path,
        write_jsonl,
        write_private,
    )

    _need_root()
    os.environ.setdefault(FENCE_VARIABLE, LAB_FENCE)
    measurements = output_path(output, prefix=f"msgwatch-{scenario.name}")
    report = report_path(measurements)
    keep = work_dir is not None
    workdir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="msgwatch-lab-"))
    console = Console(stderr=True)
    say = None if as_json else (lambda text: console.print(f"[dim]{escape(text)}[/]"))
    try:
        run = run_scenario(scenario, workdir, say=say)
    except (LabError, RuntimeError, OSError) as exc:
        raise _err(f"{exc} (the run's internals are in {workdir})", EXIT_ENVIRONMENT) from exc
    events = measurements.with_name(f"{measurements.stem}-events.json")
    try:
        write_jsonl(measurements, [m for r in run.runs for m in r.measurements])
        write_private(report, [scenario_report(run).encode("utf-8")])
        if run.timeline is not None:
            write_private(events, [json.dumps(run.timeline["events"], indent=1).encode("utf-8")])
            run.timeline.update(keep_story(run.timeline, measurements))  # the dashboard's data
    except OSError as exc:
        where = explain(exc, "choose another --output")
        raise _err(f"cannot write {exc.filename or measurements}: {where}", EXIT_OUTPUT) from exc
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = run.summary()
    summary.update(output=str(measurements), report=str(report), timings=run.timings)
    if run.timeline is not None:
        summary["events_file"] = str(events)
    summary["internal"] = str(workdir / "internal") if keep else None
    return summary


@click.command("demo")
@click.option("--mini", is_flag=True, help="The loopback mini-Internet instead of the lab.")
@click.option("--timeout", type=click.FloatRange(0.5, 60), default=4.0, show_default=True,
              help="With --mini: the probe's deadline.")  # fmt: skip
@click.option("--output", type=click.Path(), help=OUTPUT_HELP)
@json_option()
def demo_command(mini: bool, timeout: float, output: str | None, as_json: bool) -> None:
    """The censorship lab's az-2017 scenario: calls abroad blocked, text working; every verdict
    against the ground truth, and an HTML report. ``--mini``: a loopback Internet, no namespaces."""
    if mini:
        from msgwatch.cli.demo import run_demo

        run_demo(timeout=timeout, output=output, as_json=as_json)
        return
    lab_demo(output, as_json)


@click.group("lab")
def lab_group() -> None:
    """The censorship lab: an emulated Internet of network namespaces with known censorship."""


@lab_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def lab_list(as_json: bool) -> None:
    """The shipped scenarios."""
    from msgwatch.lab.scenario import list_scenarios

    scenarios = list_scenarios()
    if as_json:
        rows = [
            {"scenario": s.name, "title": s.title, "services": s.services,
             "phases": [p.name for p in s.phase], "probe_gap": s.probe_gap or None}
            for s in scenarios
        ]  # fmt: skip
        emit({"scenarios": rows})
        return
    table = FitTable(
        Column("scenario", key=True),
        Column("title"),
        Column("phases", justify="right"),
        title="Scenarios",
    )
    for s in scenarios:
        table.add_row(s.name, escape(s.title), str(len(s.phase)))
    Console().print(table)


@lab_group.command("run")
@click.argument("scenario", shell_complete=complete_scenarios)
@click.option("--output", type=click.Path(), help=OUTPUT_HELP)
@click.option("--work-dir", type=click.Path(file_okay=False),
              help="Keep the run's internals (probe state, spools, rulesets, an observatory's "
                   "collector) here, under internal/ (default: a temporary directory, removed "
                   "after a successful run).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def lab_run(scenario: str, output: str | None, work_dir: str | None, as_json: bool) -> None:
    """Up, probe from every ISP, compare with the ground truth, down. Exit status 7 when some
    verdict differs from the ground truth."""
    chosen = _scenario(scenario)
    summary = run_and_report(chosen, output, as_json, work_dir)
    status = status_of(summary)
    if as_json:
        public = {k: summary[k] for k in ("scenario", "results", "matched", "total", "output",
                                          "report", "internal")}  # fmt: skip
        keep = ("phase", "isp", "service", "function", "expected", "expected_mechanism",
                "verdict", "mechanism", "match")  # fmt: skip
        public["results"] = [{k: r[k] for k in keep} for r in summary["results"]]
        if "observatory" in summary:
            public["observatory"] = summary["observatory"]
        if "timeline" in summary:
            public["timeline"] = summary["timeline"]
        emit(public, status=status)
        raise click.exceptions.Exit(status)
    console = Console()
    console.print(results_table(summary["results"], f"lab run {chosen.name}: {chosen.title}"))
    console.print(f"{summary['matched']} of {summary['total']} verdicts match the ground truth.")
    if "observatory" in summary:
        o = summary["observatory"]
        console.print(
            f"Observatory: {o['made']} measurements made, {o['acknowledged']} acknowledged, "
            f"{o['pending']} still pending, {o['collected']} at the collector, "
            f"{len(o['missing'])} missing, {len(o['doubled'])} twice: "
            + ("[green]exact[/]" if o["exact"] else "[red]NOT exact[/]")
        )
    console.print(f"Measurements: {escape(summary['output'])}; report: {escape(summary['report'])}")
    if "timeline" in summary:
        print_timeline(console, summary)
    if summary["internal"]:
        console.print(f"Internals (not for publishing): {escape(summary['internal'])}")
    raise click.exceptions.Exit(status)


@lab_group.command("gc")
def lab_gc() -> None:
    """Remove the leftovers of labs whose owner process is gone (after a crash or kill -9)."""
    from msgwatch.lab.runtime import gc

    _need_root()
    removed = gc()
    click.echo("\n".join(removed) if removed else "nothing to remove")


DEMO_TEXT = (
    "In May 2017, WhatsApp and Skype calls from Azerbaijan to other countries stopped working "
    "while text kept working, and no tool could show it. This demo rebuilds that in the lab: two "
    'ISPs, a censoring router on each, and an "abroad" with the services\' servers, real relays '
    "and a test helper. The probe - the same `msgwatch run` a user runs - measures every function "
    "from both ISPs, and each verdict is compared with what the scenario really did."
)


TIMELINE_TEXT = (
    "\nThe story over time. An observatory does not see one moment: probes on both ISPs measure "
    "on a schedule and submit to a collector abroad while the policy changes - open, then the "
    "Games (calls abroad on ISP 1 dropped in some runs and not in others), then blocked for good, "
    "then lifted. The analysis turns what the collector holds into events, each checked against "
    "the phases."
)


CIRCUMVENTION_TEXT = (
    "\nWhat people turn to. When calls are blocked, people reach for VPNs and proxies. ISP 1 now "
    "drops WhatsApp's calls by inspecting their traffic, and the probe tests each tunnel stage by "
    "stage - connect, handshake, tunnel up, 64 KB through it, traffic held for seconds - then "
    "replays the same calls (and their bit-inverted control) through every tunnel that came up."
)


def _timeline_output(output: str | None, part: str = "timeline") -> str | None:
    """A later part's measurements beside the first scenario's: the same directory, or a file
    named after the one given (``<name>-<part>.jsonl``)."""
    if output is None or output.endswith(os.sep) or Path(output).is_dir():
        return output
    given = Path(output)
    return str(given.with_name(f"{given.stem}-{part}{given.suffix or '.jsonl'}"))


def lab_demo(output: str | None, as_json: bool) -> None:
    """``msgwatch demo``: ``lab run az-2017`` with an explanation and an HTML report, then the
    story over time (``lab run az-2017-timeline``): its events and their story; then what people
    turn to (``lab run calls-via-vpn``): the calls through VPNs and proxies."""
    scenario = _scenario("az-2017")
    console = Console(stderr=as_json)
    if not as_json:
        from msgwatch.report.explain import censor_rules

        console.print(escape(f"{DEMO_TEXT} {censor_rules(scenario)}\n"))
    summary = run_and_report(scenario, output, as_json)
    if not as_json:
        _print_demo(console, summary)
        console.print(escape(TIMELINE_TEXT))
    timeline = run_and_report(_scenario("az-2017-timeline"), _timeline_output(output), as_json)
    story = story_ending(timeline)
    if not as_json:
        _print_timeline_part(console, timeline, story)
        console.print(escape(CIRCUMVENTION_TEXT))
    tunnels = run_and_report(
        _scenario("calls-via-vpn"), _timeline_output(output, "circumvention"), as_json
    )
    status = max(status_of(summary), status_of(timeline), status_of(tunnels))
    if as_json:
        keys = ("scenario", "results", "matched", "total", "output", "report")
        emit({**{k: summary[k] for k in keys},
              "timeline": {**timeline.get("timeline", {}), "output": timeline["output"],
                           "events_file": timeline.get("events_file"),
                           "verdicts_matched": timeline["matched"],
                           "verdicts_total": timeline["total"],
                           "story_report": str(story.report) if story else None,
                           "dashboard": story.serve if story else None},
              "circumvention": {k: tunnels[k] for k in keys}},
             status=status)  # fmt: skip
        raise click.exceptions.Exit(status)
    console.print(results_table(tunnels["results"], "Directly and through the tunnels, on ISP 1"))
    console.print(
        f"{tunnels['matched']} of {tunnels['total']} verdicts match the ground truth. "
        f"Measurements: {escape(tunnels['output'])}"
    )
    raise click.exceptions.Exit(status)


def _print_timeline_part(
    console: Console, timeline: dict[str, Any], story: StoryReport | None
) -> None:
    """The demo's story over time: its verdicts, events, files and report."""
    mismatched = [r for r in timeline["results"] if not r["match"]]
    console.print(
        f"{timeline['matched']} of {timeline['total']} verdicts of the scheduled runs match the "
        "ground truth."
    )
    if mismatched:
        console.print(results_table(mismatched, "Verdicts of the scheduled runs that differ"))
    if "timeline" in timeline:
        print_timeline(console, timeline)
    console.print(f"Measurements over time (OONI format): {escape(timeline['output'])}")
    if story is not None:
        console.print(f"The story, as a report to publish: {escape(str(story.report))}")
        console.print(f"See it in the dashboard: {escape(story.serve)}", soft_wrap=True)


def story_ending(timeline: dict[str, Any]) -> StoryReport | None:
    """The demo's ending: the report over the timeline run's analysis, beside its measurements
    (msgwatch.cli.report); None for a run without analysis."""
    from msgwatch.cli.report import story_path, story_report

    analysis = timeline.get("timeline", {}).get("analysis_dir")
    if not analysis:
        return None
    measurements = Path(timeline["timeline"].get("collected") or timeline["output"])
    try:
        return story_report(Path(analysis), measurements, story_path(Path(timeline["output"])))
    except OSError as exc:
        raise _err(f"cannot write the story's report: {exc}", EXIT_OUTPUT) from exc


def _print_demo(console: Console, summary: dict[str, Any]) -> None:
    """The az-2017 part of the demo: its verdicts, explanation and files."""
    from msgwatch.report.explain import explanation

    console.print(
        results_table(summary["results"], "Verdicts on both ISPs, against the ground truth")
    )
    for line in explanation(summary["results"]):
        console.print(escape(line))
    console.print(f"\n{summary['matched']} of {summary['total']} verdicts match the ground truth.")
    console.print(f"Report: {escape(summary['report'])}")
    console.print(f"Measurements (OONI format): {escape(summary['output'])}")


@lab_group.command("up")
@click.argument("scenario", shell_complete=complete_scenarios)
@click.option("--phase", default=0, show_default=True, help="Index of the phase to apply.")
def lab_up(scenario: str, phase: int) -> None:
    """Bring a lab up with a scenario's rules and leave it running (``lab down`` ends it).

    The lab belongs to a holder process started in the background: it keeps the lab's servers
    and answers ``lab down`` (or any SIGTERM) by taking everything down again."""
    import subprocess
    import sys
    import time

    chosen = _scenario(scenario)
    _need_root()
    if not 0 <= phase < len(chosen.phase):
        raise _err(f"{chosen.name} has phases 0..{len(chosen.phase) - 1}", EXIT_USAGE)
    ready = Path(tempfile.mkdtemp(prefix="msgwatch-lab-up-")) / "ready.json"
    holder = subprocess.Popen(
        [sys.executable, "-m", "msgwatch", "lab", "hold", scenario, "--phase", str(phase),
         "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while not ready.exists():
            if holder.poll() is not None:
                stderr = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
                raise _err(f"the lab did not come up: {stderr.strip()[-2000:]}", EXIT_ENVIRONMENT)
            if time.monotonic() > deadline:
                holder.terminate()
                raise _err("the lab did not come up within 60 s", EXIT_ENVIRONMENT)
            time.sleep(0.1)
        info = json.loads(ready.read_text())
    finally:  # the holder needs its ready file no more (it was left in /tmp, one per lab up)
        shutil.rmtree(ready.parent, ignore_errors=True)
    console = Console()
    console.print(f"lab {info['lab_id']} up with {chosen.name}, phase {chosen.phase[phase].name}")
    for isp in ("isp1", "isp2"):
        console.print(
            f"  {isp}: probe namespace {info['probes'][isp]}; resolver {info['resolvers'][isp]}"
        )
    console.print(f"  catalogue {info['catalogue']}; CA {info['ca']}; helper {info['helper']}")
    console.print(
        "Run the probe inside: ip netns exec "
        f"{info['probes']['isp1']} msgwatch run --catalogue {info['catalogue']} "
        f"--resolver {info['resolvers']['isp1']} --ca-bundle {info['ca']} --helper {info['helper']} "
        f"--geoip-db {info['geoip']}"
    )
    console.print("End it with: msgwatch lab down")


@lab_group.command("hold", hidden=True)
@click.argument("scenario")
@click.option("--phase", default=0)
@click.option("--ready-file", type=click.Path(dir_okay=False), required=True)
def lab_hold(scenario: str, phase: int, ready_file: str) -> None:
    """Internal: own a lab until SIGTERM (what ``lab up`` starts in the background)."""
    import signal
    import threading

    from msgwatch.lab.run import apply_phase, scenario_lab, write_geoip

    chosen = _scenario(scenario)
    stop = threading.Event()
    with scenario_lab(chosen) as lab:  # with the scenario's circumvention servers, if any
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        apply_phase(lab, chosen, phase)
        info = {
            "lab_id": lab.lab_id,
            "probes": {isp: lab.ns(lab.probe_role(isp)) for isp in lab.isps},
            "resolvers": {isp: lab.resolver(isp) for isp in lab.isps},
            "catalogue": str(lab.catalogue_dir),
            "ca": str(lab.ca_bundle),
            "helper": lab.helper_address("abroad"),
            "geoip": str(write_geoip(lab, chosen)),
        }
        tmp = Path(ready_file + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready_file)
        while not stop.wait(1.0):
            pass


@lab_group.command("down")
@click.argument("lab_id", required=False)
def lab_down(lab_id: str | None) -> None:
    """End running labs (all of them, or the one named): their holder takes them down."""
    import signal
    import time

    from msgwatch.lab import runtime

    _need_root()
    ids = [lab_id] if lab_id else runtime.known_ids()
    for lid in ids:
        owner = runtime.owner_alive(lid)
        if owner is not None:
            os.kill(owner, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while runtime.owner_alive(lid) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        removed = runtime.teardown(lid) if lid in runtime.known_ids() else []
        click.echo(f"lab {lid}: down" + (f" ({len(removed)} leftovers removed)" if removed else ""))
    if not ids:
        click.echo("no lab is running")


@lab_group.command("status")
@click.option("--json", "as_json", is_flag=True)
def lab_status(as_json: bool) -> None:
    """The labs on this machine: their namespaces and whether their owner still runs."""
    from msgwatch.lab import runtime

    _need_root()
    rows: list[dict[str, Any]] = [
        {"lab_id": lid, "owner_pid": runtime.owner_alive(lid),
         "namespaces": runtime.lab_namespaces(lid)}
        for lid in runtime.known_ids()
    ]  # fmt: skip
    if as_json:
        emit({"labs": rows})
        return
    if not rows:
        click.echo("no lab on this machine")
    for row in rows:
        state = f"owner {row['owner_pid']}" if row["owner_pid"] else "orphaned (lab gc removes it)"
        click.echo(f"lab {row['lab_id']}: {state}; namespaces: {' '.join(row['namespaces'])}")

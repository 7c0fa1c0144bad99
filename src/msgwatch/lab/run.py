"""``lab run``: bring the lab up, apply a scenario phase by phase, probe from every ISP, compare.

For each phase, the censor rules of each ISP are compiled (``msgwatch.lab.censor``) with their
selectors resolved against this lab, applied atomically, and then the real ``msgwatch run`` is
executed inside every ISP's probe namespace at once — the same command a user runs, configured with
the lab's catalogue, the ISP's resolver, the lab CA and the abroad test helper. The verdicts the
analysis gives on its measurements are compared with the scenario's ground truth, including the
mechanism (:mod:`msgwatch.lab.truth`). With an observatory (several scheduled runs per phase, each
overwriting ``--output``), each run's verdicts are those its ``--json`` answer reports; the
phases' starts are recorded in wall-clock UTC, a phase with ``episodes`` runs one scheduled run at
a time with its rules switched on or off (the runs with the rules off are labelled
``<phase>:off``), and with ``[analysis]`` the analysis over the collector's data must find the
scenario's events (:mod:`msgwatch.lab.timeline`). A scenario with ``circumvention`` groups gets a
lab with those servers, and in each phase ``msgwatch circumvent`` runs in the probes' namespaces
after the direct probe (:func:`circumvention_phase`, :mod:`msgwatch.lab.circumvention_run`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.fence import FENCE_VARIABLE, LAB_NETWORKS
from msgwatch.lab import truth
from msgwatch.lab.observatory import LabCollector, Reconciliation, collector_url, reconcile
from msgwatch.lab.scenario import ISPS, Scenario, resolve_rule, resolve_selector
from msgwatch.lab.servers import BULK_PATH

if TYPE_CHECKING:  # imported where a lab comes up: `lab list` and the scenario tables stay light
    from msgwatch.lab.topology import Lab

INTERNAL = "internal"
Say = Callable[[str], None]


@dataclass
class PhaseRun:
    phase: str
    isp: str
    verdicts: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    seconds: float
    made: int = 0
    """Measurements the phase's runs made (all of them, with an observatory's several runs)."""
    submissions: list[dict[str, Any]] = field(default_factory=list)
    """With an observatory: each scheduled run's submission summary and what its spool held."""
    log: str = ""
    """The end of what the probe wrote to stderr (its warnings), for a failing test to show."""


@dataclass
class ScenarioRun:
    scenario: Scenario
    rows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[PhaseRun] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    observatory: Reconciliation | None = None
    boundaries: list[tuple[str, dt.datetime]] = field(default_factory=list)
    """Each phase's name and the UTC time its rules came into force, then ``("end", …)``."""
    timeline: dict[str, Any] | None = None
    """With ``[analysis]``: :func:`msgwatch.lab.timeline.check`'s result (events, rows, story)."""

    @property
    def matched(self) -> int:
        return truth.matched(self.rows)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "results": self.rows,
            "matched": self.matched,
            "total": len(self.rows),
            **({"observatory": self.observatory.summary()} if self.observatory else {}),
            **({"timeline": self.timeline} if self.timeline is not None else {}),
        }


def scenario_catalogue(scenario: Scenario, catalogue: Catalogue | None = None) -> Catalogue:
    """The catalogue restricted to the scenario's services (all for ``*``)."""
    full = catalogue or load_catalogue()
    if scenario.services == ["*"]:
        return full
    chosen = full.select(scenario.services)
    ids = {s.id for s in chosen}
    # A successor outside the subset (Skype → Teams) would not resolve in the lab's catalogue.
    kept = [s if s.successor in ids else dataclasses.replace(s, successor=None) for s in chosen]
    return Catalogue(full.version, full.path, tuple(kept))


def compare(
    scenario: Scenario, phase: str, isp: str, verdicts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per verdict against the scenario's ground truth (:mod:`msgwatch.lab.truth`)."""
    return [
        {
            "phase": phase,
            "isp": isp,
            **truth.row(scenario.expected(phase, isp, v["service"], v["function"]), v),
            "scope": v.get("scope"),
            "explanation": v.get("explanation"),
        }
        for v in verdicts
    ]


def _observatory_options(scenario: Scenario, state_dir: Path) -> list[str]:
    """Scheduled runs that spool and submit to the lab's collector."""
    from msgwatch.lab.observatory import collector_url

    assert scenario.observatory is not None
    return [
        "--state-dir", str(state_dir),
        "--collector", collector_url(),
        "--every", f"{scenario.observatory.every:g}s",
        "--jitter", "0s",
        "--count", str(scenario.observatory.runs),
        "--submit-timeout", "1",
    ]  # fmt: skip


def _probe_command(
    lab: Lab, isp: str, scenario: Scenario, output: Path, state_dir: Path
) -> list[str]:
    """Each ISP's probe has its own state directory (spool, run.lock): two probes sharing one
    would wait for each other's lock."""
    services = ",".join(s.id for s in lab.mapping.catalogue.services)
    scheduled = (
        _observatory_options(scenario, state_dir)
        if scenario.observatory
        else ["--state-dir", str(state_dir), "--no-submit"]
    )
    return [
        sys.executable, "-m", "msgwatch", "run",
        "--catalogue", str(lab.catalogue_dir),
        "--services", services,
        "--resolver", lab.resolver(isp),
        "--ca-bundle", str(lab.ca_bundle),
        "--helper", lab.helper_address("abroad"),
        "--domestic-helper", lab.helper_address("domestic"),
        "--download-path", BULK_PATH,
        "--yes",
        "--replay-seconds", str(scenario.replay_seconds),
        *(["--replay-seed", str(scenario.replay_seed)] if scenario.replay_seed is not None else []),
        "--timeout", str(scenario.timeout),
        "--output", str(output),
        "--geoip-db", str(geoip_path(lab)),
        "--json",
        *scheduled,
    ]  # fmt: skip


def geoip_path(lab: Lab) -> Path:
    """The lab's GeoIP database (each ISP's network), with the lab's other files."""
    return Path(lab.run_dir) / "geoip.mmdb"


def write_geoip(lab: Lab, scenario: Scenario) -> Path:
    """Each ISP's prefixes → its network (the scenario's ``[networks]``, else the plan's)."""
    from msgwatch.lab import geoip
    from msgwatch.lab.plan import ISP_NETWORKS, isp_prefixes

    named: dict[str, Any] = {str(k): v for k, v in scenario.networks.items()}
    networks = {
        isp: geoip.IspNetwork(n.asn, n.cc, n.name or f"Lab {isp}")
        if (n := named.get(isp))
        else geoip.IspNetwork(*ISP_NETWORKS[isp])
        for isp in ISPS
    }
    prefixes = {isp: isp_prefixes(isp) for isp in ISPS}
    return geoip.lab_database(geoip_path(lab), prefixes, networks)


def internal_dir(workdir: Path) -> Path:
    """What a lab run needs but nobody publishes (see :func:`run_scenario`'s layout)."""
    return workdir / INTERNAL


def state_dir(workdir: Path, isp: str, probe: int = 0) -> Path:
    """An ISP's probe state: its probe id, ``run.lock`` and spool (internal); ``probe``: which
    of an observatory's probes on that ISP."""
    return internal_dir(workdir) / (f"state-{isp}-{probe + 1}" if probe else f"state-{isp}")


def probe_slots(scenario: Scenario) -> list[tuple[str, int]]:
    """(ISP, probe number) of every probe, in ISP order."""
    count = scenario.observatory.probes if scenario.observatory else 1
    return [(isp, n) for isp in ISPS for n in range(count)]


def probe_all(
    lab: Lab, scenario: Scenario, phase: str, workdir: Path, count: int | None = None
) -> list[PhaseRun]:
    """Run the probe in every ISP's probe namespace at once; their results in ISP order.

    With an observatory, each probe makes ``count`` scheduled runs (``--every``; default: the
    observatory's) that spool and submit; every run's verdicts are compared, so a phase has one
    set of rows per run."""
    env = dict(os.environ, **{FENCE_VARIABLE: LAB_NETWORKS})
    started = time.monotonic()
    procs = {}
    runs_each = (count or scenario.observatory.runs) if scenario.observatory else 1
    for isp, n in probe_slots(scenario):
        output = workdir / f"{scenario.name}-{phase}-{isp}{f'-{n + 1}' if n else ''}.jsonl"
        command = _probe_command(lab, isp, scenario, output, state_dir(workdir, isp, n))
        if count is not None:
            command[command.index("--count") + 1] = str(count)
        procs[(isp, n)] = (
            output,
            lab.popen(
                lab.probe_role(isp), command, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
        )  # fmt: skip
    runs = []
    for (isp, _), (output, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=(scenario.timeout * 3 + 60) * runs_each)
        if proc.returncode != 0:
            raise RuntimeError(
                f"the probe failed on {isp} (exit {proc.returncode}): {stderr[-2000:]}"
            )
        answers = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        measurements = [json.loads(line) for line in output.read_text().splitlines()]
        submissions: list[dict[str, Any]] = []
        if scenario.observatory is None:
            # The run's --json answer must parse; the verdicts are the analysis's, on what it wrote.
            verdicts = truth.judged(measurements)
            made = len(measurements)
        else:
            done = [a for a in answers if "verdicts" in a]
            if len(done) != runs_each:
                raise RuntimeError(f"{isp}: {len(done)} of {runs_each} scheduled runs reported")
            verdicts = [v for a in done for v in a["verdicts"]]
            made = sum(a["spool"]["spooled"] for a in done)
            submissions = [{**(a["submission"] or {}), "spool": a["spool"]} for a in done]
        seconds = time.monotonic() - started
        runs.append(
            PhaseRun(phase, isp, verdicts, measurements, seconds, made, submissions, stderr[-2000:])
        )
    return runs


def outage_ruleset(prefixes: Sequence[tuple[str, str]]) -> str:
    """nftables for the abroad namespace: drop what reaches the "down" servers (input hook).
    ``prefixes``: (prefix, proto). Declared, deleted and declared again: an atomic replacement."""
    lines = []
    for prefix, proto in prefixes:
        family = "ip6" if ":" in prefix else "ip"
        match = "" if proto == "any" else f" meta l4proto {proto}"
        lines.append(f"        {family} daddr {prefix}{match} drop")
    body = "\n".join(lines)
    return (
        "table inet msgwatch_outage {}\ndelete table inet msgwatch_outage\n"
        "table inet msgwatch_outage {\n    chain down {\n"
        "        type filter hook input priority 0; policy accept;\n"
        f"{body}\n    }}\n}}\n"
    )


def apply_outages(lab: Lab, scenario: Scenario, phase_index: int, workdir: Path) -> None:
    phase = scenario.phase[phase_index]
    prefixes = [
        (p, o.proto) for o in phase.outage for t in o.to for p in resolve_selector(t, lab.mapping)
    ]
    internal_dir(workdir).mkdir(mode=0o700, parents=True, exist_ok=True)
    ruleset = internal_dir(workdir) / f"{scenario.name}-outage.nft"
    ruleset.write_text(outage_ruleset(prefixes))
    lab.exec("abroad", ["nft", "-f", str(ruleset)], check=True, capture_output=True)


def apply_phase(lab: Lab, scenario: Scenario, phase_index: int, active: bool = True) -> None:
    """The phase's rules on every ISP (``active=False``: no rule at all)."""
    from msgwatch.lab import censor

    phase = scenario.phase[phase_index]
    for isp in ISPS:
        ctx = lab.censor_context(isp)
        chosen = scenario.rules_for(phase, isp) if active else []
        rules = [censor.build_rule(resolve_rule(r, lab.mapping)) for r in chosen]
        compiled = censor.compile_rules(rules, ctx)
        lab.set_resolver_lines(isp, compiled.resolver_lines)
        censor.apply(compiled, ctx)


def circumvention_phase(
    lab: Lab, scenario: Scenario, phase: str, workdir: Path
) -> tuple[list[PhaseRun], list[dict[str, Any]]]:
    """The scenario's circumvention entries tested from its ISPs while ``phase``'s rules are in
    force: each ISP's run and the rows comparing its verdicts with the ground truth."""
    from msgwatch.lab import circumvention_run

    runs, rows = [], []
    for probe in circumvention_run.probe_circumvention(lab, scenario, phase, workdir):
        runs.append(PhaseRun(probe.phase, probe.isp, probe.verdicts, probe.measurements,
                             probe.seconds, len(probe.measurements)))  # fmt: skip
        rows += circumvention_run.compare(scenario, probe.phase, probe.isp, probe.verdicts)
    return runs, rows


def scenario_lab(scenario: Scenario, catalogue: Catalogue | None = None) -> Lab:
    """The lab a scenario runs in (not up yet): its services, its circumvention groups."""
    from msgwatch.lab.topology import Lab

    return Lab(
        catalogue=scenario_catalogue(scenario, catalogue), circumvention=scenario.circumvention
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


BUCKET_LEAD = 0.2
"""Seconds after a bucket's start at which an aligned run begins."""


def wait_for_bucket(scenario: Scenario, not_before: float = 0.0) -> None:
    """With an analysis, sleep until :data:`BUCKET_LEAD` seconds into the next bucket (wall clock,
    as the analysis buckets the measurements' start times) that begins at or after
    ``not_before`` (a ``time.time()``; at most ``BUCKET_LEAD`` late is on time). A run that begins
    there has its measurements in that bucket alone, so a bucket never mixes a run with the
    rules on and one with them off: which runs shared a bucket would otherwise depend on when
    the phase happened to start."""
    if scenario.analysis is None:
        return
    size = scenario.analysis.bucket_seconds
    now = time.time()
    wanted = max(now, not_before) - BUCKET_LEAD
    start = -(-wanted // size) * size  # the first bucket start at or after ``wanted``
    time.sleep(max(0.0, start + BUCKET_LEAD - now))


def probe_phase(lab: Lab, scenario: Scenario, index: int, workdir: Path) -> list[PhaseRun]:
    """The phase's runs: all at once, or with ``episodes`` one scheduled run at a time, the rules
    switched on or off before each, each run starting ``every`` seconds after the previous one."""
    phase = scenario.phase[index]
    if not phase.episodes:
        return probe_all(lab, scenario, phase.name, workdir)
    assert scenario.observatory is not None
    runs: list[PhaseRun] = []
    started = time.time() - scenario.observatory.every
    for k, active in enumerate(phase.episodes):
        # Each run at least ``every`` after the previous one began, at a bucket's start: one run
        # per bucket.
        time.sleep(max(0.0, started + scenario.observatory.every - BUCKET_LEAD - time.time()))
        if k:
            wait_for_bucket(scenario)
        started = time.time()
        if k:  # the first run's rules are already in force
            apply_phase(lab, scenario, index, active)
        label = phase.name if active else f"{phase.name}:off"
        runs.extend(probe_all(lab, scenario, label, workdir, count=1))
    return runs


def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    catalogue: Catalogue | None = None,
    say: Say | None = None,
    after_phase: Callable[[Lab, str], None] | None = None,
) -> ScenarioRun:
    """Up, every phase (apply, probe, compare), down. ``after_phase(lab, phase_name)`` runs
    while the phase's rules are in force (packet checks).

    ``workdir``'s layout keeps what one would publish apart from the run's internals::

        <scenario>-<phase>-<isp>.jsonl   each ISP's measurements in each phase
        internal/                        never to be published (mode 0700):
          state-<isp>/                   each lab probe's probe id, run.lock and spool
          <scenario>-outage.nft          the outage ruleset applied abroad
          collector/                     an observatory's collector: data/, collector.log
    """

    def note(text: str) -> None:
        if say is not None:
            say(text)

    result = ScenarioRun(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    internal_dir(workdir).mkdir(mode=0o700, exist_ok=True)
    started = time.monotonic()
    with scenario_lab(scenario, catalogue) as lab:
        result.timings["up"] = time.monotonic() - started
        note(f"lab {lab.lab_id} up in {result.timings['up']:.1f} s")
        write_geoip(lab, scenario)
        collector = None
        if scenario.observatory is not None:
            collector = LabCollector(lab, internal_dir(workdir) / "collector" / "data")
            collector.start()
            note(f"collector up at {collector_url()}")
        for index, phase in enumerate(scenario.phase):
            wait_for_bucket(scenario)  # phases begin with a bucket (with an analysis)
            t0 = time.monotonic()
            apply_phase(lab, scenario, index, active=not phase.episodes or phase.episodes[0])
            apply_outages(lab, scenario, index, workdir)
            if collector is not None and phase.collector == "restart":
                collector.restart()
                note("collector killed (SIGKILL) and started again")
            result.boundaries.append((phase.name, _now()))
            direct = scenario.circumvent.direct or not scenario.circumvention
            runs = probe_phase(lab, scenario, index, workdir) if direct else []
            for run in runs:
                result.runs.append(run)
                result.rows.extend(compare(scenario, run.phase, run.isp, run.verdicts))
            if scenario.circumvention:
                c_runs, c_rows = circumvention_phase(lab, scenario, phase.name, workdir)
                result.runs += c_runs
                result.rows += c_rows
                note(f"phase {phase.name}: circumvention tested in "
                     f"{sum(r.seconds for r in c_runs):.1f} s")  # fmt: skip
            result.timings[f"phase:{phase.name}"] = time.monotonic() - t0
            note(f"phase {phase.name}: probed both ISPs in {time.monotonic() - t0:.1f} s")
            if after_phase is not None:
                after_phase(lab, phase.name)
        result.boundaries.append(("end", _now()))
        if collector is not None:
            made = sum(run.made for run in result.runs)
            states = [state_dir(workdir, isp, n) for isp, n in probe_slots(scenario)]
            result.observatory = reconcile(states, collector, made)
            collector.stop()
            note(
                f"observatory: {made} measurements made, {result.observatory.collected} at the "
                f"collector ({'exact' if result.observatory.exact else 'NOT exact'})"
            )
            if scenario.analysis is not None:
                from msgwatch.lab.timeline import check

                analysis_dir = internal_dir(workdir) / "analysis"
                result.timeline = check(
                    scenario, result.boundaries, collector.data_dir, analysis_dir
                )
                note(f"analysis: {len(result.timeline['events'])} events")
        t_down = time.monotonic()
    result.timings["down"] = time.monotonic() - t_down
    result.timings["total"] = time.monotonic() - started
    return result

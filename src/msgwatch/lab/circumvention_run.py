"""A scenario's circumvention tests in the lab: ``msgwatch circumvent`` in the probes' namespaces,
its verdicts against the scenario's ground truth.

In each phase, while the phase's censor rules are in force, the real ``msgwatch circumvent`` runs
inside the probe namespace of each ISP in ``[circumvent] isps``, one after the other, with a
``--circumvention`` file holding the scenario's lab entries (:meth:`Scenario.circumvention_entries`,
taken from the lab's own file, :attr:`msgwatch.lab.topology.Lab.circumvention_file`). Its
measurements are judged as a reader would judge them
(:func:`msgwatch.analysis.verdicts.circumvention.judge`) and each verdict is compared with the
ground truth (:func:`compare`):

- every verdict on a lab entry is expected ``ok`` unless ``[[expect_circumvention]]`` says
  otherwise; verdicts on anything else (an entry that is not the lab's) are left out;
- what went through a tunnel that is expected down (``<service>.<function>`` rows of an entry
  whose ``tunnel`` row is expected not ``ok``) is compared only where an expectation names it:
  nothing was meant to go through;
- each entry run must have its ``tunnel`` (``reachability`` for ``tor-reach``) verdict, and every
  listed expectation of the phase and ISP its verdict: one that is missing is a mismatch row, so a
  transport that silently did not run never passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgwatch.fence import FENCE_VARIABLE, LAB_NETWORKS
from msgwatch.lab import truth
from msgwatch.lab.scenario import ENTRY_TYPES, ExpectCircumvention, Scenario
from msgwatch.lab.truth import Expected

if TYPE_CHECKING:
    from msgwatch.lab.topology import Lab

__all__ = [
    "CircumventionProbe",
    "circumvent_command",
    "compare",
    "entries_file",
    "judged",
    "main_function",
    "probe_circumvention",
]

MAX_ENTRIES_BYTES = 1 << 20
"""The lab's ``--circumvention`` file is read only up to this size."""
MAX_MEASUREMENT_BYTES = 32 << 20
"""The measurements of one probe's circumvention run are read only up to this size in all."""
MARGIN = 90.0
"""Seconds a probe's run may take beyond its slowest transport's budget and the sustain stage
(the text and calls through each tunnel, starting and stopping the clients, a loaded machine)."""
DEFAULT_BUDGET = 90.0
"""The budget assumed for an entry type the scenario does not set (the probe's longest default)."""


@dataclass
class CircumventionProbe:
    """One ISP's ``msgwatch circumvent`` run in one phase."""

    phase: str
    isp: str
    verdicts: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    seconds: float
    answer: dict[str, Any] | None
    """The run's ``--json`` answer (None when it printed none)."""


def main_function(entry: str) -> str:
    """The function of an entry's own row: ``reachability`` for ``tor-reach``, else ``tunnel``."""
    return "reachability" if entry == "tor-reach" else "tunnel"


def entries_file(lab: Lab, scenario: Scenario, path: Path) -> Path:
    """The scenario's entries, taken from the lab's ``--circumvention`` file, written to ``path``.

    Raises RuntimeError when the lab's file is missing, too large or lacks one of them."""
    source = Path(lab.circumvention_file)
    try:
        if source.stat().st_size > MAX_ENTRIES_BYTES:
            raise RuntimeError(f"{source}: larger than {MAX_ENTRIES_BYTES} bytes")
        table = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"the lab's circumvention file {source}: {exc}") from exc
    entries = table.get("transport") if isinstance(table, dict) else None
    if not isinstance(entries, list):
        raise RuntimeError(f"the lab's circumvention file {source} has no transport list")
    by_name = {e.get("name"): e for e in entries if isinstance(e, dict)}
    wanted = scenario.circumvention_entries()
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise RuntimeError(f"the lab wrote no entry {', '.join(missing)} (it has {list(by_name)})")
    path.write_text(json.dumps({"transport": [by_name[n] for n in wanted]}, indent=1) + "\n")
    return path


def budgets_in_force(scenario: Scenario) -> dict[str, float]:
    """The budgets the probe will use (``--budget TYPE=SECONDS``): the scenario's; the probe's
    defaults (:data:`msgwatch.circumvention.model.BUDGETS`) for the other types."""
    return dict(scenario.circumvent.budgets)


def circumvent_command(
    lab: Lab, isp: str, scenario: Scenario, entries: Path, output: Path, state_dir: Path
) -> list[str]:
    """``msgwatch circumvent`` for one ISP's probe: only the lab's entries (never the
    catalogue's real endpoints), all at once, the lab's catalogue, resolver, CA and test helper,
    the scenario's sustain and call time, its budgets (:func:`budgets_in_force`), a spool of its
    own."""
    options = scenario.circumvent
    budgets = [a for kind, s in sorted(budgets_in_force(scenario).items())
               for a in ("--budget", f"{kind}={s:g}")]  # fmt: skip
    seed = ["--seed", str(scenario.replay_seed)] if scenario.replay_seed is not None else []
    return [
        sys.executable, "-m", "msgwatch", "circumvent",
        "--circumvention", str(entries),
        "--no-catalogue-entries",
        "--catalogue", str(lab.catalogue_dir),
        "--services", ",".join(options.through) or "none",
        "--resolver", lab.resolver(isp),
        "--ca-bundle", str(lab.ca_bundle),
        "--helper", lab.helper_address("abroad"),
        "--sustain", f"{options.sustain:g}",
        "--call-seconds", f"{options.call_seconds:g}",
        "--concurrency", str(max(1, len(scenario.circumvention_entries()))),
        *budgets,
        *seed,
        "--yes",
        "--state-dir", str(state_dir),
        "--output", str(output),
        "--json",
    ]  # fmt: skip


def run_timeout(scenario: Scenario) -> float:
    """Seconds one probe's run may take before it is stopped (and the phase fails)."""
    options = scenario.circumvent
    kinds = {ENTRY_TYPES[e] for e in scenario.circumvention_entries()}
    budgets = budgets_in_force(scenario)
    slowest = max((budgets.get(k, DEFAULT_BUDGET) for k in kinds), default=0.0)
    return slowest + options.sustain + MARGIN


def read_measurements(output: Path) -> list[dict[str, Any]]:
    """The measurements ``msgwatch circumvent`` wrote to ``output`` (a JSONL file, or a directory
    of them), bounded in size; lines that are not JSON objects are skipped."""
    files = sorted(output.glob("*.jsonl")) if output.is_dir() else [output]
    out: list[dict[str, Any]] = []
    budget = MAX_MEASUREMENT_BYTES
    for path in files:
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            data = handle.read(budget + 1)
        if len(data) > budget:
            raise RuntimeError(f"{path}: the measurements exceed {MAX_MEASUREMENT_BYTES} bytes")
        budget -= len(data)
        for line in data.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
    return out


def judged(measurements: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The circumvention judge's verdicts on ``measurements``, in their order."""
    from msgwatch.analysis.verdicts.circumvention import judge

    return [dict(v) for m in measurements for v in judge(dict(m))]


def _answer(stdout: str) -> dict[str, Any] | None:
    """The last JSON object the run printed (its ``--json`` answer)."""
    for line in reversed(stdout.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            return item
    try:
        whole = json.loads(stdout)
    except ValueError:
        return None
    return whole if isinstance(whole, dict) else None


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a probe's run that outlived its time: SIGTERM (it stops its clients), then SIGKILL."""
    proc.terminate()
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=15)


def probe_circumvention(
    lab: Lab, scenario: Scenario, phase: str, workdir: Path
) -> list[CircumventionProbe]:
    """``msgwatch circumvent`` in each chosen ISP's probe namespace, one ISP after the other (the
    lab's entries carry one client identity per server: a WireGuard peer key is at one endpoint
    at a time, so two probes using it at once would take its tunnel from each other); results in
    ISP order, each ``seconds`` the wall time of its own run.

    Raises RuntimeError when a run fails, outlives :func:`run_timeout` or writes nothing."""
    workdir.mkdir(parents=True, exist_ok=True)
    entries = entries_file(lab, scenario, workdir / f"{scenario.name}-circumvention.json")
    return [_probe_one(lab, scenario, phase, isp, entries, workdir)
            for isp in scenario.circumvent.isps]  # fmt: skip


def _probe_one(
    lab: Lab, scenario: Scenario, phase: str, isp: str, entries: Path, workdir: Path
) -> CircumventionProbe:
    env = dict(os.environ, **{FENCE_VARIABLE: LAB_NETWORKS})
    output = workdir / f"{scenario.name}-{phase}-{isp}-circumvention.jsonl"
    output.unlink(missing_ok=True)
    state = workdir / "internal" / f"circumvention-state-{isp}"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = circumvent_command(lab, isp, scenario, entries, output, state)
    started = time.monotonic()
    proc = lab.popen(lab.probe_role(isp), command, env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=run_timeout(scenario))
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"msgwatch circumvent on {isp} ran longer than {run_timeout(scenario):.0f} s"
        ) from exc
    finally:
        if proc.poll() is None:
            _stop(proc)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 7) or not output.exists():
        raise RuntimeError(
            f"msgwatch circumvent failed on {isp} (exit {proc.returncode}): {stderr[-2000:]}"
        )
    measurements = read_measurements(output)
    return CircumventionProbe(
        phase, isp, judged(measurements), measurements, seconds, _answer(stdout)
    )


def _through_skipped(scenario: Scenario, phase: str, isp: str, entry: str, function: str) -> bool:
    """A ``<service>.<function>`` row of a tunnel expected down, with no expectation of its own."""
    if "." not in function:
        return False
    if _listed(scenario, phase, isp, entry, function):
        return False
    tunnel = scenario.expected_circumvention(phase, isp, entry, main_function(entry))
    return tunnel.verdict != "ok"


def _listed(scenario: Scenario, phase: str, isp: str, entry: str, function: str) -> bool:
    return any(
        e.entry == entry and e.function == function and e.isp in (isp, "all")
        and e.phase in (phase, None)
        for e in scenario.expect_circumvention
    )  # fmt: skip


def _row(
    phase: str, isp: str, expected: Expected, found: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "phase": phase,
        "isp": isp,
        **truth.row(expected, found),
        "scope": (found or {}).get("scope"),
        "explanation": (found or {}).get("explanation"),
        "test": "circumvention",
    }


def compare(
    scenario: Scenario, phase: str, isp: str, verdicts: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The verdicts of one ISP's run against the ground truth (see the module's notes)."""
    entries = scenario.circumvention_entries()
    rows = []
    seen: set[tuple[str, str]] = set()
    for v in verdicts:
        entry, function = str(v.get("service")), str(v.get("function"))
        if entry not in entries or (entry, function) in seen:
            continue
        seen.add((entry, function))
        if _through_skipped(scenario, phase, isp, entry, function):
            continue
        expected = scenario.expected_circumvention(phase, isp, entry, function)
        rows.append(_row(phase, isp, expected, v))
    wanted: list[ExpectCircumvention] = [
        scenario.expected_circumvention(phase, isp, e, main_function(e)) for e in entries
    ]
    wanted += [
        e for e in scenario.expect_circumvention
        if e.entry in entries and e.isp in (isp, "all") and e.phase in (phase, None)
    ]  # fmt: skip
    for expected in wanted:
        if (expected.entry, expected.function) not in seen:
            seen.add((expected.entry, expected.function))
            rows.append(_row(phase, isp, expected, None))
    return rows

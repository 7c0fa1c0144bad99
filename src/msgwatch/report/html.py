"""A self-contained HTML report of a lab run: no scripts, no external files, everything escaped.

Everything shown that came from the network (failure strings, server names, block page text) is
escaped with :func:`html.escape`; the page carries its own CSS and nothing else.

The report is a lower layer than the lab: it never imports it. What it reads of a run is declared
here as protocols (:class:`LabRun` and the parts it holds), which ``msgwatch.lab.run.ScenarioRun``
satisfies; the type checker holds the two together.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from msgwatch import __version__


class CensorRule(Protocol):
    """A scenario's censor rule: the ISP it applies in, its type and its other fields."""

    @property
    def isp(self) -> str: ...
    @property
    def type(self) -> str: ...
    def fields(self) -> dict[str, Any]: ...


class ScenarioPhase(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def rule(self) -> Sequence[CensorRule]: ...


class LabScenario(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def probe_gap(self) -> str: ...
    @property
    def phase(self) -> Sequence[ScenarioPhase]: ...


class ProbeRun(Protocol):
    """One ISP's probe run in one phase, with the measurements it wrote."""

    @property
    def phase(self) -> str: ...
    @property
    def isp(self) -> str: ...
    @property
    def measurements(self) -> Sequence[Mapping[str, Any]]: ...


class LabRun(Protocol):
    """A scenario run: its comparison rows (``msgwatch.lab.truth``), probe runs and timings."""

    @property
    def scenario(self) -> LabScenario: ...
    @property
    def rows(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def runs(self) -> Sequence[ProbeRun]: ...
    @property
    def timings(self) -> Mapping[str, float]: ...
    @property
    def matched(self) -> int: ...


CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1d1d1f;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}table{border-collapse:collapse;width:100%;margin:.6em 0}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f6}.ok{color:#107c10}.blocked{color:#c50f1f;font-weight:600}
.inconclusive{color:#8a6d00}.throttled,.degraded{color:#8e24aa}.no{background:#fde7e9}
.muted{color:#666}code{font-size:.92em}.summary{font-size:1.1em;padding:.6em;background:#f4f4f6}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _verdict(value: Any) -> str:
    return f'<span class="{_e(value)}">{_e(value)}</span>'


def _failures(measurement: Mapping[str, Any], txids: Iterable[int]) -> list[str]:
    """What the evidence transactions recorded: step failures, as short lines."""
    wanted = set(txids)
    lines = []
    for target in measurement.get("test_keys", {}).get("msgwatch_targets", []):
        ids = set(target.get("transaction_ids") or [])
        if ids & wanted and target.get("failure"):
            where = target.get("host") or target.get("address")
            lines.append(
                f"{target.get('endpoint_id')} ({where}:{target.get('port')}): "
                f"{target.get('failed_step')} → {target.get('failure')}"
            )
    return lines[:6]


def scenario_report(run: LabRun) -> str:
    """The page for a :class:`msgwatch.lab.run.ScenarioRun`."""
    scenario = run.scenario
    measurements = {(r.phase, r.isp, m["input"]): m for r in run.runs for m in r.measurements}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>msgwatch lab run: {_e(scenario.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(scenario.title)}</h1>",
        f"<p>{_e(scenario.description.strip())}</p>",
        f'<p class="summary"><b>{run.matched} of {len(run.rows)}</b> verdicts match the ground '
        "truth (verdict and mechanism).</p>",
    ]
    if scenario.probe_gap:
        parts.append(f"<p><b>Known gap of this probe version:</b> {_e(scenario.probe_gap)}</p>")
    for phase in scenario.phase:
        parts.append(f"<h2>Phase “{_e(phase.name)}”</h2>")
        if phase.description:
            parts.append(f"<p>{_e(phase.description)}</p>")
        rules = [f"{_e(r.isp)}: <code>{_e(r.type)}</code> {_e(r.fields())}" for r in phase.rule]
        parts.append("<p class=muted>Censor rules: " + ("<br>".join(rules) or "none") + "</p>")
        parts.append(
            "<table><tr><th>ISP</th><th>service</th><th>function</th><th>expected</th>"
            "<th>measured</th><th>mechanism</th><th>evidence</th></tr>"
        )
        for row in (r for r in run.rows if r["phase"] == phase.name):
            m = measurements.get((phase.name, row["isp"], row["service"]), {})
            evidence = "<br>".join(_e(x) for x in _failures(m, row["evidence"]))
            expected = _verdict(row["expected"])
            if row["expected_mechanism"]:
                expected += f" <span class=muted>{_e(row['expected_mechanism'])}</span>"
            parts.append(
                f"<tr class={'' if row['match'] else 'no'}><td>{_e(row['isp'])}</td>"
                f"<td>{_e(row['service'])}</td><td>{_e(row['function'])}</td>"
                f"<td>{expected}</td><td>{_verdict(row['verdict'])}</td>"
                f"<td>{_e(row['mechanism'])}</td><td class=muted>{evidence}</td></tr>"
            )
        parts.append("</table>")
    timings = ", ".join(f"{_e(k)} {v:.1f} s" for k, v in run.timings.items())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<p class=muted>msgwatch {_e(__version__)} · {now} · {timings}. Every measurement is in "
        "the JSONL files next to this page, in OONI's format.</p></body></html>"
    )
    return "\n".join(parts)

"""Sentences about what was measured, derived from the verdicts and nothing else.

Issue 9, item 20: a command may say in prose what its table says ("text works everywhere, calls
are blocked on isp1"), but only what the verdicts it prints support. Every sentence here is built
from verdict rows (``isp``, ``service``, ``function``, ``verdict``, and optionally ``phase``,
``mechanism``, ``scope``, ``explanation``): change a verdict and the sentence changes with it. What
a scenario *intended* (its ground truth) is said elsewhere, as the scenario's, never as a finding.

- :func:`findings`: one line per verdict that is not ``ok``, with the judge's own explanation;
- :func:`scope_sentence`: which blocked calls still worked to the helper inside the country;
- :func:`working_sentences`: what works, grouped: the functions that work for every service on
  every ISP, then per ISP, then the functions that work for some services only;
- :func:`explanation`: all of them, as ``msgwatch demo`` prints them under its table;
- :func:`censor_rules`: what the scenario's censors do, from its rules (the scenario's intent,
  said as such, before anything is measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from msgwatch.measurement.vocab import OK

Row = dict[str, Any]
CALLS = ("voice", "video")
"""The functions that are calls (:data:`msgwatch.measurement.vocab.FUNCTIONS`)."""


def english(items: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(items)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _ordered(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _phases(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    """(prefix, rows) per phase; the prefix names the phase only when there are several."""
    phases = _ordered(r.get("phase") for r in rows)
    if len(phases) <= 1:
        return [("", list(rows))]
    return [(f"In phase {p}: ", [r for r in rows if r.get("phase") == p]) for p in phases]


def findings(rows: Sequence[Row]) -> list[str]:
    """One line per verdict that is not ``ok``: where, what, how, and the judge's reason."""
    out = []
    for prefix, group in _phases(rows):
        for r in group:
            if r["verdict"] == OK:
                continue
            how = f" ({r['mechanism']})" if r.get("mechanism") else ""
            why = f": {r['explanation']}" if r.get("explanation") else ""
            out.append(
                f"{prefix}{r['isp']}: {r['service']} {r['function']} {r['verdict']}{how}{why}"
            )
    return out


def scope_sentence(rows: Sequence[Row]) -> list[str]:
    """For call functions not ``ok`` whose replay to the domestic helper passed (scope ``abroad``)
    and those for which it failed too (scope ``all``)."""
    out = []
    for prefix, group in _phases(rows):
        calls = [r for r in group if r["function"] in CALLS and r["verdict"] != OK]
        for isp in _ordered(r["isp"] for r in calls):
            mine = [r for r in calls if r["isp"] == isp]
            abroad = [f"{r['service']} {r['function']}" for r in mine if r.get("scope") == "abroad"]
            everywhere = [
                f"{r['service']} {r['function']}" for r in mine if r.get("scope") == "all"
            ]
            if abroad:
                out.append(
                    f"{prefix}On {isp}, the same call traffic to the helper inside the country got "
                    f"through for {english(abroad)}: calls abroad fail, domestic calls work."
                )
            if everywhere:
                out.append(
                    f"{prefix}On {isp}, {english(everywhere)} failed to the helper inside the "
                    "country too."
                )
    return out


def working_sentences(rows: Sequence[Row]) -> list[str]:
    """What works, from the ``ok`` verdicts, in as few sentences as the verdicts allow."""
    out = []
    for prefix, group in _phases(rows):
        out += [prefix + s for s in _working(group)]
    return out


def _working(rows: Sequence[Row]) -> list[str]:
    isps = _ordered(r["isp"] for r in rows)
    functions = _ordered(r["function"] for r in rows)
    if not rows:
        return []
    if all(r["verdict"] == OK for r in rows):
        return [f"Every function measured works on {_isps(isps)}: nothing was found blocked."]
    if not any(r["verdict"] == OK for r in rows):
        return [f"Nothing measured works on {_isps(isps)}."]

    def status(isp: str, function: str) -> str:
        mine = [r for r in rows if r["isp"] == isp and r["function"] == function]
        if not mine:
            return ""  # not measured on this ISP
        ok = [r for r in mine if r["verdict"] == OK]
        return "none" if not ok else "all" if len(ok) == len(mine) else "some"

    everywhere = [f for f in functions if all(status(i, f) in ("all", "") for i in isps)]
    out = []
    if everywhere and len(isps) > 1:
        out.append(f"Working on {_isps(isps)}: {english(everywhere)} of every service measured.")
    for isp in isps:
        also = [f for f in functions if f not in everywhere and status(isp, f) == "all"]
        if len(isps) == 1:
            also = [f for f in functions if status(isp, f) == "all"]
        if also:
            word = "Also working" if out and len(isps) > 1 else "Working"
            out.append(f"{word} on {isp}: {english(also)} of every service measured.")
    for isp in isps:
        for f in functions:
            if status(isp, f) == "some":
                ok = [r["service"] for r in rows if r["isp"] == isp and r["function"] == f
                      and r["verdict"] == OK]  # fmt: skip
                out.append(f"On {isp}, {f} works for {english(ok)} only.")
    return out


def _isps(isps: Sequence[str]) -> str:
    if len(isps) == 2:
        return f"both ISPs ({english(isps)})"
    if len(isps) > 2:
        return f"every ISP ({english(isps)})"
    return "".join(isps)


def explanation(rows: Sequence[Row]) -> list[str]:
    """The lines ``msgwatch demo`` prints under its table."""
    found = findings(rows)
    head = (
        "What the probe found, and how it knows:" if found else "The probe found nothing blocked."
    )
    return [head] + [f"  {line}" for line in found + scope_sentence(rows) + working_sentences(rows)]


def censor_rules(scenario: Any) -> str:
    """``In phase P, isp1 applies drop_udp (to service:whatsapp) ...; isp2 censors nothing.``, from
    a :class:`msgwatch.lab.scenario.Scenario`'s rules."""
    sentences = []
    for phase in scenario.phase:
        parts = []
        for isp in ("isp1", "isp2"):
            rules = scenario.rules_for(phase, isp)
            if not rules:
                parts.append(f"{isp} censors nothing")
                continue
            described = []
            for rule in rules:
                fields = rule.fields()
                fields.pop("type", None)
                target = fields.pop("to", None)
                where = f" to {', '.join(map(str, target))}" if isinstance(target, list) else ""
                described.append(f"{rule.type}{where}")
            parts.append(f"{isp} applies {english(described)}")
        prefix = f"In phase {phase.name}, " if len(scenario.phase) > 1 else "The scenario: "
        sentences.append(prefix + "; ".join(parts) + ".")
    return " ".join(sentences)

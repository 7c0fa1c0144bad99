"""Rich rendering of verdicts and catalogue listings (no logic beyond presentation).

Every table is a :class:`msgwatch.report.tables.FitTable`: on a narrow terminal it wraps or
changes layout, and never cuts a verdict or a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape

from msgwatch.report.tables import Column, FitTable

if TYPE_CHECKING:
    from msgwatch.catalogue import Catalogue, FunctionTargets

STYLE = {
    "ok": "green",
    "blocked": "bold red",
    "inconclusive": "yellow",
    "throttled": "magenta",
    "degraded": "magenta",
    "not_measured": "dim",
}


def verdict_cell(verdict: str | None) -> str:
    if verdict is None:
        return "-"
    return f"[{STYLE.get(verdict, 'white')}]{escape(verdict)}[/]"


def match_cell(match: bool) -> str:
    return "[green]yes[/]" if match else "[bold red]NO[/]"


def _tested(verdict: dict[str, Any]) -> str:
    if verdict.get("call_path"):
        return "endpoints + call path"
    return "call set-up only" if verdict.get("coverage") == "signalling" else ""


def verdict_table(verdicts: list[dict[str, Any]], title: str = "Verdicts") -> FitTable:
    table = FitTable(
        Column("service", key=True),
        Column("function", key=True),
        Column("verdict", key=True),
        Column("mechanism", key=True),
        Column("endpoints ok", justify="right", secondary=True),
        Column("tested", secondary=True),
        Column("rule", key=True, secondary=True),
        title=title,
    )
    for v in verdicts:
        endpoints = v.get("endpoints") or {}
        table.add_row(
            escape(str(v["service"])),
            escape(str(v["function"])),
            verdict_cell(v["verdict"]),
            escape(str(v.get("mechanism") or "")),
            f"{endpoints.get('ok', 0)}/{endpoints.get('total', 0)}",
            _tested(v),
            escape(str(v.get("rule_id") or "")),
        )
    return table


def comparison_table(rows: list[dict[str, Any]], title: str) -> FitTable:
    """Verdicts against the ground truth (``lab run``, ``demo``): one row per comparison, with a
    phase column when the rows come from more than one phase and an ISP column when they have one."""
    phased = len({r.get("phase") for r in rows}) > 1
    isps = any("isp" in r for r in rows)
    columns = [
        *([Column("phase", key=True)] if phased else []),
        *([Column("isp", key=True)] if isps else []),
        Column("service", key=True),
        Column("function", key=True),
        Column("expected", key=True),
        Column("measured", key=True),
        Column("mechanism", key=True, secondary=True),
        Column("match", key=True),
    ]
    table = FitTable(*columns, title=title, carrier=-2)
    for r in rows:
        table.add_row(
            *([escape(str(r["phase"]))] if phased else []),
            *([escape(str(r.get("isp", "")))] if isps else []),
            escape(r["service"]),
            escape(r["function"]),
            verdict_cell(r["expected"]),
            verdict_cell(r["verdict"]),
            escape(str(r["mechanism"] or "")),
            match_cell(r["match"]),
        )
    return table


def catalogue_table(catalogue: Catalogue) -> FitTable:
    """``catalogue list``: the services, their functions and endpoint counts."""
    table = FitTable(
        Column("service", key=True),
        Column("name", key=True),
        Column("functions", key=True),
        Column("endpoints", justify="right"),
        Column("note", secondary=True),
        title=f"Catalogue {catalogue.version}",
    )
    for s in catalogue.services:
        table.add_row(
            escape(s.id),
            escape(s.name),
            ", ".join(f.function for f in s.functions),
            str(sum(len(f.endpoints) for f in s.functions)),
            escape(f"retired {s.retired}, see {s.successor}" if s.retired else ""),
        )
    return table


def endpoints_table(function: FunctionTargets) -> FitTable:
    """``catalogue show``: one function's endpoints."""
    table = FitTable(
        Column("endpoint", key=True),
        Column("target", key=True),
        Column("transport", key=True, secondary=True),
        Column("source", key=True, secondary=True),
        Column("checked", key=True, secondary=True),
        title=f"{function.function} ({function.mode})",
    )
    for e in function.endpoints:
        table.add_row(escape(e.id), escape(e.label), e.transport, escape(e.source), str(e.checked))
    return table

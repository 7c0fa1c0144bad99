"""Rich rendering of verdicts and catalogue listings (no logic beyond presentation)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STYLE = {
    "ok": "green",
    "blocked": "bold red",
    "inconclusive": "yellow",
    "throttled": "magenta",
    "degraded": "magenta",
}


def verdict_cell(verdict: str | None) -> str:
    if verdict is None:
        return "-"
    return f"[{STYLE.get(verdict, 'white')}]{escape(verdict)}[/]"


def _tested(verdict: dict[str, Any]) -> str:
    if verdict.get("call_path"):
        return "endpoints + call path"
    return "call set-up only" if verdict.get("coverage") == "signalling" else ""


def verdict_table(verdicts: list[dict[str, Any]], title: str = "Verdicts") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("service")
    table.add_column("function")
    table.add_column("verdict")
    table.add_column("mechanism")
    table.add_column("endpoints ok", justify="right")
    table.add_column("tested")
    table.add_column("rule")
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


def print_table(console: Console, table: Table) -> None:
    console.print(table)

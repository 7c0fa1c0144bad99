"""Rich rendering of the analysis for ``msgwatch analyse`` and ``msgwatch events`` (presentation only).

Tables are :class:`msgwatch.report.tables.FitTable` (never cut a name or a verdict). Values come
from the pass report's JSON and the event rows of :class:`msgwatch.analysis.query.Lake`; a time
is shown as ``YYYY-MM-DD HH:MM`` (UTC), a missing value as ``-``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

from msgwatch.cli.render import verdict_cell
from msgwatch.report.tables import Column, FitTable

PROBLEMS_SHOWN = 5
"""Problems listed under the summary (all of them are in ``OUT/problems/``)."""


def problems_of(report: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    """The report's problem count and its first (where, reason) pairs."""
    problems = report.get("problems")
    first: Any
    if isinstance(problems, Mapping):
        first = problems.get("first") or problems.get("samples") or []
        count = int(problems.get("count", len(first)))
    elif isinstance(problems, list):
        first, count = problems, len(problems)
    else:
        first, count = report.get("first_problems") or [], int(problems or 0)
    pairs = []
    for entry in first:
        if isinstance(entry, Mapping):
            pairs.append((str(entry.get("where", "")), str(entry.get("reason", ""))))
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            pairs.append((str(entry[0]), str(entry[1])))
    return count, pairs


def print_summary(report: Mapping[str, Any], console: Console) -> None:
    """The pass's figures, skipped by reason, the first problems with where they were."""
    count, first = problems_of(report)
    title = "Analysis on Spark (OUT/spark/)" if report.get("engine") == "spark" else "Analysis pass"
    table = FitTable(Column("", key=True), Column("count", justify="right"), title=title)
    rows: list[tuple[str, Any]] = [
        ("pass", report.get("pass_number")),
        ("read", report.get("items", report.get("lines"))),
        ("analysed", report.get("measurements")),
        ("observations", report.get("observations")),
        ("verdicts", report.get("verdicts")),
        ("aggregates", report.get("aggregates")),
        *(  # the monthly files this pass rewrote (the DuckDB pass's report says it)
            [("aggregate files written", report["aggregate_files_written"])]
            if "aggregate_files_written" in report
            else []
        ),
        ("events", report.get("events")),
        ("problems", count),
        ("seconds", f"{float(report.get('seconds') or 0):.1f}"),
    ]
    rows += [(f"skipped: {k}", v) for k, v in sorted((report.get("skipped") or {}).items())]
    for name, value in rows:
        shown = f"{value:,}" if isinstance(value, int) else ("-" if value is None else str(value))
        table.add_row(escape(name), escape(shown))
    console.print(table)
    if report.get("rebuilt"):
        why = escape(str(report.get("rebuild_reason") or "asked"))
        console.print(f"[yellow]rebuilt[/] ({why}): every source read again and re-judged")
    if report.get("new_pass") is False:
        console.print("nothing new: the committed pass stands")
    for where, reason in first[:PROBLEMS_SHOWN]:
        console.print(f"[red]problem[/] {escape(where)}: {escape(reason)}", soft_wrap=True)
    if count > PROBLEMS_SHOWN:
        console.print(f"… and {count - PROBLEMS_SHOWN:,} more (OUT/problems/)")


def moment(value: Any) -> str:
    """A time as ``YYYY-MM-DD HH:MM`` (seconds when not zero); ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M" + (":%S" if value.second else ""))
    return str(value)


def networks(event: Mapping[str, Any]) -> str:
    """A network event's ASN; ``country:`` and a country event's networks (from ``members``)."""
    if event.get("probe_asn"):
        return str(event["probe_asn"])
    members = event.get("members")
    if isinstance(members, str):
        try:
            members = json.loads(members)
        except ValueError:
            members = None
    found = members.get("networks") if isinstance(members, Mapping) else None
    listed = ", ".join(str(n) for n in found) if isinstance(found, list) and found else "all"
    return f"country: {listed}"


def events_table(events: list[dict[str, Any]]) -> FitTable:
    """One row per event: where, what, how, since when, until when, on how much evidence."""
    table = FitTable(
        Column("country", key=True),
        Column("network", key=True),
        Column("service", key=True),
        Column("function", key=True),
        Column("verdict", key=True),
        Column("mechanism", key=True, secondary=True),
        Column("pattern", key=True),
        Column("since"),
        Column("until"),
        Column("measurements", justify="right", secondary=True),
        Column("confidence", justify="right", secondary=True),
        title=f"Events ({len(events)})",
    )
    for event in events:
        until = "[bold]ongoing[/]" if event.get("ongoing") else escape(moment(event.get("end")))
        confidence = event.get("confidence")
        table.add_row(
            escape(str(event.get("probe_cc") or "-")),
            escape(networks(event)),
            escape(str(event.get("service") or "several")),
            escape(str(event.get("function") or "several")),
            verdict_cell(event.get("verdict")),
            escape(str(event.get("mechanism") or "-")),
            escape(str(event.get("pattern") or "-")),
            escape(moment(event.get("start"))),
            until,
            escape(f"{event.get('measurements') or 0:,}"),
            "-" if confidence is None else f"{float(confidence):.2f}",
        )
    return table


def stories(events: list[dict[str, Any]]) -> list[str]:
    """The country events' story sentences (the network events' when there is no country event)."""
    country = [e for e in events if e.get("level") == "country"]
    return [f"• {escape(str(e['story']))}" for e in country or events if e.get("story")]

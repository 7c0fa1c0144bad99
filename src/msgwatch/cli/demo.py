"""``msgwatch demo``: the probe against the loopback mini-Internet, verdicts against ground truth.

Until the namespace lab lands (step 2), the demo's Internet is :mod:`msgwatch.minilab`: real
dnsmasq, nginx and coturn on 127.x addresses, some endpoints broken on purpose. The probe is the
same one ``msgwatch run`` uses; only its configuration (catalogue, resolver, CA) points at the
mini-Internet. The fence is set to loopback: nothing the demo does can leave the machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from msgwatch.catalogue import load_catalogue
from msgwatch.cli.main import (
    EXIT_ENVIRONMENT,
    _err,
    default_output,
    execute,
    parse_hostport,
    write_jsonl,
)
from msgwatch.cli.render import verdict_cell
from msgwatch.probe.chains import ChainConfig
from msgwatch.probe.net import FENCE_VARIABLE
from msgwatch.probe.runner import RunConfig


def compare(expected: list[Any], verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per expectation: what the ground truth says and what the probe found."""
    found = {(v["service"], v["function"]): v for v in verdicts}
    rows = []
    for e in expected:
        v = found.get((e.service, e.function), {})
        rows.append(
            {
                "service": e.service,
                "function": e.function,
                "expected": e.verdict,
                "expected_mechanism": e.mechanism,
                "verdict": v.get("verdict"),
                "mechanism": v.get("mechanism"),
                "evidence": v.get("evidence", []),
                "match": v.get("verdict") == e.verdict and v.get("mechanism") == e.mechanism,
                "why": e.why,
            }
        )
    return rows


def run_demo(timeout: float, output: Path | None, as_json: bool) -> None:
    # Loopback only, unless a caller already fenced the process (the tests fence it to the lab).
    os.environ.setdefault(FENCE_VARIABLE, "127.0.0.0/8")
    try:
        from msgwatch.minilab import MiniInternet
    except ImportError as exc:  # pragma: no cover - the package ships it
        raise _err(f"the mini-Internet is not available: {exc}", EXIT_ENVIRONMENT) from exc
    console = Console(stderr=as_json)
    try:
        with MiniInternet() as net:
            if not as_json:
                console.print(
                    "A mini-Internet is up on loopback: dnsmasq (DNS), nginx (HTTPS with its own "
                    "CA) and coturn (STUN/TURN), serving a catalogue of six services. Some of it "
                    "is broken on purpose, the way censors break things. The probe below is the "
                    "one `msgwatch run` uses; only its catalogue, resolver and CA point here."
                )
            catalogue = load_catalogue(net.catalogue_dir)
            config = RunConfig(
                chain=ChainConfig(
                    resolver=parse_hostport(net.resolver), ca_bundle=str(net.ca_bundle)
                ),
                timeout=timeout,
            )
            results = execute(catalogue, None, config, show_progress=not as_json)
            expected = list(net.expected)
    except (RuntimeError, OSError) as exc:
        raise _err(str(exc), EXIT_ENVIRONMENT) from exc
    path = output or default_output()
    write_jsonl(path, [r.measurement for r in results])
    rows = compare(expected, [v for r in results for v in r.verdicts])
    matched = sum(1 for r in rows if r["match"])
    if as_json:
        click.echo(json.dumps({"results": rows, "matched": matched, "total": len(rows),
                               "output": str(path)}))  # fmt: skip
        return
    table = Table(title="msgwatch demo: verdicts against the ground truth", title_justify="left")
    for column in ("service", "function", "expected", "measured", "mechanism", "match"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            escape(r["service"]),
            escape(r["function"]),
            verdict_cell(r["expected"]),
            verdict_cell(r["verdict"]),
            escape(str(r["mechanism"] or "")),
            "[green]yes[/]" if r["match"] else "[bold red]NO[/]",
        )
    console.print(table)
    console.print("What was broken on purpose, and what the probe had to see:")
    for r in rows:
        if r["expected"] != "ok":
            console.print(f"  {escape(r['service'])}/{escape(r['function'])}: {escape(r['why'])}")
    console.print(f"{matched} of {len(rows)} verdicts match the ground truth.")
    console.print(f"Measurements (OONI format, one per service): {escape(str(path))}")

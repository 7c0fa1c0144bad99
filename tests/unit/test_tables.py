"""Tables on narrow terminals: every verdict and name printed whole (issue 9, item 17)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console, RenderableType

from msgwatch.catalogue import load_catalogue
from msgwatch.cli.lab import results_table
from msgwatch.cli.main import cli
from msgwatch.cli.render import verdict_table
from msgwatch.report.tables import Column, FitTable, narrow

WIDTHS = (60, 80)
VERDICTS = ("ok", "blocked", "inconclusive", "throttled", "degraded")


def _verdicts() -> list[dict[str, Any]]:
    """Long names on purpose: the longest service id, function and rule id of the catalogue."""
    out = []
    for i, verdict in enumerate(VERDICTS):
        out.append(
            {
                "service": ("facebook_messenger", "whatsapp", "teams", "signal", "telegram")[i],
                "function": ("registration", "voice", "video", "media", "text")[i],
                "verdict": verdict,
                "mechanism": None if verdict == "ok" else "helper.unreachable",
                "endpoints": {"ok": i, "total": 4},
                "call_path": i % 2 == 0,
                "coverage": "signalling",
                "rule_id": "generic.blocked_by_order",
            }
        )
    return out


def _text(renderable: RenderableType, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    return text


def _whole(text: str, words: list[str]) -> list[str]:
    """The words that do not appear whole on one line."""
    return [w for w in words if not re.search(rf"(?<![\w.]){re.escape(w)}(?![\w.])", text)]


@pytest.mark.parametrize("width", WIDTHS)
def test_verdict_table_keeps_verdicts_and_names_whole(width: int) -> None:
    verdicts = _verdicts()
    text = _text(verdict_table(verdicts), width)
    words = [str(v[k]) for v in verdicts for k in ("service", "function", "verdict", "rule_id")]
    words += [v["mechanism"] for v in verdicts if v["mechanism"]]
    assert _whole(text, words) == []


@pytest.mark.parametrize("width", WIDTHS)
def test_lab_results_table_keeps_verdicts_and_names_whole(width: int) -> None:
    rows = [
        {
            "phase": "calls-abroad-blocked" if i % 2 else "before",
            "isp": f"isp{1 + i % 2}",
            "service": v["service"],
            "function": v["function"],
            "expected": VERDICTS[-1 - i],
            "verdict": v["verdict"],
            "mechanism": v["mechanism"],
            "match": i % 2 == 0,
        }
        for i, v in enumerate(_verdicts())
    ]
    text = _text(results_table(rows, "lab run az-2017: WhatsApp and Skype calls"), width)
    words = [str(r[k]) for r in rows for k in ("phase", "isp", "service", "function", "expected")]
    words += [str(r[k]) for r in rows for k in ("verdict", "mechanism") if r[k]]
    assert _whole(text, words) == []


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("service", ["teams", "tiktok", "facebook_messenger"])
def test_catalogue_show_keeps_every_endpoint_and_target_whole(width: int, service: str) -> None:
    found = load_catalogue().service(service)
    assert found is not None
    result = CliRunner().invoke(cli, ["catalogue", "show", service], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    words = [w for f in found.functions for e in f.endpoints for w in (e.id, e.label, e.source)]
    assert _whole(result.output, words) == []


@pytest.mark.parametrize("width", WIDTHS)
def test_catalogue_list_keeps_every_service_whole(width: int) -> None:
    result = CliRunner().invoke(cli, ["catalogue", "list"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    services = load_catalogue().services
    assert _whole(result.output, [s.id for s in services]) == []
    functions = {f.function for s in services for f in s.functions}
    assert _whole(result.output, sorted(functions)) == []


def test_layout_follows_the_width() -> None:
    table = FitTable(
        Column("service", key=True),
        Column("verdict", key=True),
        Column("rule", key=True, secondary=True),
        Column("note"),
    )
    table.add_row("facebook_messenger", "inconclusive", "generic.blocked_by_order", "a b c d e f")
    assert table.layout(200) == "boxed"
    assert table.layout(70) == "compact"
    assert table.layout(60) == "merged"
    assert table.layout(30) == "rows"
    for width in (200, 70, 60, 30):
        text = _text(table, width)
        assert (
            _whole(text, ["facebook_messenger", "inconclusive", "generic.blocked_by_order"]) == []
        )


def test_narrow_shrinks_the_widest_first_and_never_below_a_minimum() -> None:
    assert narrow([30, 10, 5], [10, 10, 2], 40) == [25, 10, 5]
    assert narrow([30, 10, 5], [10, 10, 2], 21) is None
    assert narrow([30, 10, 5], [10, 10, 2], 22) == [10, 10, 2]

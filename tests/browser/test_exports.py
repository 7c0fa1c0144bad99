"""Every export control of the pages, clicked in Chromium: each downloads a file that parses (CSV,
JSON, SVG as XML, PNG by its signature and size) and holds what the page shows: an export's rows
are the rows of the table beside it (and the fixture's count), an SVG's marks the chart's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import truth
from tests.browser.downloads import chart_exports, table_exports
from tests.browser.harness import Guard
from tests.browser.pages import Urls
from tests.dashboard import fixture

# event-country's exports are event-network's (the same view and chart kind, four times the rows)
PAGES = ("overview", "network", "events", "event-network", "measurement")
EMBEDS = ("network", "event-network", "measurement")  # one page per chart kind: its embed opens


def expected_rows(view: str, lake: Path) -> int | None:
    """The fixture's count of the story window's rows of ``view`` (None: not counted here)."""
    counts = {
        "overview": lambda: len(truth.cells(lake)),
        "network": lambda: truth.heat_marks(lake, fixture.CENSORED),
        "events": lambda: len(truth.events(lake)),
    }
    return counts[view]() if view in counts else None


@pytest.mark.parametrize("name", PAGES)
def test_every_export_downloads_what_the_page_shows(
    page, guard: Guard, urls: Urls, observatory, name: str
) -> None:
    page.goto(urls[name])
    table_exports(
        page, lambda view: expected_rows(view, observatory.lake) if view == name else None
    )
    embeds = chart_exports(page)
    if name in EMBEDS:
        for kind, shown, href in embeds:
            page.goto(href)
            assert page.locator(f'figure.chart[data-chart="{kind}"] svg .mark').count() == shown
    assert guard.problems() == []

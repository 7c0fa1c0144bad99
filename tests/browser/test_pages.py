"""Every page of the dashboard in Chromium: it loads with no console error, no page error, no
failed request and no request outside the server, follows the page conventions of contract.md,
is screenshotted (artifacts/screenshots/), and its charts hold the marks the fixture implies."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from tests.browser import truth
from tests.browser.harness import Guard, LiveServer, screenshot
from tests.browser.pages import Urls, inert, mark_data, marks
from tests.dashboard import fixture


def overview_marks(page, observatory: fixture.Observatory) -> None:
    assert marks(page, "timeline") == [len(truth.events(observatory.lake))]


def network_marks(page, observatory: fixture.Observatory) -> None:
    assert marks(page, "heatmap") == [truth.heat_marks(observatory.lake, fixture.CENSORED)]
    assert marks(page, "timeline") == [len(truth.events(observatory.lake, fixture.CENSORED))]
    states = mark_data(page, "heatmap", "state")
    assert "blocked" in states and "ok" in states and "no_data" not in states
    cell = page.locator('figure.chart[data-chart="heatmap"] svg .mark[data-state="blocked"]').first
    assert cell.locator("title").count() == 0  # the script writes a cell's tooltip on hover
    cell.hover()
    tip = cell.locator("title").text_content() or ""
    bucket = cell.get_attribute("data-bucket")
    assert f"{bucket} UTC · blocked · 100 % failing" in tip and "measurements" in tip, tip


def event_marks(page, observatory: fixture.Observatory) -> None:
    counted = marks(page, "share")
    assert counted and all(n > 0 for n in counted)
    buckets = sorted({b for b in mark_data(page, "share", "bucket") if b})
    first, last = (dt.datetime.fromisoformat(b) for b in (buckets[0], buckets[-1]))
    assert counted[0] == int((last - first).total_seconds() // 3600) + 1  # a point each hour
    assert first <= fixture.START + dt.timedelta(hours=fixture.BLOCKED.start)
    assert last >= fixture.START + dt.timedelta(hours=fixture.BLOCKED.stop - 1)


def measurement_marks(page, observatory: fixture.Observatory) -> None:
    uid = page.url.rsplit("/", 1)[-1]
    raw = truth.measurement_of(observatory.lake, observatory.measurements, uid)
    assert sorted(marks(page, "replay")) == truth.replay_marks(raw)


def embed_marks(page, observatory: fixture.Observatory) -> None:
    assert marks(page, "share") == [fixture.HOURS]  # the story window, one point an hour


CHECKS: dict[str, Callable[..., None]] = {
    "overview": overview_marks,
    "network": network_marks,
    "events": overview_marks,
    "event-country": event_marks,
    "event-network": event_marks,
    "measurement": measurement_marks,
    "embed": embed_marks,
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_page_loads_clean_with_its_marks(page, guard: Guard, urls: Urls, observatory, name) -> None:
    response = page.goto(urls[name])
    assert response is not None and response.status == 200
    found = inert(page)
    assert found["pwned"] == "undefined"
    assert all(path.startswith("/static/") for path in found["scripts"]), found["scripts"]
    assert found["handlers"] == [] and found["javascript"] == [] and found["styles"] == 0
    assert found["width"] <= found["viewport"] + 2
    figures = page.locator("figure.chart").all()
    for figure in figures:
        box = figure.locator("svg").first.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        assert figure.locator("figcaption").inner_text().strip()
    if name != "embed":
        assert page.locator("a.skip").first.get_attribute("href") == "#main"
        assert page.locator("main#main").count() == 1
    CHECKS[name](page, observatory)
    screenshot(page, name)
    assert guard.problems() == []


class Embedder:
    """Another origin (another port of 127.0.0.1) whose one page frames the two URLs it is
    given in its query: ``/?embed=…&page=…``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = parse_qs(scope["query_string"].decode())
        frames = "".join(
            f'<iframe id="{name}" src="{html.escape(query[name][0])}"></iframe>'
            for name in ("embed", "page")
        )
        body = f"<!doctype html><title>an article</title>{frames}".encode()
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def embedder() -> Iterator[LiveServer]:
    live = LiveServer(Embedder()).start()
    yield live
    live.stop()


def test_only_the_embed_view_may_be_framed(
    page, guard: Guard, urls: Urls, server: LiveServer, embedder: LiveServer
) -> None:
    embed, overview = server.base + urls["embed"], server.base + urls["overview"]
    article = f"{embedder.base}/?{urlencode({'embed': embed, 'page': overview})}"
    page.route(article, lambda route: route.continue_())  # the one page of the other origin
    page.goto(article)
    framed = page.frame_locator("#embed").locator('figure.chart[data-chart="share"] svg .mark')
    assert framed.count() == fixture.HOURS
    assert page.frame_locator("#page").locator("main").count() == 0
    refused = [line for line in guard.console if "frame-ancestors 'none'" in line]
    assert refused and guard.outside == [] and guard.errors == []
    assert guard.failed == [f"net::ERR_BLOCKED_BY_RESPONSE {overview}"]
    guard.clear()

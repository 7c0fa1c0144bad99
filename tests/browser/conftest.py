"""The browser tests' fixtures: one fixture observatory, one live dashboard and one Chromium per
session; a fresh browser context (cookies, storage, downloads) and its guard per test.

The tests skip, with the reason, only when Playwright or ``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.harness import VIEWPORT, Guard, LiveServer, launch, missing
from tests.browser.pages import Urls
from tests.dashboard import fixture

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = missing()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def observatory(observatory_dir: fixture.Observatory) -> fixture.Observatory:
    """The fixture observatory (tests/dashboard/fixture.py), shared with the dashboard's tests."""
    return observatory_dir


@pytest.fixture(scope="session")
def urls(observatory: fixture.Observatory) -> Urls:
    """The pages the tests visit, by name."""
    return Urls.of(observatory.lake)


@pytest.fixture(scope="package")
def server(observatory: fixture.Observatory) -> Iterator[LiveServer]:
    """The dashboard over the fixture, on loopback."""
    from msgwatch.dashboard.app import DashboardConfig, create_app
    from msgwatch.dashboard.measurements import JsonlMeasurements

    measurements = JsonlMeasurements([observatory.measurements])
    app = create_app(DashboardConfig(lake_dir=observatory.lake, measurements=measurements))
    live = LiveServer(app).start()
    yield live
    live.stop()


# Package scope, not session: Playwright's sync API keeps an event loop running in the main thread
# while it is open, and every later test calling asyncio.run() would then fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def guard(server: LiveServer) -> Guard:
    return Guard(server.base)


@pytest.fixture
def context(browser: Browser, server: LiveServer, guard: Guard) -> Iterator[BrowserContext]:
    """A fresh context whose every request is guarded; downloads accepted."""
    ctx = browser.new_context(
        base_url=server.base, viewport=VIEWPORT, accept_downloads=True, java_script_enabled=True
    )
    ctx.set_default_timeout(10_000)
    guard.attach(ctx)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()

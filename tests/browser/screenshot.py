"""The README's screenshot: ``docs/img/dashboard-overview.png``, the overview of the fixture
observatory's story (tests/dashboard/fixture.py) in Debian's Chromium, in a window that ends while
AS65001's calls are blocked (:data:`WINDOW`).

Run from the checkout: ``MSGWATCH_ALLOWED_NETWORKS=127.0.0.0/8,::1/128 .venv/bin/python -m
tests.browser.screenshot``. It builds the fixture in a temporary directory (~15 s), serves the
dashboard on loopback, and aborts every request to anything else (as the tests do).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser.harness import ROOT, VIEWPORT, Guard, LiveServer, launch, missing
from tests.dashboard import fixture

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect

OUTPUT = ROOT / "docs" / "img" / "dashboard-overview.png"
WINDOW = "since=2026-05-20&until=2026-05-22"  # the blocking runs from 05-21 06:00 to 05-22 06:00
HEIGHT = 1400


def main() -> int:
    reason = missing()
    if reason is not None:
        sys.stderr.write(f"cannot take the screenshot: {reason}\n")
        return 1
    from playwright.sync_api import sync_playwright

    from msgwatch.dashboard.app import DashboardConfig, create_app
    from msgwatch.dashboard.measurements import JsonlMeasurements

    with tempfile.TemporaryDirectory(prefix="msgwatch-screenshot-") as folder:
        observatory = fixture.build(Path(folder))
        measurements = JsonlMeasurements([observatory.measurements])
        app = create_app(DashboardConfig(lake_dir=observatory.lake, measurements=measurements))
        server = LiveServer(app).start()
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                context = browser.new_context(viewport=VIEWPORT, base_url=server.base)
                guard = Guard(server.base)
                guard.attach(context)
                page = context.new_page()
                page.goto(f"/?{WINDOW}", wait_until="load")
                OUTPUT.parent.mkdir(parents=True, exist_ok=True)
                height = min(HEIGHT, int(page.evaluate("document.body.scrollHeight")))
                clip: FloatRect = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
                page.screenshot(path=str(OUTPUT), full_page=True, clip=clip)
                context.close()
                browser.close()
        finally:
            server.stop()
    if guard.problems():
        sys.stderr.write("\n".join(guard.problems()) + "\n")
        return 1
    sys.stdout.write(f"{OUTPUT.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

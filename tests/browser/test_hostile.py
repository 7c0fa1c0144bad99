"""The fixture's hostile measurement (AS65003: a ``<script>`` failure string, a ``javascript:``
URL, an RTL override and a 10 KB host name) on the pages that show it, in Chromium: no script
from the data runs or sits in the DOM, no ``javascript:`` link exists, the strings are shown as
text (and its exports still parse), and the long name does not widen the page beyond the viewport,
at a desktop's width and a phone's; nor does any other page (wide tables scroll inside their own
wrapper)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser import truth
from tests.browser.downloads import table_exports
from tests.browser.harness import Guard, screenshot
from tests.browser.pages import inert
from tests.dashboard import fixture

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

TOLERANCE = 2  # pixels: rounding of a scrollbar-free layout
PHONE: ViewportSize = {"width": 390, "height": 800}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PAGES = ("overview", "network", "events", "event-country", "event-network", "measurement")


@pytest.fixture(scope="module")
def hostile_paths(observatory: fixture.Observatory) -> dict[str, str]:
    uid = truth.uid(observatory.lake, fixture.HOSTILE_ASN, "ok")
    return {
        "hostile-measurement": f"/measurement/{uid}",
        "hostile-network": f"/network/{fixture.CC}/{fixture.HOSTILE_ASN}?{truth.WINDOW}",
        "hostile-overview": f"/?{truth.WINDOW}&cc={fixture.CC}",
    }


@pytest.mark.parametrize("name", ["hostile-measurement", "hostile-network", "hostile-overview"])
def test_hostile_strings_stay_inert(page, guard: Guard, hostile_paths, name: str) -> None:
    response = page.goto(hostile_paths[name], wait_until="load")
    assert response is not None and response.status == 200
    screenshot(page, name)
    for control in page.locator("main details > summary").all():
        control.click()  # open what is folded, so that its content is laid out too
    found = inert(page)
    assert found["pwned"] == "undefined"
    assert all(path.startswith("/static/") for path in found["scripts"]), found["scripts"]
    assert found["handlers"] == [] and found["javascript"] == []
    assert found["width"] <= found["viewport"] + TOLERANCE, found
    if name == "hostile-measurement":
        shown_as_text(page)
        table_exports(page)  # the strings travel as data: the CSV and the JSON still parse
        page.set_viewport_size(PHONE)
        found = inert(page)
        assert found["width"] <= found["viewport"] + TOLERANCE, found
    assert guard.problems() == []


def shown_as_text(page) -> None:
    """The script and the long name are the page's text; an RTL override is isolated."""
    text = page.locator("main").inner_text()
    assert fixture.HOSTILE["script"] in text
    assert fixture.HOSTILE["long"][:200] in text
    rtl = page.evaluate(
        """rtl => {
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      const found = [];
      while (walker.nextNode()) {
        const node = walker.currentNode;
        if (!node.data.includes(rtl)) continue;
        let isolated = false;
        for (let e = node.parentElement; e && !isolated; e = e.parentElement) {
          const bidi = getComputedStyle(e).unicodeBidi;
          isolated = e.tagName === 'BDI' || ['isolate', 'isolate-override', 'plaintext']
            .includes(bidi);
        }
        found.push(isolated);
      }
      return found;
    }""",
        "\u202e",
    )
    assert all(rtl), "an RTL override is shown without being isolated"
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


def test_no_page_wider_than_the_viewport(page, guard: Guard, urls, hostile_paths) -> None:
    """Every page, the hostile ones too, with its folded parts open, fits a desktop and a phone."""
    paths = [urls[name] for name in PAGES] + list(hostile_paths.values())
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        for path in paths:
            response = page.goto(path, wait_until="load")
            assert response is not None and response.status == 200, path
            for control in page.locator("main details > summary").all():
                control.click()
            found = inert(page)
            assert found["width"] <= found["viewport"] + TOLERANCE, (size, path, found)
    assert guard.problems() == []

"""Keyboard use in Chromium: Tab from the top of each page reaches every link, button and form
control the page shows (the set reached is the set in the DOM), each one visibly focused; the skip
link is the first stop and moves focus into ``main``."""

from __future__ import annotations

import pytest

from tests.browser.pages import FOCUSABLE, Urls

# event-country's 400-odd links to the measurements behind it are event-network's, four times over
PAGES = ("overview", "network", "events", "event-network", "measurement", "embed")

# Tags every focusable element with its index and records, on each focus, the index and whether
# the element is visibly focused (an outline or a box shadow).
RECORD = (
    """() => {
  const all = ("""
    + FOCUSABLE
    + """)();
  all.forEach((e, i) => e.setAttribute('data-kb', String(i)));
  window.__kb = [];
  document.addEventListener('focusin', ev => {
    const e = ev.target, s = getComputedStyle(e);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
    window.__kb.push({i: e.getAttribute('data-kb'), tag: e.tagName,
                      visible: outline || s.boxShadow !== 'none'});
  }, true);
  return all.length;
}"""
)


@pytest.mark.parametrize("name", PAGES)
def test_tab_reaches_every_control_visibly(page, urls: Urls, name: str) -> None:
    page.goto(urls[name])
    total = int(page.evaluate(RECORD))
    assert total > 0
    for _ in range(total + 2):
        page.keyboard.press("Tab")
    stops = page.evaluate("() => window.__kb")
    reached = {s["i"] for s in stops if s["i"] is not None}
    assert reached == {str(i) for i in range(total)}
    hidden = [s for s in stops if not s["visible"]]
    assert hidden == [], hidden[:5]
    if name != "embed":
        first = page.locator(f'[data-kb="{stops[0]["i"]}"]').get_attribute("class") or ""
        assert "skip" in first.split()  # the skip link is the first stop


def test_skip_link_is_first_and_moves_focus_into_main(page, urls: Urls) -> None:
    page.goto(urls["measurement"])
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.className, document.activeElement.getAttribute('href')]"
    )
    assert focused == ["skip", "#main"]
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.closest('main') !== null")

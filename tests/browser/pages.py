"""The pages the browser tests visit, by name, with the fixture's story window, and what a page
holds that the tests read (focusable controls, marks, layout), read inside the browser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.browser import truth
from tests.dashboard import fixture

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Page


@dataclass(frozen=True)
class Urls:
    """The fixture's pages: name → path (with query)."""

    paths: dict[str, str]

    @classmethod
    def of(cls, lake: Path) -> Urls:
        events = truth.events(lake)
        country = next(e["event_id"] for e in events if e["level"] == "country")
        network = next(e["event_id"] for e in events if e["level"] == "network")
        share = f"cc={fixture.CC}&asn={fixture.CENSORED}&service=whatsapp&function=voice"
        paths = {
            "overview": f"/?{truth.WINDOW}",
            "network": f"/network/{fixture.CC}/{fixture.CENSORED}?{truth.WINDOW}",
            "events": f"/events?{truth.WINDOW}",
            "event-country": f"/event/{country}",
            "event-network": f"/event/{network}",
            "measurement": f"/measurement/{truth.uid(lake, fixture.CENSORED, 'blocked')}",
            "embed": f"/embed/share?{share}&{truth.WINDOW}",
        }
        return cls(paths)

    def __getitem__(self, name: str) -> str:
        return self.paths[name]


def marks(page: Page, kind: str) -> list[int]:
    """The ``.mark`` count of each chart of ``kind`` on the page, in document order."""
    counted: list[int] = page.eval_on_selector_all(
        f'figure.chart[data-chart="{kind}"]',
        "fs => fs.map(f => f.querySelectorAll('svg .mark').length)",
    )
    return counted


def mark_data(page: Page, kind: str, name: str) -> list[str]:
    """The ``data-{name}`` of every mark of the charts of ``kind``."""
    values: list[str] = page.eval_on_selector_all(
        f'figure.chart[data-chart="{kind}"] svg .mark',
        f"ms => ms.map(m => m.getAttribute('data-{name}'))",
    )
    return values


FOCUSABLE = """() => {
  const sel = 'a[href], button, input, select, textarea, summary, [tabindex]';
  return [...document.querySelectorAll(sel)].filter(e => {
    if (e.disabled || e.type === 'hidden' || e.tabIndex < 0) return false;
    if (e.closest('[inert]')) return false;
    const s = getComputedStyle(e);
    return s.visibility !== 'hidden' && e.getClientRects().length > 0;
  });
}"""

INERT = """() => ({
  pwned: typeof window.__pwned,
  scripts: [...document.scripts].map(s => s.src ? new URL(s.src).pathname : 'inline'),
  handlers: [...document.querySelectorAll('*')].flatMap(
    e => [...e.attributes].filter(a => a.name.startsWith('on')).map(a => a.name)),
  javascript: [...document.querySelectorAll('[href], [src], [action], [formaction]')].flatMap(
    e => ['href', 'src', 'action', 'formaction'].map(n => e.getAttribute(n) || '')
      .filter(v => /^\\s*javascript:/i.test(v.replace(/[\\u0000-\\u001f]/g, '')))),
  styles: document.querySelectorAll('style, [style]').length,
  width: document.documentElement.scrollWidth,
  viewport: window.innerWidth,
})"""


def inert(page: Page) -> dict[str, Any]:
    """What would show a page ran or could run script from data, and its width."""
    found: dict[str, Any] = page.evaluate(INERT)
    return found

"""The filters form in Chromium: filling it and submitting changes the URL (a permalink) and the
content (the cells the fixture implies), and the permalink, opened anew, shows the same."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.browser import truth
from tests.browser.harness import Guard
from tests.dashboard import fixture


def cells(page) -> list[str]:
    found: list[str] = page.eval_on_selector_all(
        "td[data-cell]", "cs => cs.map(c => c.dataset.cell + '=' + c.dataset.state)"
    )
    return sorted(found)


def triples(shown: list[str]) -> set[tuple[str, ...]]:
    return {tuple(cell.split("=", 1)[0].split("|")) for cell in shown}


def fill(page, values: dict[str, str]) -> None:
    """Set the filters form's fields (inputs or selects) and submit it."""
    for name, value in values.items():
        field = page.locator(f'#filters [name="{name}"]')
        tag, kind = field.evaluate("e => [e.tagName, e.type]")
        if tag == "SELECT":
            field.select_option(value)
        else:
            field.fill(value + "T00:00" if kind == "datetime-local" else value)
    with page.expect_navigation():
        page.locator("#filters [type=submit]").first.click()


def query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_filters_change_the_url_and_the_cells(page, context, guard: Guard, observatory) -> None:
    lake = observatory.lake
    page.goto("/")
    assert triples(cells(page)) == truth.cells(lake, window=truth.AFTER)  # the last 30 days
    fill(page, {"cc": fixture.CC})
    assert query(page).get("cc") == fixture.CC
    assert triples(cells(page)) == truth.cells(lake, cc=fixture.CC, window=truth.AFTER)
    fill(page, {"since": truth.SINCE, "until": truth.UNTIL, "service": "whatsapp"})
    params = query(page)
    assert params["service"] == "whatsapp" and params["since"].startswith(truth.SINCE)
    assert params["until"].startswith(truth.UNTIL) and params["cc"] == fixture.CC
    shown = cells(page)
    assert triples(shown) == truth.cells(lake, service="whatsapp", cc=fixture.CC)
    assert not [c for c in shown if c.endswith("=blocked")]  # the story's blocking has ended
    permalink = page.url
    again = context.new_page()
    again.goto(permalink)
    assert cells(again) == shown
    assert guard.problems() == []


def test_a_bad_filter_is_a_400_with_its_message(page, guard: Guard) -> None:
    response = page.goto("/?since=2026-99-01")
    assert response is not None and response.status == 400
    assert "since" in page.locator("main").inner_text()
    guard.clear()  # the 400 answer is the expected one

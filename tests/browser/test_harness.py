"""The browser tests' own machinery: the guard (a request to anything but the server is aborted
and recorded, as are a console error and an uncaught page error) and the install that brings
Debian's Chromium and Playwright."""

from __future__ import annotations

import re
import tomllib

from tests.browser.harness import CHROMIUM, ROOT, Guard

OUTSIDE = "http://198.18.0.1/pixel.png"  # the lab's documentation range: never reached, aborted


def test_the_guard_aborts_and_records_what_a_page_must_not_do(page, guard: Guard) -> None:
    # about:blank, not a page of the server: its Content-Security-Policy would refuse the image
    # before the route sees it
    with page.expect_event("requestfailed"):
        page.set_content(f'<img src="{OUTSIDE}" alt="">')
    with page.expect_console_message():
        page.evaluate("() => console.error('seen')")
    with page.expect_event("pageerror"):
        page.evaluate("() => { setTimeout(() => { throw new Error('boom'); }); }")
    problems = guard.problems()
    assert f"outside: {OUTSIDE}" in problems
    assert any(p.startswith("failed: ") and OUTSIDE in p for p in problems)
    assert any(p.startswith("console: seen") for p in problems)
    assert any(p.startswith("page error: ") and "boom" in p for p in problems)
    guard.clear()


def test_make_install_brings_the_browser_and_its_driver() -> None:
    makefile = (ROOT / "Makefile").read_text()
    packages = re.search(r"^DEB_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert packages is not None
    assert {"chromium", "fonts-dejavu-core"} <= set(packages.group(1).split())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("playwright") for d in extras["optional-dependencies"]["test"])
    assert str(CHROMIUM) == "/usr/bin/chromium"  # where Debian's package puts it

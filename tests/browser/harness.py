"""The browser tests' machinery: the dashboard served by a real uvicorn on loopback, Debian's
Chromium driven by Playwright, and a guard that records what a page must never do.

Rules:

- The server binds 127.0.0.1 on a port the kernel picks (the socket is bound here and handed to
  uvicorn, so no other process can take the port in between); it runs in a daemon thread and
  :meth:`LiveServer.stop` ends it and closes its socket.
- Chromium is ``/usr/bin/chromium`` (Debian's; Playwright's own browser downloads are never used),
  started with :data:`FLAGS`. Playwright gives each launch a fresh temporary profile directory
  (``--user-data-dir``) and removes it when the browser closes.
- Every request a page makes to anything but the server is aborted (:meth:`Guard.attach`, a route
  on the whole context) and recorded, as are console errors, uncaught page errors, failed
  requests and answers of 400 and above: :meth:`Guard.problems` lists them, the tests assert it
  is empty.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Error,
        FloatRect,
        Page,
        Playwright,
        Request,
        Response,
        Route,
        ViewportSize,
    )

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
SCREENSHOT_HEIGHT = 2400


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (Debian's chromium: make install-system)"
    return None


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, with the project's flags."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=list(FLAGS), headless=True, chromium_sandbox=False
    )


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError("the dashboard's server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class Guard:
    """What the pages of one browser context did that they must not."""

    base: str
    outside: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        """Route every request of ``context`` and watch every page it opens."""
        context.route("**/*", self._route)
        context.on("page", self.watch)
        context.on("requestfailed", self._failed)
        context.on("response", self._answered)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._error)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(f"{message.text} ({message.location.get('url')})")

    def _error(self, error: Error) -> None:
        self.errors.append(str(error))

    def _answered(self, response: Response) -> None:
        if response.status >= 400:
            self.statuses.append(f"{response.status} {response.url}")

    def _mine(self, url: str) -> bool:
        return url == self.base or url.startswith(self.base + "/")

    def _route(self, route: Route) -> None:
        url = route.request.url
        if self._mine(url):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.failure} {request.url}")

    def problems(self) -> list[str]:
        """Everything recorded, one line each (empty: the pages behaved)."""
        named = {
            "outside": self.outside,
            "console": self.console,
            "page error": self.errors,
            "failed": self.failed,
            "status": self.statuses,
        }
        return [f"{name}: {item}" for name, items in named.items() for item in items]

    def clear(self) -> None:
        """Forget what was recorded (after a step that expected an error answer)."""
        for items in (self.outside, self.console, self.errors, self.failed, self.statuses):
            items.clear()


def screenshot(page: Page, name: str) -> Path:
    """A screenshot of ``page`` as ``artifacts/screenshots/{name}.png``: the whole page down to
    :data:`SCREENSHOT_HEIGHT` pixels (a long page's tail costs seconds and shows nothing new), and
    of the first chart of each kind as ``{name}-{kind}.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = min(int(page.evaluate("document.documentElement.scrollHeight")), SCREENSHOT_HEIGHT)
    clip: FloatRect = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
    page.screenshot(path=str(path), full_page=True, clip=clip)
    kinds: list[str] = page.eval_on_selector_all(
        "figure.chart", "fs => fs.map(f => f.dataset.chart)"
    )
    for kind in dict.fromkeys(kinds):  # the first chart of each kind, which may lie further down
        figure = page.locator(f'figure.chart[data-chart="{kind}"]').first
        figure.screenshot(path=str(SCREENSHOTS / f"{name}-{kind}.png"))
    return path

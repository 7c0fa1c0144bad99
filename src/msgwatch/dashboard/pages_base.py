"""What every handler of the web app shares: the templates, the request's observatory and filters,
path parameters, rendering, and the chart captions.

Rules:

- Templates are Jinja2 with autoescape on for every file and ``StrictUndefined``: every value
  from the lake, a measurement or a request is escaped, and its bidirectional control characters
  are shown as ``[U+202E]`` (:func:`reveal`); markup is never built by string concatenation here.
  A chart's SVG (C's charts, escaped by them) is the only value a template marks safe.
- A path parameter is checked against its pattern (at most 128 characters) before it reaches the
  observatory; a malformed one raises :class:`BadQuery` (400), a well-formed unknown one is a 404.
- A link to a measurement carries ``t``, its start time (:func:`time_hint`), so that the
  observatory reads the one day of it; a view passes the request's ``t`` on (:func:`time_of`).
- Speed: a table of thousands of rows reads dicts by subscript and writes no macro per row;
  :func:`reveal` skips ASCII text (no bidirectional control can be in it).
- The observatory's calls are blocking (DuckDB): handlers run them in a worker thread with
  :func:`blocking`, one :class:`Observatory` per request (it then sees the lake's newest pass).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import markupsafe
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from msgwatch.analysis import lake as lake_state
from msgwatch.dashboard.data import Observatory
from msgwatch.dashboard.filters import BadQuery, ViewFilters
from msgwatch.dashboard.measurements import MeasurementSource
from msgwatch.dashboard.model import Comparison, EventRow

T = TypeVar("T")

MAX_PATH_PARAM = 128
MAX_EVENTS_PAGE = 500
DEFAULT_LIMIT = 100
PATTERNS = {
    "cc": re.compile(r"[A-Z]{2}"),
    "asn": re.compile(r"AS[0-9]{1,10}"),
    "uid": re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}"),
    "event_id": re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"),
    "service": re.compile(r"[a-z0-9_]{1,40}"),
    "function": re.compile(r"[a-z_]{1,20}"),
}

STATE_LABELS = {
    "blocked": "Blocked",
    "throttled": "Throttled",
    "degraded": "Degraded",
    "inconclusive": "Inconclusive",
    "ok": "Works",
    "no_data": "No data",
}


@dataclass(frozen=True)
class DashboardConfig:
    """What the app serves: the analysis's output directory, and the stored measurements."""

    lake_dir: Path
    measurements: MeasurementSource | None = None
    title: str = "msgwatch"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def reveal(value: Any) -> Any:
    """Text with its bidirectional control characters shown as ``[U+202E]``: a host name from
    the data cannot read backwards on a page (markup, the charts' SVG, passes unchanged)."""
    if isinstance(value, str) and not value.isascii() and not isinstance(value, markupsafe.Markup):
        return _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)
    return value


_HINT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}")


def time_hint(value: object) -> dict[str, str]:
    """The ``t`` parameter of a link to a measurement that started at ``value`` (its first 19
    characters, ``YYYY-MM-DD HH:MM:SS``); empty when ``value`` is not such a time."""
    text = str(value or "")[:19]
    return {"t": text} if _HINT.fullmatch(text) else {}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("msgwatch.dashboard", "templates"),
        autoescape=True,
        finalize=reveal,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # compiled once per process: the package's templates do not change
    )
    env.filters["percent"] = _percent
    env.globals["time_hint"] = time_hint
    env.globals["state_label"] = lambda state: STATE_LABELS.get(state, state)
    return env


TEMPLATES = _environment()


def config_of(request: Request) -> DashboardConfig:
    config: DashboardConfig = request.app.state.dashboard
    return config


def observatory(request: Request) -> Observatory:
    """A fresh observatory over the app's lake (call it inside :func:`blocking`); a new
    committed state starts warming in the background (:mod:`.pages_warm`)."""
    config = config_of(request)
    warmer = getattr(request.app.state, "warmer", None)
    if warmer is not None:
        warmer.poke()
    return Observatory(config.lake_dir, config.measurements)


async def blocking(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a worker thread."""
    return await run_in_threadpool(call, *args)


def filters_of(request: Request) -> ViewFilters:
    """The request's view filters (raises :class:`BadQuery`)."""
    return ViewFilters.parse(request.query_params)


def check(name: str, value: str | None, *, required: bool = True) -> str | None:
    """``value`` when it matches the pattern of ``name``; raises :class:`BadQuery` otherwise."""
    if value is None or value == "":
        if required:
            raise BadQuery(f"{name} is required")
        return None
    if len(value) > MAX_PATH_PARAM or not PATTERNS[name].fullmatch(value):
        raise BadQuery(f"{name} is malformed")
    return value


def param(request: Request, name: str, *, required: bool = True) -> str | None:
    """A path or query parameter checked by :func:`check` (path parameters first)."""
    value = request.path_params.get(name, request.query_params.get(name))
    return check(name, value, required=required)


def need(request: Request, name: str) -> str:
    """A required parameter (see :func:`param`)."""
    value = param(request, name)
    assert value is not None
    return value


def time_of(request: Request) -> str | None:
    """The ``t`` query parameter: a measurement's start time, the hint of the day its rows are
    in (at most 64 characters here; its form is checked by the observatory)."""
    text = request.query_params.get("t", "")
    if len(text) > 64:
        raise BadQuery("t: too long")
    return text or None


def limit_of(request: Request, default: int = DEFAULT_LIMIT) -> int:
    """The ``limit`` query parameter, 1..MAX_EVENTS_PAGE."""
    text = request.query_params.get("limit", "")
    if text == "":
        return default
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_EVENTS_PAGE:
        raise BadQuery(f"limit: expected a number from 1 to {MAX_EVENTS_PAGE}")
    return int(text)


def cursor_of(request: Request) -> str | None:
    """The ``cursor`` query parameter (at most 512 characters), None when unset."""
    text = request.query_params.get("cursor", "")
    if len(text) > 512:
        raise BadQuery("cursor: too long")
    return text or None


@dataclass(frozen=True)
class SeriesScope:
    """The series a share chart or a series export is about, and its filters."""

    cc: str
    asn: str | None
    service: str
    function: str
    filters: ViewFilters

    def comparison(self, obs: Observatory) -> Comparison:
        return obs.comparison(self.cc, self.asn, self.service, self.function, self.filters)


def series_scope(request: Request) -> SeriesScope:
    """The request's series: ``cc``, ``service``, ``function`` (required), ``asn`` (optional)."""
    cc, service, function = need(request, "cc"), need(request, "service"), need(request, "function")
    asn = param(request, "asn", required=False)
    f = replace(filters_of(request), cc=cc, asn=asn, service=service, function=function)
    return SeriesScope(cc, asn, service, function, f)


def events_of(
    obs: Observatory, f: ViewFilters, request: Request
) -> tuple[list[EventRow], str | None]:
    """A page of events: the request's ``limit`` and ``cursor`` (a forged cursor is a 400)."""
    limit, cursor = limit_of(request), cursor_of(request)
    try:
        return obs.events(f, limit, cursor)
    except BadQuery:
        raise
    except ValueError as exc:  # a cursor of another query, or a forged one
        raise BadQuery(f"cursor: {exc}") from exc


def versions(config: DashboardConfig) -> dict[str, str]:
    """The lake's schema, rules and detector versions (empty when there is no lake)."""
    try:
        state = lake_state.read_state(config.lake_dir)
    except (OSError, ValueError):
        state = None
    if not state:
        return {}
    keys = ("schema_version", "rules_version", "detector_version")
    return {key: str(state[key]) for key in keys if key in state}


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ROOT_KEY = "msgwatch.dashboard.root"


def root_of(request: Request) -> str:
    """The path the app is served under ("" at the top, "/dashboard" in the collector), as the
    app's outermost layer saw it (a mount inside the app, e.g. /static, changes root_path)."""
    return str(request.scope.get(ROOT_KEY, request.scope.get("root_path", "")))


def base_url(request: Request) -> str:
    """The absolute URL of the app's root, without the trailing slash."""
    return str(request.url.replace(path=root_of(request) + "/", query="", fragment="")).rstrip("/")


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The page ``template`` with the shared context (title, versions, the request's filters)."""
    config = config_of(request)
    page = TEMPLATES.get_template(template).render(
        site_title=config.title,
        root=root_of(request),
        versions=versions(config),
        generated=now_text(),
        **context,
    )
    return HTMLResponse(page, status_code=status)


def caption(parts: list[str | None], since: str, until: str, n: int) -> str:
    """A chart's caption: its filters, its window and its sample size."""
    shown = [p for p in parts if p]
    return " · ".join([*shown, f"{since[:16]} → {until[:16]}", f"n = {n} measurements"])


def since_text(bucket: str) -> str:
    """A lake time (``YYYY-MM-DD HH:MM:SS``) in the form the filters parse."""
    return bucket[:16].replace(" ", "T")

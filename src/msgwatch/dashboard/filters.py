"""What a view shows: the filters of its URL, parsed, validated and written back as permalinks.

Rules:

- A query parameter is hostile text. :meth:`ViewFilters.parse` reads only the known parameters
  (others are ignored), each at most :data:`MAX_VALUE` characters, and raises :class:`BadQuery`
  with a message for the user (the app answers 400 with it) for anything it cannot read.
- An empty value means "not set" (an empty input of the filters form).
- ``since``/``until`` are UTC, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM``; since is inclusive, until
  exclusive; until > since and the range is at most :data:`MAX_RANGE_DAYS` days.
- ``cc`` is two letters (upper-cased), ``asn`` ``AS<n>`` (upper-cased, n < 2³²), ``service``
  ``[a-z0-9_]{1,40}``, ``function`` ``[a-z_]{1,20}``, ``verdict`` one of the analysis's verdicts,
  ``grain`` one of :data:`GRAINS`.
- :meth:`ViewFilters.to_params` writes the canonical text form :meth:`ViewFilters.parse` reads, so
  ``parse(f.to_params()) == f`` (times are kept to the minute).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Final
from urllib.parse import urlencode

from msgwatch.measurement.vocab import VERDICTS

MAX_VALUE: Final = 64
MAX_RANGE_DAYS: Final = 400
GRAINS: Final = ("auto", "hour", "day", "bucket")
_DAY_FORMAT: Final = "%Y-%m-%d"
_MINUTE_FORMAT: Final = "%Y-%m-%dT%H:%M"
_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2})?")
_PATTERNS: Final = {
    "cc": (re.compile(r"[A-Z]{2}"), "two letters, e.g. AZ"),
    "asn": (re.compile(r"AS[0-9]{1,10}"), "AS and a number, e.g. AS65001"),
    "service": (re.compile(r"[a-z0-9_]{1,40}"), "lower-case letters, digits and _"),
    "function": (re.compile(r"[a-z_]{1,20}"), "lower-case letters and _"),
}


class BadQuery(ValueError):
    """A query parameter the dashboard cannot read; the message is shown to the user."""


@dataclass(frozen=True)
class ViewFilters:
    """The filters of a view (every one optional)."""

    since: dt.datetime | None = None  # inclusive, UTC (naive)
    until: dt.datetime | None = None  # exclusive, UTC (naive)
    cc: str | None = None
    asn: str | None = None
    service: str | None = None
    function: str | None = None
    verdict: str | None = None
    grain: str = "auto"

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ViewFilters:
        """The filters of a query's parameters (raises :class:`BadQuery`)."""
        values: dict[str, str] = {}
        for field in fields(cls):
            value = params.get(field.name)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise BadQuery(f"{field.name}: not text")
            if len(value) > MAX_VALUE:
                raise BadQuery(f"{field.name}: longer than {MAX_VALUE} characters")
            values[field.name] = value
        since = _time("since", values.get("since"))
        until = _time("until", values.get("until"))
        _check_range(since, until)
        return cls(
            since=since,
            until=until,
            cc=_matching("cc", values.get("cc"), upper=True),
            asn=_asn(values.get("asn")),
            service=_matching("service", values.get("service")),
            function=_matching("function", values.get("function")),
            verdict=_choice("verdict", values.get("verdict"), VERDICTS),
            grain=_choice("grain", values.get("grain"), GRAINS) or "auto",
        )

    def to_params(self) -> dict[str, str]:
        """The set filters as text, in the canonical form :meth:`parse` reads."""
        params: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or (field.name == "grain" and value == "auto"):
                continue
            params[field.name] = format_time(value) if isinstance(value, dt.datetime) else value
        return params

    def query_string(self, **override: str | None) -> str:
        """``?since=...&cc=...`` of these filters with ``override`` set (None: removed);
        "" when nothing is set."""
        params: dict[str, str] = self.to_params()
        for name, value in override.items():
            if value is None or value == "":
                params.pop(name, None)
            else:
                params[name] = value
        return "?" + urlencode(params) if params else ""

    def without_time(self) -> ViewFilters:
        """These filters with since and until unset."""
        return replace(self, since=None, until=None)


def format_time(value: dt.datetime) -> str:
    """``YYYY-MM-DD`` at midnight, else ``YYYY-MM-DDTHH:MM``."""
    if value.hour == value.minute == 0:
        return value.strftime(_DAY_FORMAT)
    return value.strftime(_MINUTE_FORMAT)


def _time(name: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    if not _TIME.fullmatch(text):
        raise BadQuery(f"{name}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    try:
        return dt.datetime.strptime(text, _MINUTE_FORMAT if "T" in text else _DAY_FORMAT)
    except ValueError as exc:
        raise BadQuery(f"{name}: not a date") from exc


def _check_range(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is None or until is None:
        return
    if until <= since:
        raise BadQuery("until must be after since")
    if until - since > dt.timedelta(days=MAX_RANGE_DAYS):
        raise BadQuery(f"the range is longer than {MAX_RANGE_DAYS} days")


def _matching(name: str, text: str | None, upper: bool = False) -> str | None:
    if text is None:
        return None
    value = text.upper() if upper else text
    pattern, expected = _PATTERNS[name]
    if not pattern.fullmatch(value):
        raise BadQuery(f"{name}: expected {expected}")
    return value


def _asn(text: str | None) -> str | None:
    value = _matching("asn", text, upper=True)
    if value is not None and int(value[2:]) >= 2**32:
        raise BadQuery("asn: the number is too large")
    return None if value is None else "AS" + str(int(value[2:]))


def _choice(name: str, text: str | None, choices: tuple[str, ...]) -> str | None:
    if text is not None and text not in choices:
        raise BadQuery(f"{name}: expected one of {', '.join(choices)}")
    return text

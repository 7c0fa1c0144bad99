"""The view filters: every bad form is a BadQuery with a message; the text form round-trips."""

from __future__ import annotations

import datetime as dt

import pytest

from msgwatch.dashboard.data_sql import grain
from msgwatch.dashboard.filters import BadQuery, ViewFilters


def test_parse_reads_every_filter() -> None:
    f = ViewFilters.parse(
        {
            "since": "2026-05-20",
            "until": "2026-05-21T12:30",
            "cc": "az",
            "asn": "as65001",
            "service": "whatsapp",
            "function": "voice",
            "verdict": "blocked",
            "grain": "hour",
            "page": "ignored",
        }
    )
    assert f == ViewFilters(
        since=dt.datetime(2026, 5, 20),
        until=dt.datetime(2026, 5, 21, 12, 30),
        cc="AZ",
        asn="AS65001",
        service="whatsapp",
        function="voice",
        verdict="blocked",
        grain="hour",
    )


def test_empty_values_are_unset() -> None:
    assert ViewFilters.parse({"since": "", "cc": "", "grain": ""}) == ViewFilters()


def test_text_form_round_trips() -> None:
    f = ViewFilters.parse({"since": "2026-05-20", "until": "2026-05-21T06:15", "asn": "AS00065001"})
    assert f.asn == "AS65001"
    assert f.to_params() == {"since": "2026-05-20", "until": "2026-05-21T06:15", "asn": "AS65001"}
    assert ViewFilters.parse(f.to_params()) == f
    assert ViewFilters().to_params() == {}


def test_query_string_overrides() -> None:
    f = ViewFilters.parse({"cc": "AZ", "service": "skype"})
    assert f.query_string() == "?cc=AZ&service=skype"
    assert f.query_string(service=None, function="voice") == "?cc=AZ&function=voice"
    assert f.query_string(cc="A&B") == "?cc=A%26B&service=skype"
    assert ViewFilters().query_string() == ""


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01"}, "since"),
        ({"since": "2026-02-30"}, "since"),
        ({"until": "2026-05-20T25:00"}, "until"),
        ({"until": "2026-05-20 10:00"}, "until"),
        ({"since": "2026-05-21", "until": "2026-05-21"}, "after"),
        ({"since": "2026-05-22", "until": "2026-05-21"}, "after"),
        ({"since": "2025-01-01", "until": "2026-05-21"}, "400"),
        ({"cc": "AZE"}, "cc"),
        ({"cc": "A1"}, "cc"),
        ({"asn": "65001"}, "asn"),
        ({"asn": "AS"}, "asn"),
        ({"asn": "AS9999999999"}, "asn"),
        ({"service": "Whats App"}, "service"),
        ({"service": "<script>"}, "service"),
        ({"function": "VOICE"}, "function"),
        ({"function": "voice2"}, "function"),
        ({"verdict": "maybe"}, "verdict"),
        ({"grain": "minute"}, "grain"),
        ({"service": "a" * 65}, "64"),
    ],
)
def test_bad_forms_are_bad_queries(params: dict[str, str], word: str) -> None:
    with pytest.raises(BadQuery) as raised:
        ViewFilters.parse(params)
    assert word in str(raised.value)


DAY = ("2026-05-20 00:00:00", "2026-05-21 00:00:00")
TWO_DAYS = ("2026-05-20 00:00:00", "2026-05-22 00:00:00")
THREE_DAYS = ("2026-05-20 00:00:00", "2026-05-23 00:00:00")
MONTH = ("2026-05-20 00:00:00", "2026-06-20 00:00:00")
TWO_MONTHS = ("2026-05-20 00:00:00", "2026-07-20 00:00:00")


@pytest.mark.parametrize(
    ("own", "window", "choice", "seconds"),
    [
        (900, DAY, "auto", 900),
        (900, TWO_DAYS, "auto", 900),
        (900, THREE_DAYS, "auto", 3600),
        (900, MONTH, "auto", 3600),
        (900, TWO_MONTHS, "auto", 86400),
        (900, TWO_MONTHS, "bucket", 900),
        (900, DAY, "day", 86400),
        (900, TWO_MONTHS, "hour", 3600),
        (7200, THREE_DAYS, "hour", 7200),
        (7200, DAY, "bucket", 7200),
    ],
)
def test_grain(own: int, window: tuple[str, str], choice: str, seconds: int) -> None:
    assert grain(own, window, choice) == seconds

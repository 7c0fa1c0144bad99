"""The exports: every CSV and JSON parses, holds the rows of the table beside its link on the page
(and the fixture's count), carries its filters and generation time, and neutralises formulas."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest

from msgwatch.dashboard.app import DashboardConfig, create_app
from msgwatch.dashboard.export import csv_text, safe_cell
from tests.browser import truth
from tests.dashboard import fixture
from tests.dashboard.client import request
from tests.dashboard.test_app import table_rows

W = truth.WINDOW


@pytest.fixture(scope="module")
def app(observatory_dir: fixture.Observatory) -> Any:
    return create_app(DashboardConfig(observatory_dir.lake))


def links(html: str) -> list[tuple[str, str]]:
    """The page's table exports: (format, href)."""
    found = re.findall(r'<a data-export="(csv|json)" href="([^"]+)"', html)
    return [(kind, href.replace("&amp;", "&")) for kind, href in found]


def rows_of(kind: str, body: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    if kind == "csv":
        reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
        return list(reader.fieldnames or []), list(reader)
    import orjson

    document = orjson.loads(body)
    assert {"view", "filters", "generated", "columns", "rows"} <= set(document)
    return document["columns"], document["rows"]


def pages(lake: Any) -> dict[str, str]:
    events = truth.events(lake)
    return {
        "overview": f"/?{W}",
        "network": f"/network/{fixture.CC}/{fixture.CENSORED}?{W}",
        "events": f"/events?{W}",
        "event": f"/event/{next(e['event_id'] for e in events if e['level'] == 'network')}",
        "measurement": f"/measurement/{truth.uid(lake, fixture.CENSORED, 'blocked')}",
    }


@pytest.mark.parametrize("name", ["overview", "network", "events", "event", "measurement"])
def test_every_export_of_a_page_holds_its_table_rows(app, observatory_dir, name: str) -> None:
    lake = observatory_dir.lake
    html = request(app, pages(lake)[name]).text
    found = links(html)
    assert found
    for kind, href in found:
        answer = request(app, href)
        assert answer.status == 200, (href, answer.text[:300])
        view = href.split("/export/", 1)[1].split(".", 1)[0]
        columns, rows = rows_of(kind, answer.body)
        assert columns and all(set(row) <= set(columns) for row in rows)
        if f'data-view="{view}"' in html:
            assert len(rows) == table_rows(html, view), (href, kind)
        assert answer.headers["content-disposition"].startswith("attachment;")
    if name == "overview":
        kind, href = next(x for x in found if "/overview." in x[1])
        assert len(rows_of(kind, request(app, href).body)[1]) == len(truth.cells(lake))
    if name == "network":
        kind, href = next(x for x in found if "/network." in x[1])
        count = truth.heat_marks(lake, fixture.CENSORED)
        assert len(rows_of(kind, request(app, href).body)[1]) == count


def test_json_carries_filters_and_the_view(app, observatory_dir) -> None:
    answer = request(app, f"/export/overview.json?{W}&cc=az")
    document = answer.json()
    assert document["view"] == "overview"
    assert document["filters"] == {"since": truth.SINCE, "until": truth.UNTIL, "cc": "AZ"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["generated"])
    assert {row["probe_cc"] for row in document["rows"]} == {"AZ"}
    event_id = truth.events(observatory_dir.lake)[0]["event_id"]
    event = request(app, f"/export/event.json?id={event_id}").json()
    assert event["event"]["event_id"] == event_id and event["rows"]


def test_series_export_has_one_row_per_hour(app) -> None:
    query = f"cc={fixture.CC}&asn={fixture.CENSORED}&service=whatsapp&function=voice&{W}"
    columns, rows = rows_of("csv", request(app, f"/export/series.csv?{query}").body)
    assert len(rows) == fixture.HOURS and "share" in columns
    blocked = [r for r in rows if r["share"] not in ("", "0.0")]
    assert len(blocked) == len(fixture.BLOCKED)


def test_bad_export_params_are_400_json(app) -> None:
    for url in ("/export/overview.csv?since=nope", "/export/series.json?cc=AZ",
                "/export/events.csv?limit=99999"):  # fmt: skip
        answer = request(app, url)
        assert answer.status == 400 and "error" in answer.json()
    assert request(app, "/export/pie.csv").status == 404
    assert request(app, "/export/overview.xml").status == 404
    assert request(app, "/export/event.json?id=net-unknown").status == 404


@pytest.mark.parametrize("value", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_cells_cannot_be_formulas(value: str) -> None:
    assert safe_cell(value) == "'" + value
    text = csv_text([{"a": value, "b": -1.5, "c": {"x": "=y"}}])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["a"] == "'" + value and row["b"] == "-1.5"
    assert row["c"] == '{"x":"=y"}'

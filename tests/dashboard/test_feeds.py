"""The events feeds: Atom 1.0 and JSON Feed 1.1 parse, hold the fixture's events with stable ids
and absolute links, and filter like the pages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from msgwatch.dashboard.app import DashboardConfig, create_app
from msgwatch.dashboard.feeds import clean
from tests.browser import truth
from tests.dashboard import fixture
from tests.dashboard.client import request

W = truth.WINDOW
A = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(scope="module")
def app(observatory_dir: fixture.Observatory) -> Any:
    return create_app(DashboardConfig(observatory_dir.lake))


def test_atom_feed_holds_the_events(app, observatory_dir) -> None:
    answer = request(app, f"/feed.atom?{W}", host="news.example:8080")
    assert answer.status == 200 and answer.headers["content-type"].startswith(
        "application/atom+xml"
    )
    feed = ET.fromstring(answer.body)
    assert feed.tag == f"{A}feed" and feed.findtext(f"{A}updated")
    entries = feed.findall(f"{A}entry")
    expected = {e["event_id"] for e in truth.events(observatory_dir.lake)}
    assert {e.findtext(f"{A}id") for e in entries} == {f"urn:msgwatch:event:{i}" for i in expected}
    for entry in entries:
        link = entry.find(f"{A}link")
        assert link is not None
        href = link.get("href", "")
        assert href.startswith("http://news.example:8080/event/")
        assert entry.findtext(f"{A}updated") and entry.findtext(f"{A}summary")


def test_json_feed_is_filterable(app, observatory_dir) -> None:
    lake = observatory_dir.lake
    answer = request(app, f"/feed.json?{W}&asn={fixture.CENSORED}", root_path="/dashboard")
    feed = answer.json()
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    ids = {item["id"].rsplit(":", 1)[1] for item in feed["items"]}
    assert {e["event_id"] for e in truth.events(lake, fixture.CENSORED)} <= ids
    assert all(
        item["url"].startswith("http://testserver/dashboard/event/") for item in feed["items"]
    )
    assert feed["feed_url"].startswith("http://testserver/dashboard/feed.json?")
    none = request(app, f"/feed.json?{W}&asn={fixture.CONTROL}").json()
    assert none["items"] == []
    again = request(app, f"/feed.json?{W}&asn={fixture.CENSORED}", root_path="/dashboard").json()
    assert [i["id"] for i in again["items"]] == [i["id"] for i in feed["items"]]  # stable


def test_bad_feed_params_are_400(app) -> None:
    assert request(app, "/feed.json?cc=1").status == 400
    assert "error" in request(app, "/feed.json?cc=1").json()
    assert request(app, "/feed.atom?since=x").status == 400


def test_xml_cannot_carry_control_characters() -> None:
    assert clean("a\x00b\x1bc\ufffed") == "abcd"

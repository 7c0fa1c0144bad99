"""The lake's read-only queries: filters, keyset paging, committed files only."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from msgwatch.analysis import lake
from msgwatch.analysis.inputs.jsonl import jsonl_sources
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.analysis.query import Filters, Lake, LakeMissing, Page, encode_cursor
from tests.analysis.conftest import LinesSource
from tests.collector.analysis_data import story, write_jsonl


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, lab_lines: list[bytes]) -> Path:
    """A lake of two passes over the lab measurements."""
    path = tmp_path_factory.mktemp("query") / "out"
    source = LinesSource("lab", lab_lines[:20])
    run_pass(PassConfig(sources=[source], out_dir=path, bucket_seconds=60, workers=1))
    source.lines = lab_lines
    run_pass(PassConfig(sources=[source], out_dir=path, bucket_seconds=60, workers=1))
    return path


def every_page(read: Any, filters: Filters, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page: Page = read(filters, limit=limit, cursor=cursor)
        assert len(page.results) <= limit
        rows += page.results
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def test_paging_returns_every_row_once_newest_first(out: Path) -> None:
    view = Lake(out)
    everything = view.verdicts(Filters(), limit=1000).results
    paged = every_page(view.verdicts, Filters(), 25)
    assert paged == everything and len(paged) > 100
    times = [r["measurement_start_time"] for r in paged]
    assert times == sorted(times, reverse=True)
    observations = every_page(view.observations, Filters(service="whatsapp"), 200)
    assert observations == view.observations(Filters(service="whatsapp"), limit=1000).results


def test_filters_select_exactly_the_matching_rows(out: Path) -> None:
    view = Lake(out)
    everything = every_page(view.verdicts, Filters(), 1000)
    asn = everything[0]["probe_asn"]
    want = [r for r in everything if r["probe_asn"] == asn and r["service"] == "whatsapp"]
    got = every_page(view.verdicts, Filters(probe_asn=asn, service="whatsapp"), 1000)
    assert got == want and got
    blocked = every_page(view.verdicts, Filters(verdict="blocked"), 1000)
    assert blocked == [r for r in everything if r["verdict"] == "blocked"] and blocked
    uid = everything[3]["measurement_uid"]
    assert {
        r["measurement_uid"]
        for r in view.observations(Filters(measurement_uid=uid), limit=1000).results
    } == {uid}
    aggregates = every_page(view.aggregates, Filters(), 1000)
    middle = dt.datetime.fromisoformat(aggregates[len(aggregates) // 2]["bucket"])
    later = every_page(view.aggregates, Filters(since=middle), 1000)
    earlier = every_page(view.aggregates, Filters(until=middle), 1000)
    assert all(r["bucket"] >= str(middle) for r in later) and all(
        r["bucket"] < str(middle) for r in earlier
    )
    assert len(later) + len(earlier) == len(aggregates)
    assert view.events(Filters(level="country")).results == [
        e for e in every_page(view.events, Filters(), 1000) if e["level"] == "country"
    ]


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake where Skype calls are blocked on two networks of a country for 6 hours, and work
    again after on one of them; the Skype of a third network works throughout."""
    start = dt.datetime(2026, 5, 20)
    measurements = []
    for asn in ("AS64512", "AS64513"):
        measurements += story(start, 64, 6, network=("AZ", asn))
    later = start + dt.timedelta(hours=70)
    measurements += story(later, 12, 0, network=("AZ", "AS64512"))
    measurements += story(start, 82, 0, network=("AZ", "AS64514"))
    path = tmp_path_factory.mktemp("spans")
    data = write_jsonl(path / "story.jsonl", measurements)
    run_pass(PassConfig(sources=jsonl_sources([data]), out_dir=path / "out", workers=1))
    return path / "out"


def test_events_are_spans_and_country_events_match_by_their_members(spans: Path) -> None:
    """``since`` keeps the events going on at or after it (ongoing, or ended after it), ``until``
    those started before it; a network, service or function filter keeps the country events
    whose members list it."""
    view = Lake(spans)
    events = every_page(view.events, Filters(), 1000)
    assert {e["level"] for e in events} == {"network", "country"}
    assert any(e["end"] is not None for e in events)  # some ended: ``since`` has a case to judge
    moments = sorted({e[k] for e in events for k in ("start", "end") if e[k] is not None})
    for text in moments:
        moment = dt.datetime.fromisoformat(text)
        going_on = [e for e in events if e["end"] is None or e["end"] > text]
        assert every_page(view.events, Filters(since=moment), 1000) == going_on, text
        started = [e for e in events if e["start"] < text]
        assert every_page(view.events, Filters(until=moment), 1000) == started, text

    def members(event: dict[str, Any], key: str) -> list[str]:
        return json.loads(event["members"])[key] if event["level"] == "country" else []

    country = next(e for e in events if e["level"] == "country")
    for column, key in (
        ("probe_asn", "networks"),
        ("service", "services"),
        ("function", "functions"),
    ):
        for value in members(country, key):
            want = [e for e in events if e[column] == value or value in members(e, key)]
            got = every_page(view.events, Filters(**{column: value}), 1000)  # type: ignore[arg-type]
            assert got == want and country in got, (column, value)
            assert any(e["level"] == "network" for e in got)


def test_bad_cursors_and_limits_are_refused(out: Path) -> None:
    view = Lake(out)
    for cursor in ("!!", "bm90IGpzb24", encode_cursor(["a"]), encode_cursor([{"a": 1}, 1, 2, 3])):
        with pytest.raises(ValueError):
            view.verdicts(Filters(), cursor=cursor)
    for limit in (0, 1001):
        with pytest.raises(ValueError):
            view.aggregates(Filters(), limit=limit)


def test_only_committed_files_are_read(out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = every_page(Lake(copy).verdicts, Filters(), 1000)
    state = lake.read_state(copy)
    assert state is not None
    listed = state["files"]["verdicts"][0]
    shutil.copy(copy / listed, copy / listed.replace("pass-", "pass-9"))  # a half-done pass's part
    assert every_page(Lake(copy).verdicts, Filters(), 1000) == before


def test_a_missing_lake_is_said(tmp_path: Path) -> None:
    with pytest.raises(LakeMissing):
        Lake(tmp_path)


@pytest.mark.parametrize("members", ["", "not json", '{"networks": "AS64512"}', '{"networks": {}}'])
def test_a_malformed_members_value_matches_nothing_and_fails_no_query(
    spans: Path, tmp_path: Path, members: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(spans, copy)
    state = lake.read_state(copy)
    assert state is not None
    listed = state["files"]["events"]
    for name in listed if isinstance(listed, list) else [listed]:
        path = str(copy / name)
        with duckdb.connect() as connection:
            connection.execute(
                "COPY (SELECT * REPLACE (CASE WHEN level = 'country' THEN ? ELSE members END"
                f" AS members) FROM read_parquet('{path}')) TO '{path}.new' (FORMAT parquet)",
                [members],
            )
        Path(path + ".new").replace(path)
    view = Lake(copy)
    got = every_page(view.events, Filters(probe_asn="AS64512"), 1000)
    assert got and all(e["level"] == "network" and e["probe_asn"] == "AS64512" for e in got)

"""The lake's read-only queries: filters, keyset paging, committed files only."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest

from msgwatch.analysis import lake
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.analysis.query import Filters, Lake, LakeMissing, Page, encode_cursor
from tests.analysis.conftest import LinesSource


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

"""The pass's events: the detector fed from the aggregates, online across passes, with evidence.

The transform is replaced by a small one (tests only) that makes one verdict row per line, so a
timeline of verdicts can be written directly: 48 hours working, 12 blocked, 12 working again on
AS1, always working on AS2 of the same country.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis import aggregates, lake
from msgwatch.analysis import transform as transform_module
from msgwatch.analysis.aggregates import needed_sql
from msgwatch.analysis.events.detect import DetectorParams, NeedsAllRows, detect, rows_needed
from msgwatch.analysis.events.series import bucket_number
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.analysis.query import Filters, Lake
from msgwatch.analysis.schema import VERDICT_COLUMNS, names
from msgwatch.analysis.transform import Meta, Transformed
from tests.analysis import events_data
from tests.analysis.conftest import LinesSource

START = dt.datetime(2026, 5, 20)
BLOCKED = range(48, 60)  # hours blocked on AS1


def fake_transform(measurement: Any, meta: Meta) -> Transformed:
    """One verdict row from ``{"t", "asn", "v"}``."""
    time = measurement["t"]
    row = dict.fromkeys(names(VERDICT_COLUMNS))
    row.update(
        measurement_uid=meta.measurement_uid, measurement_start_time=time, day=time[:10], probe_cc="AZ",
        probe_asn=measurement["asn"], probe_tag=measurement["asn"].lower(), source="msgwatch",
        test_name="fake", service="whatsapp", function="voice", verdict=measurement["v"],
        mechanism="udp.dpi_call" if measurement["v"] == "blocked" else None, control_ok=True,
    )  # fmt: skip
    return Transformed("fake", verdicts=[row])


def timeline(hours: range) -> list[bytes]:
    lines = []
    for hour in hours:
        for asn in ("AS1", "AS2"):
            verdict = "blocked" if asn == "AS1" and hour in BLOCKED else "ok"
            for minute in range(0, 50, 10):
                time = (START + dt.timedelta(hours=hour, minutes=minute)).strftime(
                    "%Y-%m-%d %H:%M:%S"
                )
                lines.append(
                    orjson.dumps(
                        {"t": time, "asn": asn, "v": verdict, "measurement_uid": f"{asn}-{time}"}
                    )
                )
    return lines


@pytest.fixture(autouse=True)
def _fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform_module, "transform", fake_transform)


def events_of(out: Path) -> list[dict[str, Any]]:
    state = lake.read_state(out)
    assert state is not None
    listed = orjson.loads((out / state["files"]["events_json"]).read_bytes())
    assert isinstance(listed, list)
    return listed


def run(out: Path, lines: list[bytes], closed_until: dt.datetime | None = None) -> None:
    run_pass(
        PassConfig(
            sources=[LinesSource("t", lines)], out_dir=out, workers=1, closed_until=closed_until
        )
    )


def test_a_blocking_becomes_one_network_event_with_evidence(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(out, timeline(range(72)))
    network = [e for e in events_of(out) if e["level"] == "network"]
    assert [(e["probe_asn"], e["service"], e["function"], e["verdict"]) for e in network] == [
        ("AS1", "whatsapp", "voice", "blocked")
    ]
    event = network[0]
    assert event["start"] == "2026-05-22 00:00:00" and event["end"] == "2026-05-22 12:00:00"
    evidence = orjson.loads(event["evidence"])
    assert evidence["first_failing"]["measurement_uid"] == "AS1-2026-05-22 00:00:00"
    assert evidence["last_working_before"]["measurement_uid"] == "AS1-2026-05-21 23:40:00"
    page = Lake(out).events(Filters(level="network"))
    assert [e["event_id"] for e in page.results] == [event["event_id"]]


def test_events_found_across_passes_equal_those_of_one_pass(tmp_path: Path) -> None:
    lines = timeline(range(72))
    run(tmp_path / "once", lines)
    split = tmp_path / "split"
    source = LinesSource("t", lines[: 54 * 10])  # the blocking is ongoing at the first pass's end
    run_pass(PassConfig(sources=[source], out_dir=split, workers=1))
    ongoing = [e for e in events_of(split) if e["level"] == "network"]
    assert [e["ongoing"] for e in ongoing] == [True]
    source.lines = lines
    run_pass(PassConfig(sources=[source], out_dir=split, workers=1))
    assert events_of(split) == events_of(tmp_path / "once")


def test_late_data_before_the_horizon_redetects_from_all(tmp_path: Path) -> None:
    lines = timeline(range(72))
    late = [line for line in lines if b'"AS1"' in line and b"2026-05-22 0" in line]
    rest = [line for line in lines if line not in late]
    out = tmp_path / "late"
    source = LinesSource("t", rest)
    run_pass(PassConfig(sources=[source], out_dir=out, workers=1))
    source.lines = rest + late
    run_pass(PassConfig(sources=[source], out_dir=out, workers=1))
    run(tmp_path / "once", lines)
    assert events_of(out) == events_of(tmp_path / "once")


def test_a_days_many_small_parts_are_merged_into_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lines = timeline(range(5))  # one hour a pass, all on 2026-05-20
    source = LinesSource("t", [])
    for hour in range(5):
        source.lines = lines[: (hour + 1) * 10]
        run_pass(PassConfig(sources=[source], out_dir=out, workers=1, compact_parts=4))
    state = lake.read_state(out)
    assert state is not None
    listed = state["files"]["verdicts"]
    assert len(listed) == 2  # the first 4 passes' parts merged, then the 5th pass's own
    assert sorted(
        p.relative_to(out).as_posix() for p in (out / "verdicts").rglob("*.parquet")
    ) == sorted(listed)
    assert len(every_verdict(out)) == len(lines)


def every_verdict(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    view, cursor = Lake(out), None
    while True:
        page = view.verdicts(Filters(), limit=1000, cursor=cursor)
        rows += page.results
        if (cursor := page.next_cursor) is None:
            return rows


def story(hours: range, blocked: dict[str, list[range]]) -> list[bytes]:
    """Five measurements an hour per network; blocked where ``blocked`` says."""
    lines = []
    for hour in hours:
        for asn in ("AS1", "AS2", "AS3"):
            verdict = "blocked" if any(hour in r for r in blocked.get(asn, [])) else "ok"
            for minute in range(0, 50, 10):
                time = (START + dt.timedelta(hours=hour, minutes=minute)).strftime(
                    "%Y-%m-%d %H:%M:%S"
                )
                line = {"t": time, "asn": asn, "v": verdict, "measurement_uid": f"{asn}-{time}"}
                lines.append(orjson.dumps(line))
    return lines


def test_final_events_are_carried_and_every_pass_equals_one_pass_over_as_much(
    tmp_path: Path,
) -> None:
    """An incremental pass reads only the aggregate rows its detection needs and takes the events
    closed before its horizon from the committed state (their rows and what clustering needs):
    after every pass the events are, row for row, those of one pass over as much data. The story:
    AS1 and AS2 blocked together (one country event), AS1 again much later, AS3 from hour 200
    on, so later passes carry the first events and a new one clusters beside them."""
    blocked = {
        "AS1": [range(48, 60), range(150, 162)],
        "AS2": [range(50, 58)],
        "AS3": [range(200, 300)],
    }
    lines = story(range(240), blocked)
    per_hour = 15
    source = LinesSource("t", [])
    out = tmp_path / "steps"
    carried = []
    for cut in (100, 130, 170, 210, 240):
        source.lines = lines[: cut * per_hour]
        report = run_pass(PassConfig(sources=[source], out_dir=out, workers=1))
        carried.append(report.events_carried)
        once = tmp_path / f"once-{cut}"
        run(once, lines[: cut * per_hour])
        assert events_of(out) == events_of(once), cut
    assert carried[0] == 0  # the first pass is fresh
    assert all(n >= 2 for n in carried[1:]), carried  # AS1's and AS2's first events, then more
    network = [e for e in events_of(out) if e["level"] == "network"]
    assert [(e["probe_asn"], e["ongoing"]) for e in network] == [
        ("AS1", False), ("AS1", False), ("AS2", False), ("AS3", True)
    ]  # fmt: skip


def test_detection_from_the_rows_needed_carries_final_events_or_asks_for_all() -> None:
    """Detection from the state and the rows from :func:`rows_needed_from` on takes the closed
    event from the state's summaries and gives the events of a detection from every row; without
    the summary, an event that starts before the rows given raises NeedsAllRows (the pass then
    detects again from every row)."""
    params = DetectorParams()
    every = events_data.rows(events_data.Spec(background=0.02), 400, events_data.step(100, 130))
    before = [r for r in every if r["bucket"] < events_data.at(300)]
    first = detect(before, params, None, None)
    assert [e["level"] for e in first.events] == ["network", "country"]
    assert len(first.state["summaries"]) == 1
    needed = rows_needed(params, first.state)
    base = bucket_number(events_data.T0, events_data.HOUR)
    # every series from the open bucket (299) on: the event ended past a reopening's reach
    assert needed is not None and (needed.horizon - base, needed.scopes) == (299, {})
    later = [r for r in every if r["bucket"] >= events_data.at(299)]
    again = detect(later, params, first.state, None, rows_from=needed)
    assert again.carried == 1
    assert again.events == detect(every, params, None, None).events
    forgetful = {**first.state, "summaries": []}
    with pytest.raises(NeedsAllRows):
        detect(later, params, forgetful, None, rows_from=needed)


def test_an_open_event_needs_its_country_and_services_rows_from_its_start() -> None:
    """While an event is open, the rows of its country and service are read from its start (its
    controls read the other networks and functions of the service); the rest from the horizon."""
    params = DetectorParams()
    specs = [events_data.Spec(asn=asn, background=0.02) for asn in ("AS1", "AS2")]
    every = events_data.rows(specs[0], 300, events_data.step(250, 300))
    every += events_data.rows(specs[1], 300, lambda b: 0.0, seed=2)
    first = detect([r for r in every if r["bucket"] < events_data.at(280)], params, None, None)
    needed = rows_needed(params, first.state)
    base = bucket_number(events_data.T0, events_data.HOUR)
    assert needed is not None and needed.horizon - base == 279
    assert {scope: n - base for scope, n in needed.scopes.items()} == {("AZ", "whatsapp"): 250}
    assert needed_sql(needed, 3600) == (
        "bucket >= TIMESTAMP '2017-05-12 15:00:00' OR (probe_cc = 'AZ' AND service = 'whatsapp' "
        "AND bucket >= TIMESTAMP '2017-05-11 10:00:00')"
    )


def test_rows_by_scope_come_in_runs_each_sorted_alone_as_one_sort_gives_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector's rows, read run by run (a few countries and services at a time, a scope
    larger than a run alone), are those of one sort over all, in the same scope order."""
    path = tmp_path / "aggregates.parquet"
    with lake.connect(tmp_path) as connection:
        connection.execute(
            f"COPY (SELECT TIMESTAMP '2026-05-01' + INTERVAL (i % 97) HOUR AS bucket, "
            "3600 AS bucket_seconds, "
            "CASE WHEN i % 11 = 0 THEN NULL ELSE 'C' || (i % 5) END AS probe_cc, "
            "'AS' || (i % 7) AS probe_asn, "
            "CASE WHEN i % 13 = 0 THEN NULL ELSE 's' || (i % 3) END AS service, "
            "'text' AS function, 'ok' AS verdict, '' AS mechanism, i AS measurements, "
            "1 AS probes, 0 AS control_ok FROM range(3000) t(i)) "
            f"TO {lake.sql_text(str(path))} (FORMAT PARQUET)"
        )
        files = [str(path)]
        where = "bucket >= TIMESTAMP '2026-05-02'"

        def scopes(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
            keys = [(r["probe_cc"] or "", r["service"] or "") for r in rows]
            return [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]

        def ordered(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return sorted(tuple(str(v) for v in r.values()) for r in rows)

        whole = list(aggregates.aggregate_rows(connection, files, where, by_scope=True))
        monkeypatch.setattr(aggregates, "SCOPE_BATCH_ROWS", 130)
        runs = aggregates.scope_runs(connection, files, where)
        pieces = list(aggregates.aggregate_rows(connection, files, where, by_scope=True))
    assert 5 < len(runs) < 24  # 24 scopes of 15 to 137 rows: some share a run, some exceed one
    assert scopes(pieces) == scopes(whole) == sorted(set(scopes(whole)))
    assert ordered(pieces) == ordered(whole)
    assert all(r["bucket"] >= dt.datetime(2026, 5, 2) for r in pieces)

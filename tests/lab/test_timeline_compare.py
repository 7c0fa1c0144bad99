"""The timeline scenario's ground truth as events: its file, and the comparison (no lab needed).

:func:`msgwatch.lab.timeline.compare` must accept exactly the events the phases imply: each
expected one once, with its pattern, its start and end within one bucket of the phase boundaries,
and nothing else.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from msgwatch.lab.scenario import load_scenario
from msgwatch.lab.timeline import compare

T0 = dt.datetime(2026, 5, 22, 10, 0, 0)
SCENARIO = load_scenario("az-2017-timeline")
assert SCENARIO.analysis is not None
BUCKET = SCENARIO.analysis.bucket_seconds


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# open 0-15 s, games 15-40 s, blocked 40-55 s, lifted 55-70 s.
BOUNDARIES = [("open", _at(0)), ("games", _at(15)), ("blocked", _at(40)), ("lifted", _at(55)),
              ("end", _at(70))]  # fmt: skip


def _event(
    asn: str, function: str, pattern: str, start: float, end: float | None
) -> dict[str, Any]:
    return {
        "event_id": f"{asn}-{function}-{pattern}-{start}",
        "level": "network",
        "probe_cc": "AZ",
        "probe_asn": asn,
        "service": "whatsapp",
        "function": function,
        "pattern": pattern,
        "start": _at(start).strftime("%Y-%m-%d %H:%M:%S"),
        "end": None if end is None else _at(end).strftime("%Y-%m-%d %H:%M:%S"),
        "ongoing": end is None,
    }


def _truth() -> list[dict[str, Any]]:
    """The events the phases imply, each a little off the boundaries (bucket starts)."""
    return [
        _event("AS64512", f, p, s, e)
        for f in ("voice", "video")
        for p, s, e in (("episodic", 15 - BUCKET + 1, 40), ("continuous", 40, 55 + BUCKET - 1))
    ]


def test_the_scenario_states_its_time() -> None:
    assert SCENARIO.observatory is not None and SCENARIO.analysis is not None
    assert SCENARIO.observatory.every == BUCKET  # one run per bucket
    assert [p.name for p in SCENARIO.phase] == ["open", "games", "blocked", "lifted"]
    games = SCENARIO.phase[1]
    assert True in games.episodes and False in games.episodes
    assert {(e.isp, e.function, e.pattern) for e in SCENARIO.expect_event} == {
        ("isp1", f, p) for f in ("voice", "video") for p in ("episodic", "continuous")
    }


def test_exactly_the_implied_events_match() -> None:
    rows = compare(SCENARIO, BOUNDARIES, _truth())
    assert len(rows) == 4 and all(r["match"] for r in rows), rows


def test_a_country_event_is_not_compared() -> None:
    country = {**_event("", "voice", "continuous", 40, 55), "level": "country", "probe_asn": None}
    rows = compare(SCENARIO, BOUNDARIES, [*_truth(), country])
    assert len(rows) == 4 and all(r["match"] for r in rows)


@pytest.mark.parametrize(
    "extra",
    [
        _event("AS64513", "voice", "continuous", 40, 55),  # ISP 2 untouched
        _event("AS64512", "text", "continuous", 40, 55),  # text untouched
        _event("AS64512", "voice", "episodic", 0, 10),  # a third event on the calls
    ],
)
def test_any_other_event_is_a_mismatch(extra: dict[str, Any]) -> None:
    rows = compare(SCENARIO, BOUNDARIES, [*_truth(), extra])
    assert len(rows) == 5
    wrong = [r for r in rows if not r["match"]]
    assert len(wrong) == 1 and wrong[0]["expected"] == "none"
    assert wrong[0]["function"] == extra["function"]


@pytest.mark.parametrize(
    "change",
    [
        {"pattern": "continuous"},  # the Games came and went
        {"start": _at(15 - BUCKET - 1).strftime("%Y-%m-%d %H:%M:%S")},  # too early
        {"start": _at(15 + BUCKET + 1).strftime("%Y-%m-%d %H:%M:%S")},  # too late
        {"end": _at(40 + BUCKET + 1).strftime("%Y-%m-%d %H:%M:%S")},  # ends too late
        {"end": None, "ongoing": True},  # games is not the last phase: it must end
    ],
)
def test_a_wrong_pattern_or_time_is_a_mismatch(change: dict[str, Any]) -> None:
    events = _truth()
    events[0] = {**events[0], **change}
    rows = compare(SCENARIO, BOUNDARIES, events)
    wrong = [r for r in rows if not r["match"]]
    assert len(wrong) == 2, rows  # the expectation missed, and the event nobody claims
    assert {r["expected"] for r in wrong} == {"episodic", "none"}


def test_a_missing_event_is_a_mismatch() -> None:
    rows = compare(SCENARIO, BOUNDARIES, _truth()[1:])
    assert [r["match"] for r in rows].count(False) == 1
    assert not rows[0]["match"] and rows[0]["pattern"] is None


def test_an_ongoing_event_matches_when_its_phase_is_the_last() -> None:
    data = SCENARIO.model_dump()
    data["expect_event"] = [{"isp": "isp1", "service": "whatsapp", "function": "voice",
                             "pattern": "continuous", "start": "lifted", "end": "lifted"}]  # fmt: skip
    scenario = type(SCENARIO).model_validate(data)
    rows = compare(scenario, BOUNDARIES, [_event("AS64512", "voice", "continuous", 55, None)])
    assert rows[0]["match"], rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expect_event": [{"isp": "isp1", "service": "whatsapp", "function": "voice",
                            "pattern": "episodic", "start": "games", "end": "nowhere"}]},
         "expect_event: phases are"),
        ({"expect_event": [{"isp": "isp1", "service": "whatsapp", "function": "voice",
                            "pattern": "episodic", "start": "lifted", "end": "games"}]},
         "after the end"),
        ({"observatory": None}, r"need an \[observatory\]"),
        ({"analysis": {"bucket": "0.5s"}}, "whole number"),
    ],
)  # fmt: skip
def test_a_bad_timeline_is_refused(change: dict[str, Any], message: str) -> None:
    data = {**SCENARIO.model_dump(), **change}
    with pytest.raises(ValidationError, match=message):
        type(SCENARIO).model_validate(data)


@pytest.mark.parametrize("found", [4, 3])
def test_the_demo_ends_with_the_story_over_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, found: int
) -> None:
    """``msgwatch demo`` runs az-2017, then az-2017-timeline: its events table and story; a
    missed event is a mismatch (exit 7)."""
    from click.testing import CliRunner

    from msgwatch.cli.main import cli
    from tests.cli.demo_stub import stub_lab_runs

    rows = compare(SCENARIO, BOUNDARIES, _truth()[:found])
    story = "WhatsApp voice and video calls blocked on AS64512 (the lab's ISP 1)."
    timeline = {
        "bucket_seconds": BUCKET,
        "phases": [{"phase": n, "start": t.strftime("%Y-%m-%d %H:%M:%S")} for n, t in BOUNDARIES],
        "rows": rows,
        "matched": sum(r["match"] for r in rows),
        "total": len(rows),
        "events": _truth()[:found],
        "stories": [story],
    }
    ran = stub_lab_runs(monkeypatch, tmp_path, timeline)
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "200"})
    assert ran == ["az-2017", "az-2017-timeline", "calls-via-vpn"]
    assert result.exit_code == (0 if found == 4 else 7), result.output
    flat = " ".join(result.output.split())
    assert f"{timeline['matched']} of {len(rows)} events match" in flat
    assert f"Story: {story}" in flat and "events.json" in flat
    assert flat.count("episodic") >= 2 and "continuous" in flat


def _implied(seconds_per_run: int) -> tuple[list[dict[str, Any]], list[tuple[str, dt.datetime]]]:
    """The aggregate rows a clean lab run of the scenario gives: one bucket per scheduled run,
    every probe's measurement of each call function blocked (ISP 1, rules on) or ok."""
    assert SCENARIO.observatory is not None
    probes, rows, boundaries = SCENARIO.observatory.probes, [], []
    bucket = 0
    for phase in SCENARIO.phase:
        boundaries.append((phase.name, _at(bucket * seconds_per_run)))
        for active in phase.episodes or [True] * SCENARIO.observatory.runs:
            for isp, function in [(i, f) for i in ("isp1", "isp2") for f in ("text", "voice")]:
                blocked = active and isp == "isp1" and function != "text" and bool(phase.rule)
                rows.append({
                    "bucket": _at(bucket * seconds_per_run).strftime("%Y-%m-%d %H:%M:%S"),
                    "bucket_seconds": seconds_per_run, "probe_cc": "AZ",
                    "probe_asn": "AS64512" if isp == "isp1" else "AS64513",
                    "service": "whatsapp", "function": function,
                    "verdict": "blocked" if blocked else "ok",
                    "mechanism": "udp.dpi_call" if blocked else "",
                    "measurements": probes, "probes": probes, "control_ok": probes,
                })  # fmt: skip
            bucket += 1
    boundaries.append(("end", _at(bucket * seconds_per_run)))
    return rows, boundaries


def test_the_detector_can_tell_the_scenarios_story() -> None:
    """At the lab's scale (its buckets, runs and probes), the detector with the scenario's knobs
    finds the implied events from clean data: what the lab test needs before any namespace is
    made."""
    from msgwatch.analysis.events.detect import DetectorParams, detect

    assert SCENARIO.analysis is not None and SCENARIO.analysis.detector == "clean"
    rows, boundaries = _implied(BUCKET)
    detection = detect(rows, DetectorParams.clean(BUCKET), None, boundaries[-1][1])
    voice = [e for e in compare(SCENARIO, boundaries, detection.events) if e["function"] != "video"]
    assert all(r["match"] for r in voice), voice

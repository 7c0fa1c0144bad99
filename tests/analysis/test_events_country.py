"""Country events, controls, evidence and the story, built from the data."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from msgwatch.analysis.events.detect import DetectorParams, detect
from msgwatch.analysis.events.evidence import select
from msgwatch.analysis.events.model import SeriesKey, VerdictRef

from .events_data import Spec, at, network, rows, step

PARAMS = DetectorParams()


def _country(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["level"] == "country"]


def _az_2017() -> list[dict[str, Any]]:
    """Calls blocked on two networks an hour apart, text working; a DNS block elsewhere later."""
    out: list[dict[str, Any]] = []
    for asn, start, seed in (("AS28787", 100, 1), ("AS29049", 101, 2)):
        for service in ("whatsapp", "skype"):
            for function in ("voice", "video"):
                spec = Spec(asn=asn, service=service, function=function)
                out += rows(spec, 200, step(start, 400), seed=seed)
        out += rows(Spec(asn=asn, function="text"), 200, lambda b: 0.0, seed=seed + 7)
    out += rows(Spec(asn="AS31721", service="telegram", function="web", mechanism="dns.nxdomain"), 200,
                step(150, 400), seed=5)  # fmt: skip
    return out


def test_network_events_of_one_country_starting_together_by_one_means_make_one_country_event() -> (
    None
):
    events = detect(_az_2017(), PARAMS, None, None).events
    calls, dns = sorted(_country(events), key=lambda e: e["start"])
    members = json.loads(calls["members"])
    assert members["networks"] == ["AS28787", "AS29049"]
    assert members["services"] == ["skype", "whatsapp"] and members["functions"] == [
        "video",
        "voice",
    ]
    assert len(members["events"]) == 8
    assert {e["event_id"] for e in network(events) if e["mechanism"] == "udp.dpi_call"} == set(
        members["events"]
    )
    assert calls["ongoing"] and calls["start"] == at(100) and calls["mechanism"] == "udp.dpi_call"
    assert (
        json.loads(dns["members"])["networks"] == ["AS31721"] and dns["mechanism"] == "dns.nxdomain"
    )


def test_the_story_says_what_where_since_when_what_works_and_how() -> None:
    calls = min(_country(detect(_az_2017(), PARAMS, None, None).events), key=lambda e: e["start"])
    assert calls["story"] == (
        "Skype and WhatsApp voice and video calls blocked on AS28787 and AS29049 since 2017-05-05 04:00 UTC;"
        " text works; by inspecting call traffic (DPI); ongoing."
    )


def test_the_country_story_names_the_networks_where_the_same_worked_meanwhile() -> None:
    """A third network where WhatsApp calls work throughout (and one where they fail little):
    the country event lists it as a control that worked, and its story says so."""
    history = _az_2017()
    for function in ("voice", "video"):
        history += rows(Spec(asn="AS39232", function=function), 200, lambda b: 0.0, seed=11)
        history += rows(Spec(asn="AS31721", function=function), 200, lambda b: 0.3, seed=12)
    calls = min(_country(detect(history, PARAMS, None, None).events), key=lambda e: e["start"])
    assert json.loads(calls["members"])["networks"] == ["AS28787", "AS29049"]
    assert json.loads(calls["controls"])["worked_elsewhere"] == ["AS39232"]
    assert calls["story"] == (
        "Skype and WhatsApp voice and video calls blocked on AS28787 and AS29049 since 2017-05-05 04:00 UTC;"
        " text works; the same worked on AS39232 at the same time; by inspecting call traffic (DPI);"
        " ongoing."
    )


def test_controls_say_whether_another_network_worked_and_the_own_controls_did() -> None:
    history = rows(Spec(), 200, step(100, 150))
    history += rows(Spec(asn="AS29049"), 200, lambda b: 0.0, seed=4)
    ev = next(
        e
        for e in network(detect(history, PARAMS, None, None).events)
        if e["probe_asn"] == "AS28787"
    )
    controls = json.loads(ev["controls"])
    assert controls["other_network_worked"]
    assert controls["other_networks"][0]["probe_asn"] == "AS29049"
    assert controls["control_ok_share"] > 0.9
    assert "; the same worked on AS29049 at the same time; " in ev["story"]
    alone = rows(Spec(control_ok=False), 200, step(100, 150))
    lone = network(detect(alone, PARAMS, None, None).events)[0]
    lone_controls = json.loads(lone["controls"])
    assert not lone_controls["other_network_worked"] and lone_controls["control_ok_share"] < 0.1
    assert "the same worked" not in lone["story"]
    assert lone["confidence"] < ev["confidence"]


KEY: SeriesKey = ("AZ", "AS28787", "whatsapp", "voice")


def _ref(uid: str, hour: int, verdict: str) -> VerdictRef:
    return VerdictRef(uid, dt.datetime(2017, 5, 1, hour), verdict, KEY)


def test_evidence_is_the_last_working_before_the_first_failing_inside_and_the_first_working_after() -> (
    None
):
    refs = [_ref("a", 1, "ok"), _ref("b", 2, "ok"), _ref("c", 3, "blocked"), _ref("d", 4, "inconclusive"),
            _ref("e", 5, "throttled"), _ref("f", 6, "blocked"), _ref("g", 7, "ok"), _ref("h", 8, "ok")]  # fmt: skip
    got = select(
        reversed(refs), dt.datetime(2017, 5, 1, 3), dt.datetime(2017, 5, 1, 7), inside_max=2
    )
    assert got["last_working_before"] == {"measurement_uid": "b", "time": "2017-05-01 02:00:00"}
    assert got["first_failing"]["measurement_uid"] == "c"
    assert got["inside"] == ["c", "e"] and got["inside_count"] == 3
    assert got["first_working_after"]["measurement_uid"] == "g"
    ongoing = select(refs, dt.datetime(2017, 5, 1, 3), None)
    assert ongoing["first_working_after"] is None and ongoing["inside_count"] == 3


def test_detect_asks_the_engine_for_each_event_window_once() -> None:
    history = rows(Spec(), 200, step(100, 150))
    asked: list[list[tuple[SeriesKey, dt.datetime, dt.datetime]]] = []

    def source(windows: list[tuple[SeriesKey, dt.datetime, dt.datetime]]) -> list[VerdictRef]:
        asked.append(windows)
        hours = [99, 100, 120, 149, 150, 151]
        verdicts = ["ok", "blocked", "blocked", "blocked", "ok", "ok"]
        base = dt.datetime.fromisoformat(at(0))
        return [
            VerdictRef(f"u{h}", base + dt.timedelta(hours=h), v, KEY)
            for h, v in zip(hours, verdicts, strict=True)
        ]

    ev = network(detect(history, PARAMS, None, None, evidence=source).events)[0]
    assert len(asked) == 1 and len(asked[0]) == 1
    got = json.loads(ev["evidence"])
    assert got["last_working_before"]["measurement_uid"] == "u99"
    assert (
        got["inside"] == ["u100", "u120", "u149"]
        and got["first_working_after"]["measurement_uid"] == "u150"
    )

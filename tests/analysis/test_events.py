"""The event detector: onsets and ends where they were injected, patterns, online = batch, no false alarms."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from msgwatch.analysis.events.detect import DETECTOR_VERSION, DetectorParams, detect
from msgwatch.analysis.events.detector import Series
from msgwatch.analysis.events.series import bucket_number, to_time
from msgwatch.analysis.schema import EVENT_COLUMNS, names

from .events_data import Spec, at, episodic, network, rows, step

PARAMS = DetectorParams()


def _one(events: list[dict[str, Any]]) -> dict[str, Any]:
    found = network(events)
    assert len(found) == 1, [(e["start"], e["end"]) for e in found]
    return found[0]


def _near(text: str | None, bucket: int) -> bool:
    return text in {at(bucket - 1), at(bucket), at(bucket + 1)}


def test_a_step_event_is_found_with_its_start_and_end_within_a_bucket() -> None:
    ev = _one(detect(rows(Spec(), 200, step(100, 140)), PARAMS, None, None).events)
    assert _near(ev["start"], 100) and _near(ev["end"], 140)
    assert ev["start_after"] < ev["start"] and ev["end_before"] < ev["end"]
    assert ev["pattern"] == "continuous" and not ev["ongoing"]
    assert (ev["verdict"], ev["mechanism"]) == ("blocked", "udp.dpi_call")
    assert ev["failing_share"] > 0.9 and ev["measurements"] >= 6 * 38
    assert set(ev) == set(names(EVENT_COLUMNS)) and ev["detector_version"] == DETECTOR_VERSION


def test_a_partial_block_on_a_busy_series_is_found_too() -> None:
    ev = _one(
        detect(rows(Spec(per_bucket=10), 200, step(100, 160, 0.5)), PARAMS, None, None).events
    )
    assert _near(ev["start"], 100) and _near(ev["end"], 160)
    assert 0.35 < ev["failing_share"] < 0.75


def test_an_event_still_failing_at_the_end_is_ongoing() -> None:
    ev = _one(detect(rows(Spec(), 150, step(100, 200)), PARAMS, None, None).events)
    assert ev["ongoing"] and ev["end"] is None and _near(ev["start"], 100)


def test_blocking_that_comes_and_goes_is_one_episodic_event() -> None:
    ev = _one(detect(rows(Spec(), 300, episodic(100, 200, 4, 4)), PARAMS, None, None).events)
    assert ev["pattern"] == "episodic"
    assert _near(ev["start"], 100) and _near(ev["end"], 200)
    assert 0.3 < ev["failing_share"] < 0.7


def test_episodic_then_continuous_closes_one_event_and_opens_the_next() -> None:
    def level(b: int) -> float:
        return episodic(60, 120, 3, 3)(b) if b < 120 else step(120, 170)(b)

    first, second = network(detect(rows(Spec(), 250, level), PARAMS, None, None).events)
    assert first["pattern"] == "episodic" and second["pattern"] == "continuous"
    assert (
        _near(first["start"], 60)
        and first["end"] == second["start"]
        and _near(second["start"], 120)
    )
    assert _near(second["end"], 170)


def _blocked_during(*spans: tuple[int, int]) -> Callable[[int], float]:
    return lambda b: 1.0 if any(start <= b < end for start, end in spans) else 0.0


def test_blocking_that_pauses_for_two_days_is_one_episodic_event() -> None:
    """A pause shorter than ``merge_gap`` (72 buckets since detector 1.3.0; 1.2.0 announced
    this pause's two halves as two continuous events) reopens the event."""
    for seed in (1, 2, 3):
        found = detect(rows(Spec(), 300, _blocked_during((100, 130), (178, 210)), seed), PARAMS,
                       None, None).events  # fmt: skip
        ev = _one(found)
        assert ev["pattern"] == "episodic", seed
        assert _near(ev["start"], 100) and _near(ev["end"], 210), (seed, ev["start"], ev["end"])


def test_blocking_that_pauses_longer_than_the_merge_gap_is_two_events() -> None:
    for seed in (1, 2, 3):
        level = _blocked_during((100, 130), (230, 260))
        first, second = network(detect(rows(Spec(), 320, level, seed), PARAMS, None, None).events)
        assert (first["pattern"], second["pattern"]) == ("continuous", "continuous"), seed
        assert _near(first["end"], 130) and _near(second["start"], 230), seed


def test_a_short_full_block_after_an_episodic_phase_does_not_split_the_event() -> None:
    """Blocked spells that run together for 16 buckets (under ``split_run``, 24 since 1.3.0; 1.2.0
    split here) are still the episodic event, not a new continuous one."""

    def level(b: int) -> float:
        return episodic(60, 120, 3, 3)(b) if b < 120 else float(b < 136)

    for seed in (1, 2, 3):
        ev = _one(detect(rows(Spec(), 250, level, seed), PARAMS, None, None).events)
        assert ev["pattern"] == "episodic" and _near(ev["start"], 60), seed
        assert _near(ev["end"], 136), (seed, ev["end"])


def test_a_noisy_quiet_series_with_a_high_background_raises_nothing() -> None:
    for seed in (1, 2, 3):
        quiet = rows(Spec(background=0.15, per_bucket=5), 2000, lambda b: 0.0, seed=seed)
        assert detect(quiet, PARAMS, None, None).events == []


def test_a_gap_is_no_evidence_and_the_event_still_ends() -> None:
    history = [r for r in rows(Spec(), 260, step(100, 200)) if not 120 <= _bucket(r) < 180]
    ev = _one(detect(history, PARAMS, None, None).events)
    assert _near(ev["start"], 100) and _near(ev["end"], 200)
    assert ev["buckets"] == 40


def _bucket(row: dict[str, Any]) -> int:
    return next(b for b in range(2000) if at(b) == row["bucket"])


def _history() -> list[dict[str, Any]]:
    out = rows(Spec(), 400, step(100, 150))
    out += rows(Spec(asn="AS29049", per_bucket=3), 400, episodic(120, 260, 5, 4), seed=2)
    out += rows(Spec(function="text", mechanism="tcp.reset"), 400, step(300, 420), seed=3)
    return out


def test_feeding_the_history_in_pieces_gives_the_same_events_as_once() -> None:
    history = _history()
    batch = detect(history, PARAMS, None, None)
    rng = random.Random(11)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, 400), 6))
        state: dict[str, Any] | None = None
        for cut in cuts:
            seen = [r for r in history if r["bucket"] < at(cut + 2)]
            piece = detect(seen, PARAMS, state, _time(cut))
            state = json.loads(json.dumps(piece.state))  # it is JSON, and survives the trip
        final = detect(history, PARAMS, state, None)
        assert final.events == batch.events


def _time(bucket: int) -> dt.datetime:
    return dt.datetime.fromisoformat(at(bucket))


def test_open_buckets_are_evaluated_but_not_committed() -> None:
    history = rows(Spec(), 110, step(100, 200))
    early = detect(history, PARAMS, None, _time(100))
    assert _one(early.events)["ongoing"]  # the onset is seen in the open buckets
    assert early.state["horizon"] == bucket_number(_time(100), 3600)
    committed = Series.load(PARAMS, early.state["series"][0][4])
    assert committed.ev is None and committed.last == bucket_number(_time(99), 3600)


def test_a_state_of_another_version_or_bucket_size_is_a_rebuild() -> None:
    history = _history()
    batch = detect(history, PARAMS, None, None)
    for bad in (
        {**batch.state, "detector_version": "0"},
        {**batch.state, "bucket_seconds": 600},
        {},
    ):
        assert detect(history, PARAMS, bad, None).events == batch.events


def test_the_same_rows_in_any_order_give_the_same_events() -> None:
    history = _history()
    first = detect(history, PARAMS, None, None)
    shuffled = list(history)
    random.Random(3).shuffle(shuffled)
    again = detect(shuffled, PARAMS, None, None)
    assert again.events == first.events and again.state == first.state
    assert len({e["event_id"] for e in first.events}) == len(first.events)


def test_the_state_is_bounded() -> None:
    params = DetectorParams(max_closed=2)
    det = Series(params)
    for i in range(10):
        for b in range(i * 100, i * 100 + 100):
            det.feed(params, b, 6, 6 if b % 100 < 20 else 0)
        det.trim(params)
    assert len(det.closed) == 2
    assert len(json.dumps(det.dump())) < 2000


@pytest.mark.parametrize("after", [12, 30])
def test_a_short_sparse_block_ends_where_it_works_again(after: int) -> None:
    """One measurement an hour: 64 working, 6 blocked, then ``after`` working. The event's own
    failing rate counts the onset run's failures (4 of the 6 came before the onset fired), so the
    working hours end it at the first of them; counting only the 2 after the onset (detector 1.5),
    30 working hours left it ongoing."""
    params = DetectorParams()
    det = Series(params)
    history = [0] * 64 + [1] * 6 + [0] * after
    for b, failing in enumerate(history):
        det.feed(params, b, 1, failing)
    (event,) = det.events(params)
    start, _, end, end_before, pattern = event[:5]
    assert (start, end, end_before, pattern) == (64, 70, 69, "continuous")


def test_clean_params_find_the_lab_timeline_in_a_handful_of_buckets() -> None:
    params = DetectorParams.clean(5)
    history = [*(0, 0, 0), *(1, 0, 1, 0, 1), *(1, 1, 1), *(0, 0, 0)]  # open, games, blocked, lifted
    det = Series(params)
    for b, failing in enumerate(history):
        det.feed(params, b, 2, 2 * failing)
    games, blocked = det.events(params)
    assert games[4] == "episodic" and 3 <= games[0] <= 4 and 7 <= games[2] <= 9
    assert blocked[4] == "continuous" and 7 <= blocked[0] <= 9 and 10 <= blocked[2] <= 12


def test_an_episodic_onset_whose_first_failure_was_learned_starts_at_that_failure() -> None:
    """The lab under load: the first blocked run gives one failing measurement (the other was
    inconclusive), too little to open an event; a working run then returns the sums to zero, and
    the second blocked run opens it. With ``backfill`` the start is the first failure, not the
    second; without it the start is where the CUSUM run began."""
    history = [(2, 0)] * 3 + [(1, 1), (2, 0), (2, 2), (2, 0), (2, 2)]  # (total, failing)
    for params, start in (
        (DetectorParams.clean(5), 3),
        (dataclasses.replace(DetectorParams.clean(5), backfill=0), 5),
    ):
        det = Series(params)
        for b, (total, failing) in enumerate(history):
            det.feed(params, b, total, failing)
        found = det.events(params)
        assert found and found[0][0] == start, (params.backfill, found)


def test_one_bucket_of_background_failures_on_a_noisy_series_opens_no_event() -> None:
    """Issue 11 at a year: half the unmatched events were the full-blocking sum passing 10 on one
    burst of background failures (six of six in one bucket of a 12 % series: 11.2). That sum now
    needs 13 (seven failures without a working one); a real block is still found in its second
    bucket."""
    pattern = (1, 1, 0, 1, 0)  # failing of 5 per bucket: 12 %

    def run(params: DetectorParams, blocked: range) -> tuple[list[list[Any]], list[int]]:
        det = Series(params)
        opened: list[int] = []
        for b in range(1000):
            if b == 600:
                det.feed(params, b, 6, 6)  # the burst
            else:
                det.feed(params, b, 5, 5 if b in blocked else pattern[b % 5])
            if det.ev is not None and not opened:
                opened.append(b)
        return det.events(params), opened

    before = dataclasses.replace(PARAMS, threshold=10.0, threshold_high=10.0)
    assert [e[0] for e in run(before, range(0))[0]] == [600]  # the false event this used to give
    assert run(PARAMS, range(0))[0] == []
    found, opened = run(PARAMS, range(800, 810))
    assert [(e[0], e[2]) for e in found] == [(800, 810)] and opened == [801]


# Detector 1.3.0's background and full-blocking threshold, to show what 1.4.0 changed.
PARAMS_1_3 = dataclasses.replace(
    PARAMS, forget=0.99, warmup_partial=0, margin_sd=1.0, threshold_high=13.0
)


def _opened(params: DetectorParams, counts: list[tuple[int, int]]) -> tuple[list[Any], list[int]]:
    """The events of ``counts`` ((total, failing) per bucket) and the bucket the first opened."""
    det = Series(params)
    opened: list[int] = []
    for b, (total, failing) in enumerate(counts):
        det.feed(params, b, total, failing)
        if det.ev is not None and not opened:
            opened.append(b)
    return det.events(params), opened


def test_a_young_series_whose_first_measurements_rarely_failed_raises_nothing() -> None:
    """A 12 % series whose first 80 measurements all worked: 1.3.0 judged onsets after 60
    measurements against a background learned as about 2 %, and the series' ordinary failures
    opened an event on its partial-blocking sum. 1.4.0 judges that sum after 200 measurements;
    a full block is still judged after 60, and found in its second bucket."""
    for seed in (1, 7, 9, 11):
        rng = random.Random(seed)
        counts = [(5, 0)] * 16 + [
            (5, sum(rng.random() < 0.12 for _ in range(5))) for _ in range(300)
        ]
        assert _opened(PARAMS_1_3, counts)[0], seed  # the false event 1.3.0 gave
        assert _opened(PARAMS, counts)[0] == [], seed
        counts[20:40] = [(5, 5)] * 20
        found, opened = _opened(PARAMS, counts)
        assert [(e[0], e[2]) for e in found] == [(20, 40)] and opened == [21], seed


def test_a_two_bucket_burst_of_seven_background_failures_opens_no_event() -> None:
    """Seven failures of seven over two buckets of a 12 % series (the full-blocking sum: 14.2)
    opened an event under 1.3.0's 13; 1.4.0's 15 wants eight, 1.5.0's 16.5 nine. A real block is
    still found in its second bucket."""
    pattern = (1, 1, 0, 1, 0)  # failing of 5 per bucket: 12 %
    for burst in ([(4, 4), (3, 3)], [(3, 3), (4, 4)], [(5, 5), (2, 2)]):
        counts = [(5, pattern[b % 5]) for b in range(1000)]
        counts[600 : 600 + len(burst)] = burst
        assert [e[0] for e in _opened(PARAMS_1_3, counts)[0]] == [600], burst
        assert _opened(PARAMS, counts)[0] == [], burst
    counts = [(5, pattern[b % 5]) for b in range(1000)]
    counts[800:810] = [(5, 5)] * 10
    found, opened = _opened(PARAMS, counts)
    assert [(e[0], e[2]) for e in found] == [(800, 810)] and opened == [801]


# Detector 1.4.0's onset thresholds, to show what 1.5.0 changed.
PARAMS_1_4 = dataclasses.replace(PARAMS, threshold=12.0, threshold_high=15.0)


def test_a_chance_run_of_ordinary_failures_opens_no_event_and_a_partial_block_still_does() -> None:
    """19 failures in 44 measurements over seven hours of an 11 % series (a binomial tail of about
    10⁻⁷, as chance makes a few times in a year of 4000 series) opened an event under 1.4.0's
    partial-blocking threshold of 12; 1.5.0's 14 opens none. A block of 45 % of the measurements
    (two of three fail) is still found in its fourth bucket, and ten hours of it are one event."""
    pattern = (1, 0, 1, 0, 1, 1, 0, 1, 1)  # failing of 6 per bucket: 6 of 54, 11 %
    counts = [(6, pattern[b % 9]) for b in range(2000)]
    counts[1500:1507] = [(6, 4), (7, 2), (6, 3), (6, 2), (7, 3), (6, 2), (6, 3)]
    assert sum(n for n, _ in counts[1500:1507]) == 44
    assert sum(f for _, f in counts[1500:1507]) == 19
    assert [e[0] for e in _opened(PARAMS_1_4, counts)[0]] == [1500]  # the false event 1.4 gave
    assert _opened(PARAMS, counts)[0] == []
    counts[1800:1810] = [(6, 4)] * 10
    found, opened = _opened(PARAMS, counts)
    assert [(e[0], e[2], e[4]) for e in found] == [(1800, 1810, "continuous")]
    assert opened == [1803]


def test_a_sparse_series_is_judged_against_a_background_close_to_its_rate() -> None:
    """The background used is the estimate plus a margin of its uncertainty. With 1.3.0's memory
    of about 100 buckets a series of one measurement an hour failing 10 % was judged against
    12.8 %, and a partial block had to fail that much more; 1.4.0 remembers about 500 buckets
    (1.5 standard deviations of a tighter estimate: 12.0 %)."""
    counts = [(1, int(b % 10 == 0)) for b in range(3000)]
    det_1_3, det = Series(PARAMS_1_3), Series(PARAMS)
    for b, (total, failing) in enumerate(counts):
        det_1_3.feed(PARAMS_1_3, b, total, failing)
        det.feed(PARAMS, b, total, failing)
    assert det_1_3.background(PARAMS_1_3) > 0.125
    assert 0.1 < det.background(PARAMS) < 0.121


def test_one_country_and_service_at_a_time_gives_the_events_of_all_at_once() -> None:
    """With the rows ordered by (probe_cc, service) and their newest bucket given, the detector
    holds one country and service's series at a time (memory bounded by the largest, not the
    lake) and finds the same events, state and evidence windows as with every row held; rows
    not so ordered are refused (a series would be fed twice)."""
    specs = [
        (Spec(asn="AS1"), step(100, 160)),
        (Spec(asn="AS2", function="video"), step(105, 150)),
        (Spec(asn="AS2"), lambda b: 0.0),  # the control of AS1's voice: another network
        (Spec(asn="AS1", service="skype"), episodic(200, 300, 3, 3)),
        (Spec(asn="AS9", cc="RU", background=0.1), step(250, 400)),
        (Spec(asn="AS8", cc="RU"), lambda b: 0.0),
    ]
    every = [r for n, (spec, blocked) in enumerate(specs) for r in rows(spec, 400, blocked, seed=n)]
    params = DetectorParams()
    asked: list[list[Any]] = []

    def evidence(windows: list[Any]) -> list[Any]:
        asked.append(sorted(windows))
        return []

    whole = detect(every, params, None, None, evidence)
    ordered = sorted(every, key=lambda r: (r["probe_cc"], r["service"]))
    newest = max(bucket_number(to_time(r["bucket"]), 3600) for r in every)
    scoped = detect(ordered, params, None, None, evidence, by_scope=True, newest=newest)
    assert scoped.events == whole.events and scoped.state == whole.state
    assert asked[0] == asked[1] and len(network(whole.events)) >= 4
    voice = [
        e for e in network(whole.events) if (e["probe_asn"], e["service"]) == ("AS1", "whatsapp")
    ]
    assert '"other_network_worked": true' in voice[0]["controls"]
    shuffled = ordered[len(ordered) // 2 :] + ordered[: len(ordered) // 2]
    with pytest.raises(ValueError, match="not ordered"):
        detect(shuffled, params, None, None, by_scope=True, newest=newest)

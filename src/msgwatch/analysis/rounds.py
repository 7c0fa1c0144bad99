"""The rounds of a call's replays as statistics: pure functions of the replay records.

A replay record is one entry of ``msgwatch_replays`` (written by :mod:`msgwatch.steps.replay` and
:mod:`msgwatch.steps.downstream`): ``sent_packets``, ``received_packets``, ``intervals`` (the
per-interval counts), ``round``, ``attempt`` and the probe's own account of its lag (``probe``).
This module reads those records and nothing else: no sockets, no rules, no verdicts. It is shared by
the probe, which decides from it whether to run a confirmation round
(``msgwatch.probe.calls.unclear``), and by the call judge (``msgwatch.analysis.verdicts.calls``),
which turns its comparisons into facts. It imports only :mod:`msgwatch.analysis.stats`.

Rules:

- A replay that got less than half of its datagrams back failed (:data:`LOST`), for the probe
  (the replay's chain failed) as for the judge (its state is ``fail``).
- All rounds count: the originals of every round are pooled, and so are the controls
  (:func:`pooled`); :func:`compare_rounds` then checks the rounds one by one, and can only take a
  difference back (noisy controls, rounds that disagree, the probe's own stalls).
- The probe's lag is the probe's, never the network's: a datagram the probe dropped itself arrived
  (:func:`credit`); a round whose listening the deadline cut is left out (:func:`probe_trouble`,
  :func:`clean`); a difference in throughput alone is not decided when the probe's timing is in the
  throughput (:func:`probe_stalled`).
- So is the test helper's (its flow's view, ``helper.stalls``): a replay during which it stalled
  for the probe's listening grace or more may have been echoed after the probe stopped listening,
  and its round is left out too (:func:`helper_stalled`, ``clean(..., helper_stalled)``); a
  shorter stall puts the helper's timing into the throughput, as the probe's does
  (:func:`probe_stalled`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from msgwatch.analysis.stats import ReplayStats, compare_replays, glasnost_consistent, loses_more

Record = dict[str, Any]
State = Literal["pass", "fail", "none"]
LOST = 0.5
"""A replay that got less than half of its datagrams back failed."""


def count(record: Record, key: str) -> int:
    """The record's count ``key`` (0 when it is missing, not an integer or not positive)."""
    value = record.get(key)
    return value if isinstance(value, int) and value > 0 else 0


def credit(record: Record) -> int:
    """Datagrams that reached the probe and that the probe itself dropped (the kernel's receive
    buffer, its own queue: ``probe.socket_drops``, ``probe.queue_drops``): not the path's loss."""
    probe = record.get("probe")
    if not isinstance(probe, dict):
        return 0
    return sum(
        v
        for k in ("socket_drops", "queue_drops")
        if isinstance(v := probe.get(k), int) and not isinstance(v, bool) and v > 0
    )


LATE_SHARE = 0.10
"""A replay of which at least this share of datagrams left late (``probe.late_sends``)..."""
LATE_LIMIT = 0.25
"""...or one of them this many seconds late, was not sent as scheduled: the probe's doing."""
STALL_LIMIT = 0.2
"""A stall of the probe's loop this long (two counting intervals) during a replay..."""
STALL_SHARE = 0.10
"""...or stalls adding up to this share of its span put the probe's timing into its per-interval
throughput."""


def _probe(record: Record) -> Record:
    probe = record.get("probe")
    return probe if isinstance(probe, dict) else {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def probe_trouble(record: Record) -> str | None:
    """Why a replay's counts are the probe's own: ``cut`` (the deadline ended the listening
    before the grace after its last datagram, which the probe's lag sent late); ``late`` (some of
    its datagrams came back after the listening, in the late window a stalled probe opens: the
    machine's timing, ``steps.replay``; unless the helper says it stalled then, its own doing:
    :func:`helper_stalled`); None when they are the path's. The counts survive a late loop
    otherwise: what arrived waits in the kernel, and what the kernel dropped is counted
    (:func:`credit`)."""
    probe = _probe(record)
    if probe.get("cut") is True:
        return "cut"
    late = _number(probe.get("late_echoes")) >= 1
    return "late" if late and not helper_stalled(record) else None


def late_trouble(records: Sequence[Record]) -> Callable[[Record], object]:
    """:func:`probe_trouble`, and when one of ``records`` (a function's echo replays) is ``late``
    (the machine delivered echoes after the listening), also every replay that came back short
    without the helper's word on a stall of its own: at that time, on that machine, a missing
    echo may be one that came later still, past the late window (seen in the lab under stolen
    CPU: rounds that lost everything next to rounds whose echoes all came late, the helper having
    echoed both in full)."""
    if not any(probe_trouble(r) == "late" for r in records):
        return probe_trouble

    def trouble(r: Record) -> str | None:
        short = count(r, "received_packets") + credit(r) < count(r, "sent_packets")
        return probe_trouble(r) or ("late" if short and not helper_stalled(r) else None)

    return trouble


def probe_stalled(record: Record) -> bool:
    """Whether the probe's timing is in the replay's per-interval throughput: its loop stalled
    during the replay (echoes read in a burst after the stall), its datagrams left late
    (bunched: at least 10 % more than 50 ms late, or one 250 ms late), or it dropped some
    itself (they count as arrived, but in no interval). The test helper's stalls count the same
    way (its echoes left in a burst after them: the flow's ``stalls``)."""
    probe = _probe(record)
    span = max(0.0, _number(record.get("t")) - _number(record.get("t0")))
    stalled = _number(probe.get("stalled"))
    sent = count(record, "sent_packets")
    late = _number(probe.get("late_sends"))
    helper = _helper_stalls(record)
    return (
        _number(helper.get("longest")) >= STALL_LIMIT
        or (span > 0 and _number(helper.get("seconds")) >= STALL_SHARE * span)
        or credit(record) > 0
        or _number(probe.get("loop_lag")) >= STALL_LIMIT
        or (span > 0 and stalled >= STALL_SHARE * span)
        or (sent > 0 and late >= LATE_SHARE * sent)
        or _number(probe.get("send_lag")) >= LATE_LIMIT
    )


HELPER_LATE = 0.5
"""A stall of the test helper this long (the probe's listening grace after its last datagram,
``steps.replay.GRACE``) may have pushed its echoes past the end of the probe's listening: the
replay's round is left out (:func:`helper_stalled`). A shorter one only delays echoes within the
listening: the counts stand, the per-interval timing does not (:func:`probe_stalled`)."""


def _helper_stalls(record: Record) -> dict[str, Any]:
    helper = record.get("helper")
    stalls = helper.get("stalls") if isinstance(helper, dict) else None
    return stalls if isinstance(stalls, dict) else {}


def helper_stalled(record: Record) -> bool:
    """Whether the test helper says its own loop stalled during the replay's flow for
    :data:`HELPER_LATE` or more (the flow's ``stalls``, :mod:`msgwatch.helper.stalls`): it may
    have echoed (or, for a downstream replay, sent) what waited out the stall after the probe
    stopped listening. Its timing, not the path's."""
    return _number(_helper_stalls(record).get("longest")) >= HELPER_LATE


def clean(
    originals: Sequence[Record],
    controls: Sequence[Record],
    trouble: Callable[[Record], object] = probe_trouble,
) -> tuple[list[Record], list[Record], int]:
    """The originals and controls without the rounds that ``trouble`` spoiled (the probe's lag,
    :func:`probe_trouble`, by default; the helper's, :func:`helper_stalled`) in either replay of
    the round, and how many records were left out."""
    spoiled: set[int] = set()
    for o, c in round_pairs(originals, controls):
        if trouble(o) or trouble(c):
            spoiled |= {id(o), id(c)}
    spoiled |= {id(r) for r in (*originals, *controls) if trouble(r)}
    keep_o = [r for r in originals if id(r) not in spoiled]
    keep_c = [r for r in controls if id(r) not in spoiled]
    return keep_o, keep_c, len(originals) + len(controls) - len(keep_o) - len(keep_c)


def clean_all(
    originals: Sequence[Record],
    controls: Sequence[Record],
    trouble: Callable[[Record], object] = probe_trouble,
) -> tuple[list[Record], list[Record], int, int]:
    """:func:`clean` of the probe's lag (``trouble``), then of the helper's stalls: the originals
    and controls left, and how many records each left out."""
    originals, controls, spoiled = clean(originals, controls, trouble)
    originals, controls, stalled = clean(originals, controls, helper_stalled)
    return originals, controls, spoiled, stalled


def intervals(record: Record) -> list[Record]:
    """The record's per-interval counts (``intervals``)."""
    return [r for r in record.get("intervals") or [] if isinstance(r, dict)]


def throughput(record: Record) -> list[float]:
    """Bits per second received in each of the record's intervals (as the probe counted)."""
    rows = intervals(record)
    width = 0.1
    if len(rows) > 1:
        width = float(rows[1].get("t", 0.1)) - float(rows[0].get("t", 0.0)) or 0.1
    return [int(r.get("rx_bytes") or 0) * 8 / width for r in rows]


def total_sent(records: Sequence[Record]) -> int:
    """Datagrams the probe sent, all records together."""
    return sum(count(r, "sent_packets") for r in records)


def total_received(records: Sequence[Record]) -> int:
    """Datagrams that arrived at the probe: those it counted and those it dropped itself."""
    return sum(
        min(count(r, "received_packets") + credit(r), count(r, "sent_packets")) for r in records
    )


def delivered(records: Sequence[Record]) -> float:
    """The share of the datagrams sent that arrived (:func:`total_received`), 0 when none sent."""
    sent = total_sent(records)
    return total_received(records) / sent if sent else 0.0


def pooled(records: Sequence[Record]) -> ReplayStats:
    """The rounds of one kind of replay as one sample."""
    return ReplayStats(
        throughput=[x for r in records for x in throughput(r)],
        sent=total_sent(records),
        received=total_received(records),
    )


def state(records: Sequence[Record]) -> State:
    """``pass`` when at most :data:`LOST` of the datagrams were lost, ``fail`` otherwise, ``none``
    without records."""
    if not records:
        return "none"
    sent = total_sent(records)
    return "pass" if sent and (sent - total_received(records)) / sent <= LOST else "fail"


def round_pairs(
    originals: Sequence[Record], controls: Sequence[Record]
) -> list[tuple[Record, Record]]:
    """(original, control) of each round; records without a round pair up in order."""

    def key(r: Record, i: int) -> tuple[Any, ...]:
        return (r.get("attempt"), r["round"]) if r.get("round") is not None else ("order", i)

    mine = {key(r, i): r for i, r in enumerate(controls)}
    return [(o, mine[k]) for i, o in enumerate(originals) if (k := key(o, i)) in mine]


ROUND_MARGIN = 0.10
"""A round counts for a side that fared worse by at least this much: 10 points of delivered share
(the loss test's minimum difference), or a tenth of the mean throughput."""


def compare_rounds(originals: Sequence[Record], controls: Sequence[Record]) -> tuple[str, str]:
    """(comparison, reason) of the originals against the controls, every round counted.

    ``comparison`` is ``same``, ``original_worse``, ``control_worse`` or ``inconclusive``;
    ``reason`` is :func:`compare_replays`'s, or ``noisy_controls`` (the controls' delivered shares
    or mean throughputs spread more than Glasnost's 20 % over the rounds) or ``rounds_disagree``
    (the pooled sample says one side fared worse, but that side was not worse, by
    :data:`ROUND_MARGIN`, in a majority of the rounds), or ``probe_overloaded`` (a difference in
    throughput alone, while the probe's loop stalled during one of the replays:
    :func:`probe_stalled`; a difference in throughput and loss then counts as one in ``loss``).
    With one round (or rounds that do not pair) only the pooled comparison counts."""
    stats_o, stats_c = pooled(originals), pooled(controls)
    if not stats_o.sent or not stats_c.sent:
        return "none", "none"
    decision = compare_replays(stats_o, stats_c)
    which, reason = decision.which, decision.reason
    if decision.verdict != "differentiated" or which is None:
        return decision.verdict, reason
    stalled = any(probe_stalled(r) for r in (*originals, *controls))
    if stalled and reason == "throughput":
        return "inconclusive", "probe_overloaded"
    if stalled and reason == "throughput_and_loss":
        reason = "loss"  # the counts stand; the per-interval throughput is the probe's timing
    pairs = round_pairs(originals, controls)
    if len(pairs) < 2:
        return which, reason
    shares = [delivered([c]) for _, c in pairs]
    means = [_mean(throughput(c)) for _, c in pairs]
    if not (glasnost_consistent(shares) and (stalled or glasnost_consistent(means))):
        return "inconclusive", "noisy_controls"
    by_loss = reason in ("loss", "throughput_and_loss", "original_silent")

    def worse(first: Record, second: Record) -> bool:
        # By a margin that matters (the loss test's 10 points; a tenth of the throughput): a
        # round in which the two fared alike does not count for either side.
        if by_loss:
            return delivered([first]) <= delivered([second]) - ROUND_MARGIN
        return _mean(throughput(first)) <= _mean(throughput(second)) * (1 - ROUND_MARGIN)

    if which == "original_worse":
        agree = sum(1 for o, c in pairs if worse(o, c))
    else:
        agree = sum(1 for o, c in pairs if worse(c, o))
    if agree * 2 <= len(pairs):
        return "inconclusive", "rounds_disagree"
    return which, reason


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def split(originals: Sequence[Record], controls: Sequence[Record]) -> str:
    """Whether the originals lost more than the controls in a way that counts: ``significant``
    when the loss test says so (:func:`msgwatch.analysis.stats.loses_more`, over all rounds, the
    probe's own drops counted as arrived) and the original fared worse in more than half of the
    rounds that pair; ``unclear`` otherwise; ``none`` without both. "Original fails, control
    passes" decides only when it is ``significant``: 45 % against 51 % delivered is not."""
    sent_o, sent_c = total_sent(originals), total_sent(controls)
    if not sent_o or not sent_c:
        return "none"
    worse, _ = loses_more(sent_o - total_received(originals), sent_o,
                          sent_c - total_received(controls), sent_c)  # fmt: skip
    pairs = round_pairs(originals, controls)
    agree = sum(1 for o, c in pairs if delivered([o]) <= delivered([c]) - ROUND_MARGIN)
    if len(pairs) >= 2 and agree * 2 <= len(pairs):
        return "unclear"
    return "significant" if worse else "unclear"

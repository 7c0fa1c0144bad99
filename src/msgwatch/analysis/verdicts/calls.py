"""Judging the call path from its replays (rules in ``calls.toml``, method in docs/method/calls.md).

Reads only the measurement: the replay targets of a function (roles ``replay_original``,
``replay_control``, ``replay_plain``, ``replay_neutral``, ``replay_domestic``), their records in
``msgwatch_replays``, the STUN call path (role ``call_path``), the catalogue's relay endpoints and
the helper's view of them (role ``helper_view``).

The rounds are compared as statistics by :mod:`msgwatch.analysis.rounds` (all rounds pooled, then
checked one by one; the probe's own lag left out); this module turns those comparisons into facts.
"The original fails, the control passes" decides only when the loss test says so and most rounds
show it (:func:`msgwatch.analysis.rounds.split`). What the probe's lag left out makes the fact
``probe`` ``overloaded``, and the rules say ``inconclusive``, ``probe.overloaded`` where nothing
else decides. The helper's own stalls are left out the same way (the flow's ``stalls``: it echoed
late what waited out the stall) and make the fact ``helper`` ``stalled``: ``inconclusive``,
``helper.stalled`` where nothing else decides.

Where the helper's own counts are in a record (``helper``: what it received from the flow and
sent back), they tell on which way the datagrams were lost: before the helper (``upload``) or after
it echoed them (``download``); and an echo the helper did not send (its own limits) is not taken
for censorship. That last one rests on the helper's word, not on ``tx < rx``: it counts, per flow,
the datagrams it declined to answer and why (``declined``, docs/helper.md). A flow is left out of
both when its counts cannot speak for the path (:func:`_helper_counts`): the helper refused its
source port (the probe's doing), or it echoed less than it received without saying why (a helper
older than ``declined``, or counts that do not add up).

The **downstream** replays (roles ``replay_down_original``, ``replay_down_control``) are sent by the
helper itself towards the probe (``POST /v1/udp/send``): the way down measured with a call of its
own, not with what survived the way up. They count only when the helper says it sent every datagram
it announced (``helper.originated``, :func:`_sent_all`). Their original and control are compared
like the echo pairs (:func:`~msgwatch.analysis.rounds.compare_rounds`, and the STUN-framed
datagrams, :func:`_markers`): ``downstream`` is ``original_lost`` when the original failed and the
control passed, when the original's STUN-framed datagrams died and the control's did not, or when
the original lost significantly more than a control that lost under 10 %, each seen in
:data:`DOWN_MIN_ROUNDS` rounds (``unclear`` with fewer). And a downstream original that lost 10 %
or more says "download" in the direction of the loss, whatever the echoes say (:func:`_direction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgwatch.analysis import rounds as R
from msgwatch.analysis.parse import resolved
from msgwatch.analysis.stats import loses_more
from msgwatch.analysis.verdicts import overload
from msgwatch.analysis.verdicts.call_rules import CallRule, Plain, load_call_rules
from msgwatch.measurement.vocab import DOWN_ROLES

Record = dict[str, Any]


MARKERS_LOST = 0.5
"""At least half of the original's STUN-framed datagrams lost..."""
MARKERS_CONTROL_OK = 0.2
"""...while at most a fifth of the control's datagrams at the same positions were."""


FRAMINGS = (("marked_sent", "marked_received"), ("signature_sent", "signature_received"))
"""The original's datagrams counted apart: STUN-framed (matched by transaction id), and those in
the service's own non-STUN framing (Telegram's reflector header, Viber's, Discord's: by content)."""


def _markers(originals: Sequence[Record], controls: Sequence[Record]) -> str:
    """Whether the original's STUN-framed datagrams, or those in the service's own framing, and
    only they, were dropped: ``lost`` when either kind was; ``unclear`` when the missing ones could
    be datagrams the probe dropped itself (:func:`_framing_lost`); ``none`` when the original has
    neither."""
    if not originals or not controls:
        return "none"
    states = [_framing_lost(originals, controls, sent, got) for sent, got in FRAMINGS]
    for state in ("lost", "unclear", "passed"):
        if state in states:
            return state
    return "none"


def _others(record: Record, sent_key: str, got_key: str) -> tuple[int, int]:
    """(sent, lost) of the record's datagrams other than the ``sent_key`` kind: counted as read,
    without the probe's own drops (the baseline of :func:`_framing_lost`'s loss test is never
    made lower than it was)."""
    sent = max(0, R.count(record, "sent_packets") - R.count(record, sent_key))
    got = max(0, R.count(record, "received_packets") - R.count(record, got_key))
    return sent, sent - min(got, sent)


def _framing_lost(
    originals: Sequence[Record], controls: Sequence[Record], sent_key: str, got_key: str
) -> str:
    """``lost``, ``passed``, ``unclear`` or ``none`` (none sent) for one kind of framing.

    The marked datagrams are looked at in the originals whose other datagrams mostly came back: a
    replay that lost most of everything says nothing of the marked ones in particular. Lost: at
    least half of them, significantly more than the same replays' other datagrams (the loss test,
    :func:`~msgwatch.analysis.stats.loses_more`: a policer or a lossy path that drops a third of
    everything drops 2 of 4 marked ones often enough, and a policed lab path under stolen CPU
    read "blocked udp.dpi_service" so), while a control lost at most a fifth at the same
    positions (otherwise ``passed``: the framing is not what dies).

    The probe's own drops (:func:`~msgwatch.analysis.rounds.credit`) are counts of any datagram,
    not of the marked ones: the marked datagrams are lost only if they would be even were every
    datagram the probe dropped a marked one. When the probe's drops could account for them, the
    rounds in which it dropped nothing decide, if they sent marked datagrams; without such rounds
    it is ``unclear`` (the probe's doing or the path's, nothing tells)."""
    if not sum(R.count(r, sent_key) for r in originals):
        return "none"
    others = {id(o): _others(o, sent_key, got_key) for o in originals}
    usable = [o for o in originals if others[id(o)][1] <= others[id(o)][0] * R.LOST]
    sent = sum(R.count(r, sent_key) for r in usable)
    control_sent = sum(R.count(r, sent_key) for r in controls) or 1
    control_lost = 1 - sum(R.count(r, got_key) for r in controls) / control_sent
    got = sum(R.count(r, got_key) for r in usable)
    if not sent or control_lost > MARKERS_CONTROL_OK or 1 - got / sent < MARKERS_LOST:
        return "passed"
    lost = sent - got - sum(map(R.credit, usable))
    if lost >= sent * MARKERS_LOST:
        base_sent = sum(others[id(o)][0] for o in usable)
        base_lost = sum(others[id(o)][1] for o in usable)
        if base_sent and not loses_more(lost, sent, base_lost, base_sent)[0]:
            return "passed"
        return "lost"
    clean = [(o, c) for o, c in R.round_pairs(originals, controls) if not R.credit(o)]
    if clean and len(clean) < len(originals):  # none of their own drops: lost, passed or none
        state = _framing_lost([o for o, _ in clean], [c for _, c in clean], sent_key, got_key)
        if state != "none":
            return state
    return "unclear"


TRICKLE = 0.02
"""A replay that failed but still delivered at least this share, in most intervals, was policed."""
LOSSY = 0.10
"""Replays that passed but both lost at least this share: calls connect, badly."""


def _steady(records: Sequence[Record]) -> bool:
    """Something came back in at least half of the intervals in which something was sent."""
    busy = [row for r in records for row in R.intervals(r) if int(row.get("tx_packets") or 0) > 0]
    got = [row for row in busy if int(row.get("rx_packets") or 0) > 0]
    return bool(busy) and len(got) >= len(busy) / 2


def _trickle(records: Sequence[Record]) -> bool | None:
    """Whether the records failed but still delivered a steady trickle (a policer): True; False
    when they did not; None when they failed with something through, not steadily, while the
    probe's or the helper's own timing was in their intervals
    (:func:`~msgwatch.analysis.rounds.probe_stalled`): echoes read or sent in bursts after a
    stall leave intervals empty that a policer filled, so steady and not cannot be told."""
    if not TRICKLE <= R.delivered(records) < 1 - R.LOST:
        return False
    if _steady(records):
        return True
    return None if any(R.probe_stalled(r) for r in records) else False


def _delivery(originals: Sequence[Record], controls: Sequence[Record]) -> str:
    """How both kinds were delivered: a steady ``trickle`` (both failed, but a policer let a
    share through in most intervals), ``trickle_unclear`` (both failed with a share through, and
    the stalls of the probe or the helper hide whether it was steady: :func:`_trickle`),
    ``lossy`` (both passed, both lost >= 10 %, and in most rounds both did), ``lossy_unclear``
    (so pooled, but not in most rounds: a bad moment of the machine's counts once, a lossy path
    in every round), ``full``."""
    if not originals or not controls:
        return "none"
    trickles = (_trickle(originals), _trickle(controls))
    if all(trickles):
        return "trickle"
    if None in trickles and False not in trickles:
        return "trickle_unclear"
    shares = (R.delivered(originals), R.delivered(controls))
    if all(1 - R.LOST <= x <= 1 - LOSSY for x in shares):
        pairs = R.round_pairs(originals, controls)
        lossy = sum(1 for o, c in pairs if max(R.delivered([o]), R.delivered([c])) <= 1 - LOSSY)
        return "lossy_unclear" if len(pairs) >= 2 and lossy * 2 <= len(pairs) else "lossy"
    return "full"


def _plain(records: Sequence[Record]) -> Plain:
    """The plain echoes on the call ports, each port ``pass``, ``fail``, ``policed`` (it failed
    but a steady trickle got through: a policer, not a drop) or ``unclear`` (a trickle that the
    probe's or the helper's stalls hide: :func:`_trickle`). Together: ``unclear`` when a port
    is; ``pass`` or ``fail`` on every port, ``policed`` when none failed and some were policed,
    ``partial`` when some failed and others did not; ``none`` without plain echoes."""
    ports: dict[Any, list[Record]] = {}
    for r in records:
        ports.setdefault(r.get("port"), []).append(r)
    states: set[Plain] = set()
    for group in ports.values():
        state: Plain = R.state(group)
        if state == "fail":
            trickle = _trickle(group)
            state = "policed" if trickle else "unclear" if trickle is None else "fail"
        states.add(state)
    if not states:
        return "none"
    if "unclear" in states:
        return "unclear"
    if len(states) == 1:
        return "pass" if states == {"pass"} else "fail" if states == {"fail"} else "policed"
    return "partial" if "fail" in states else "policed"


ECHO_SHORT = 0.10
"""The helper declined to answer at least this share of what it received, for its own limits: the
missing echoes are not the path's doing. Also the share of echoes a helper may leave unexplained
before its counts of a flow are not believed."""
DECLINED = ("over_limits", "send_buffer_full", "source_port")
LIMITED = ("over_limits", "send_buffer_full")
"""The reasons to decline that are the helper's own limits."""


def _declined(helper: Record) -> dict[str, int] | None:
    """The helper's ``declined`` counts of a flow, or None (an older helper, or not well formed)."""
    declined = helper.get("declined")
    if not isinstance(declined, dict):
        return None
    if not all(isinstance(declined.get(n), int) and declined[n] >= 0 for n in DECLINED):
        return None
    return {n: int(declined[n]) for n in DECLINED}


def _helper_counts(record: Record) -> Record | None:
    """The helper's counts of the record's flow, when there are some (whether usable or not)."""
    helper = record.get("helper")
    if not isinstance(helper, dict) or helper.get("failure") is not None:
        return None
    names = ("rx_packets", "tx_packets")
    if not all(isinstance(helper.get(n), int) and helper[n] >= 0 for n in names):
        return None
    return helper


def _usable(helper: Record) -> bool:
    """Whether a flow's counts speak for the path. Not when the helper refused the flow's source
    port (it answers none from below 1024 or from its own ports: the probe's fault, and its counts
    say nothing about the network); nor when what it sent back and what it says it declined come
    to less than 90 % of what it received (a helper that does not say why: the missing echoes
    cannot be told from the path's doing), or to more than it received (counts that do not add
    up). The helper answers or declines every datagram, so its own counts always add up."""
    rx, tx = int(helper["rx_packets"]), int(helper["tx_packets"])
    declined = _declined(helper)
    if declined is None:  # an older helper: it says nothing of what it did not answer
        return tx >= rx * (1 - ECHO_SHORT)
    if declined["source_port"] > 0:
        return False
    accounted = tx + sum(declined.values())
    return rx * (1 - ECHO_SHORT) <= accounted <= rx


def _echo(records: Sequence[Record]) -> str:
    """``short`` when the helper received at least half of what the probe sent and says it declined
    to answer at least 10 % of what it received for its own limits (``over_limits``,
    ``send_buffer_full``); ``full`` otherwise; ``none`` without usable counts (:func:`_usable`)."""
    counts = [(r, h) for r in records if (h := _helper_counts(r)) is not None and _usable(h)]
    if not counts:
        return "none"
    rx = sum(h["rx_packets"] for _, h in counts)
    limited = sum((_declined(h) or {}).get(n, 0) for _, h in counts for n in LIMITED)
    sent = R.total_sent([r for r, _ in counts])
    if sent and rx >= sent * (1 - R.LOST) and limited >= rx * ECHO_SHORT:
        return "short"
    return "full"


DIRECTION_LOSS = 0.10
"""Loss on one way counts for the direction from this share on."""


def direction(records: Sequence[Record]) -> str | None:
    """Where the datagrams of ``records`` were lost, by the helper's counts: ``upload`` (they did
    not reach the helper), ``download`` (the helper echoed them, they did not come back), ``both``;
    None when neither way lost 10 % or the counts are missing. Flows whose counts are not usable
    (:func:`_usable`) are left out. The echo carries back only what arrived, so ``upload`` does
    not show that the other way is free."""
    present = [(r, h) for r in records if (h := _helper_counts(r)) is not None]
    if len(present) < len(records):
        return None
    counts = [(r, h) for r, h in present if _usable(h)]
    if not counts:
        return None
    sent = R.total_sent([r for r, _ in counts])
    rx = sum(min(h["rx_packets"], R.count(r, "sent_packets")) for r, h in counts)
    tx = sum(h["tx_packets"] for _, h in counts)
    back = R.total_received([r for r, _ in counts])
    up = 1 - rx / sent if sent else 0.0
    down = 1 - min(back, tx) / tx if tx else 0.0
    if up >= DIRECTION_LOSS and down >= DIRECTION_LOSS:
        return "both"
    if up >= DIRECTION_LOSS:
        return "upload"
    if down >= DIRECTION_LOSS:
        return "download"
    return None


def call_records(targets: list[Record], keys: Record) -> dict[str, list[Record]]:
    """The replay records of one function's targets, by role."""
    replays = {r.get("transaction_id"): r for r in keys.get("msgwatch_replays") or []
               if isinstance(r, dict)}  # fmt: skip
    by_role: dict[str, list[Record]] = {}
    for target in targets:
        ids = target.get("transaction_ids") or []
        record = replays.get(ids[0]) if isinstance(ids, list) and ids else None
        if record is not None:
            by_role.setdefault(str(target.get("role")), []).append(record)
    return by_role


def _without_stun(originals: Sequence[Record]) -> bool:
    """Whether the service's own call traffic carries no STUN (Discord's voice, Telegram's
    reflectors): the originals carried the service's own framing and not one STUN-framed
    datagram. A STUN check that fails then says nothing about its calls (the ``stun`` fact is
    ``none``). Records without ``signature_sent`` (older probes) keep the STUN check."""
    return (
        sum(R.count(r, "marked_sent") for r in originals) == 0
        and sum(R.count(r, "signature_sent") for r in originals) > 0
    )


def _answers(targets: list[Record], keys: Record, yes: str, no: str, *, lag: bool = False) -> str:
    """What a group of targets says: ``none`` without targets, ``yes`` when one answered,
    ``unknown`` when none was measured (``not_measured``: the fence, no time left for a second
    attempt; as in the endpoints' judge, such a target never decides) or, with ``lag``, when one
    failed by a timeout that the probe's own stall explains (:func:`overload.overloaded`); ``no``
    otherwise."""
    if not targets:
        return "none"
    measured = [t for t in targets if not t.get("not_measured")]
    if any(t.get("failure") is None for t in measured):
        return yes
    if not measured or (lag and any(overload.overloaded(t, keys) for t in measured)):
        return "unknown"
    return no


def _unread(targets: list[Record], keys: Record) -> bool:
    """Whether one endpoint among ``targets`` failed only by timeouts whose deadline fell in a
    stall of the probe's loop (:func:`~msgwatch.analysis.verdicts.overload.unread`): it may have
    answered. An attempt of the same endpoint that timed out with the loop running shows it silent
    (a relay that is up answers every attempt)."""
    by_endpoint: dict[str, list[Record]] = {}
    for t in targets:
        if t.get("failure") is not None and not t.get("not_measured"):
            by_endpoint.setdefault(str(t.get("endpoint_id")), []).append(t)
    return any(all(overload.unread(t, keys) for t in attempts)
               for attempts in by_endpoint.values())  # fmt: skip


def _api(calls: Sequence[Record], keys: Record) -> str:
    """The helper's control API (its counts, its view of the relays): ``ok`` when a call was
    answered, ``failed`` when every call failed, ``none`` without calls. A call that failed
    without one network event of its own never reached for the helper (the function's deadline
    had passed: the probe's lag) and says nothing of it: it is left out. The network events are
    read only when every call failed (one answer says ``ok`` already)."""
    if not calls:
        return "none"
    if any(c.get("failure") is None for c in calls):
        return "ok"
    tried = {e.get("transaction_id") for e in resolved(keys, "network_events") or []
             if isinstance(e, dict)}  # fmt: skip
    return "failed" if any(c.get("transaction_id") in tried for c in calls) else "none"


def call_facts(targets: list[Record], keys: Record) -> dict[str, str] | None:
    """The facts of one function's call path, or None when it was not replayed."""
    by_role = call_records(targets, keys)
    if not by_role.get("replay_original") or not by_role.get("replay_control"):
        return None
    # The rounds and replays the probe's own lag spoiled are left out (probe_trouble; all short
    # ones when echoes came late: late_trouble), and so are those the helper's own stalls spoiled
    # (helper_stalled).
    echoes = ("replay_original", "replay_control", "replay_plain", "replay_neutral")
    trouble = R.late_trouble([r for role in echoes for r in by_role.get(role, [])])
    originals, controls, spoiled, stalled = R.clean_all(
        by_role["replay_original"], by_role["replay_control"], trouble
    )
    for role in ("replay_plain", "replay_neutral", "replay_domestic"):
        records = by_role.get(role, [])
        kept = [r for r in records if not trouble(r)]
        spoiled += len(records) - len(kept)
        by_role[role] = [r for r in kept if not R.helper_stalled(r)]
        stalled += len(kept) - len(by_role[role])
    stun_targets = [t for t in targets if t.get("role") == "call_path"]
    stun = "none"
    if not _without_stun(by_role["replay_original"]):
        stun = _answers(stun_targets, keys, "ok", "failed")
    relay_targets = [
        t
        for t in targets
        if t.get("role", "endpoint") == "endpoint" and t.get("transport") == "udp"
    ]
    relays = _answers(relay_targets, keys, "ok", "failed")
    if relays == "failed" and _unread(relay_targets, keys):
        relays = "unclear"
    fallback_targets = [
        t
        for t in targets
        if t.get("role", "endpoint") == "endpoint"
        and t.get("transport") in ("tcp", "tls")
        and t.get("protocol") in ("stun", "turn")
    ]
    # Only softens a "blocked": a timeout the probe's stall explains does not show it closed.
    fallback = _answers(fallback_targets, keys, "open", "closed", lag=True)
    views = {r.get("transaction_id"): r for r in keys.get("msgwatch_helper_views") or []
             if isinstance(r, dict)}  # fmt: skip
    # The helper's view: "unclear" when it was asked and gave no results (its answer timed out).
    relays_helper = "none"
    calls: list[Record] = []
    for target in (t for t in targets if t.get("role") == "helper_view"):
        ids = target.get("transaction_ids") or []
        view = views.get(ids[0]) if isinstance(ids, list) and ids else None
        results = [r for r in (view or {}).get("results") or [] if isinstance(r, dict)]
        if view is not None:
            calls.append(view)
        if view is not None and view.get("failure") is None and results:
            relays_helper = "ok" if any(r.get("failure") is None for r in results) else "failed"
        elif relays_helper == "none":
            relays_helper = "unclear"
    abroad = [r for role, rs in by_role.items() if role != "replay_domestic" for r in rs]
    calls += [r["helper"] for r in abroad if isinstance(r.get("helper"), dict)]
    api = _api(calls, keys)
    comparison, reason = "none", "none"
    if R.state(originals) == R.state(controls) == "pass":
        comparison, reason = R.compare_rounds(originals, controls)
    overloaded = spoiled > 0 or reason == "probe_overloaded"
    facts = {
        "delivery": _delivery(originals, controls),
        "relays_helper": relays_helper,
        "fallback": fallback,
        "markers": _markers(originals, controls),
        "relays": relays,
        "original": R.state(originals),
        "control": R.state(controls),
        "plain": _plain(by_role.get("replay_plain", [])),
        "neutral": R.state(by_role.get("replay_neutral", [])),
        "domestic": R.state(by_role.get("replay_domestic", [])),
        "stun": stun,
        "comparison": comparison,
        "reason": reason,
        "echo": _echo([*originals, *controls]),
        "control_api": api,
        "split": R.split(originals, controls)
        if R.state(originals) == "fail" and R.state(controls) == "pass"
        else "none",
        "probe": "overloaded" if overloaded else "ok",
        "helper": "stalled" if stalled else "ok",
    }
    facts["downstream"] = _downstream(by_role)
    if facts["downstream"] == "overloaded":
        facts["downstream"], facts["probe"] = "none", "overloaded"
    elif facts["downstream"] == "stalled":
        facts["downstream"], facts["helper"] = "none", "stalled"
    facts["direction"] = _direction(by_role, facts) or "none"
    return facts


FACT_KEYS = (
    "original", "control", "neutral", "plain", "stun", "comparison", "reason", "relays",
    "relays_helper", "markers", "delivery", "echo", "control_api", "downstream", "split", "probe",
    "helper",
)  # fmt: skip


def _sent_all(record: Record) -> bool:
    """Whether the helper says it sent every datagram of a downstream replay that it announced
    (``helper.originated.tx_packets`` against ``sent_packets``): only then is what did not arrive
    the path's doing."""
    helper = _helper_counts(record)
    originated = helper.get("originated") if helper is not None else None
    if not isinstance(originated, dict):
        return False
    tx = originated.get("tx_packets")
    sent = R.count(record, "sent_packets")
    return isinstance(tx, int) and sent > 0 and tx >= sent


def downstream_records(
    by_role: dict[str, list[Record]],
) -> tuple[list[Record], list[Record], int, int]:
    """(originals, controls) of the downstream replays that the helper sent in full, without the
    rounds the probe's lag or the helper's stalls spoiled, and how many records each left out
    (:func:`~msgwatch.analysis.rounds.clean_all`)."""
    originals, controls = ([r for r in by_role.get(role, []) if _sent_all(r)]
                           for role in DOWN_ROLES)  # fmt: skip
    return R.clean_all(originals, controls)


DOWN_MIN_ROUNDS = 2
"""Downstream rounds that must show the original's loss before it counts (one may be the
probe's bad moment: its start-up, another program's burst)."""


def _downstream(by_role: dict[str, list[Record]]) -> str:
    """``original_lost``, ``same``, ``unclear`` (a loss that is not significant, or seen in fewer
    than :data:`DOWN_MIN_ROUNDS` rounds), ``overloaded`` (no round left once the probe's spoiled
    ones are out), ``stalled`` (none left once the helper's are out too) or ``none`` (module
    notes). The original lost when it failed while the control passed and
    :func:`~msgwatch.analysis.rounds.split` says it is ``significant``; when its STUN-framed
    datagrams died and the control's did not, in most rounds; or when it lost significantly more
    than a control that lost under 10 % (:func:`~msgwatch.analysis.rounds.compare_rounds`)."""
    originals, controls, spoiled, stalled = downstream_records(by_role)
    if not originals or not controls:
        return "overloaded" if spoiled else "stalled" if stalled else "none"
    pairs = R.round_pairs(originals, controls)
    if R.state(originals) == "fail" and R.state(controls) == "pass":
        lost = R.split(originals, controls) == "significant"
        if not lost:
            return "unclear"
    elif _markers(originals, controls) == "lost":
        lost = sum(1 for o, c in pairs if _markers([o], [c]) == "lost") * 2 > len(pairs)
    else:
        comparison, reason = R.compare_rounds(originals, controls)
        lossy = ("loss", "throughput_and_loss", "original_silent")
        lost = (
            comparison == "original_worse" and reason in lossy and 1 - R.delivered(controls) < LOSSY
        )
    if not lost:
        return "same"
    return "original_lost" if len(pairs) >= DOWN_MIN_ROUNDS else "unclear"


def downstream_loss(by_role: dict[str, list[Record]]) -> float | None:
    """The share of the downstream originals' datagrams that did not arrive, when the helper sent
    them all; None otherwise."""
    originals, *_ = downstream_records(by_role)
    sent = R.total_sent(originals)
    return 1 - R.total_received(originals) / sent if sent else None


def _direction(by_role: dict[str, list[Record]], facts: dict[str, str]) -> str | None:
    """The way the replays that show the loss lost their datagrams (:func:`direction`): the
    originals when they failed or were policed or lossy, else the plain echoes that failed.
    A downstream original that the helper sent in full and that lost 10 % or more adds
    ``download`` (``both`` with an ``upload``), on its own evidence (``download_evidence``: ``yes``
    beside the echoes' direction, ``only`` when the echoes told none)."""
    if facts["original"] == "fail" or facts["delivery"] in ("trickle", "lossy"):
        way = direction(by_role.get("replay_original", []))
    else:
        failed = [r for r in by_role.get("replay_plain", []) if R.state([r]) == "fail"]
        way = direction(failed) if failed else None
    down = downstream_loss(by_role)
    facts["download_evidence"] = "no"
    if down is not None and down >= DIRECTION_LOSS:
        facts["download_evidence"] = "yes" if way is not None else "only"
        return "both" if way in ("upload", "both") else "download"
    return way


def _matches(condition: str | list[str] | None, value: str) -> bool:
    if condition is None:
        return True
    return value in condition if isinstance(condition, list) else value == condition


FALLBACK = {
    "open": "The TCP/TLS fallback to the relays is open: calls may still connect, over TCP, badly.",
    "unknown": "Whether the TCP/TLS fallback to the relays is open is not known (not measured, or "
    "the probe itself was too busy when it tried): calls may still connect, over TCP, badly.",
}


def with_fallback(rule: CallRule, facts: dict[str, str]) -> CallRule:
    """A blocked UDP call path with the service's TCP/TLS relay fallback open, or not known to be
    closed (``unknown``), is ``degraded``: calls may still connect, over TCP, badly (calls.toml's
    header). Never the other way: an unknown fallback never makes a call path blocked."""
    fallback = facts.get("fallback")
    if rule.verdict == "blocked" and fallback in FALLBACK:
        return rule.model_copy(
            update={
                "id": f"{rule.id}+fallback",
                "verdict": "degraded",
                "explain": f"{rule.explain} {FALLBACK[str(fallback)]}",
            }
        )
    return rule


WAYS = {
    "upload": "The datagrams were lost on the way to the test helper (it did not receive them).",
    "download": "The datagrams reached the test helper and were lost on the way back.",
    "both": "Datagrams were lost on the way to the test helper and on the way back.",
}


DOWN_WAY = (
    " Call traffic that the test helper sent towards the probe was lost on the way too (download)."
)


def with_direction(rule: CallRule, facts: dict[str, str]) -> CallRule:
    """A call path that is not ok says which way its datagrams were lost, when the helper's
    counts tell (``facts["direction"]``); and when the downstream replays showed it, says so."""
    way = WAYS.get(facts.get("direction", "none"))
    evidence = facts.get("download_evidence")
    if way is not None and evidence == "yes":
        way += DOWN_WAY
    elif way is not None and evidence == "only":  # the echoes did not tell: the downstream did
        way = DOWN_WAY.strip().replace(" too (", " (")
    if rule.verdict == "ok" or way is None:
        return rule
    return rule.model_copy(update={"explain": f"{rule.explain} {way}"})


def match_call(facts: dict[str, str]) -> CallRule:
    for rule in load_call_rules().rule:
        if all(_matches(getattr(rule, key), facts.get(key, "none")) for key in FACT_KEYS):
            return with_direction(with_fallback(rule, facts), facts)
    raise LookupError("the call rules have no catch-all")

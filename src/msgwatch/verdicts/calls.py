"""Judging the call path from its replays (rules in ``calls.toml``, method in docs/method/calls.md).

Reads only the measurement: the replay targets of a function (roles ``replay_original``,
``replay_control``, ``replay_neutral``), their records in ``msgwatch_replays`` and the STUN call
path (role ``call_path``). The statistics compare the per-interval throughput and the loss of the
original with its control (:func:`msgwatch.analysis.stats.compare_replays`).
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from msgwatch.analysis.stats import ReplayStats, compare_replays
from msgwatch.verdicts.rules import Verdict

Record = dict[str, Any]
LOST = 0.5
"""A replay that got less than half of its datagrams back failed (probe.calls.LOST)."""


class CallRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    original: Literal["pass", "fail", "none"] | None = None
    control: Literal["pass", "fail", "none"] | None = None
    neutral: Literal["pass", "fail", "none"] | None = None
    stun: Literal["ok", "failed", "none"] | None = None
    comparison: str | None = None
    reason: str | None = None
    relays: Literal["ok", "failed", "none"] | None = None
    relays_helper: Literal["ok", "failed", "none"] | None = None
    markers: Literal["lost", "passed", "none"] | None = None
    delivery: Literal["trickle", "lossy", "full", "none"] | None = None
    verdict: Verdict
    mechanism: str | None = None
    confidence: float = Field(ge=0, le=1)
    explain: str


class CallRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules_version: str
    rule: list[CallRule]


@lru_cache(maxsize=1)
def load_call_rules() -> CallRules:
    text = (resources.files("msgwatch.verdicts") / "calls.toml").read_text(encoding="utf-8")
    return CallRules.model_validate(tomllib.loads(text))


def _state(record: Record | None) -> str:
    if record is None:
        return "none"
    sent = int(record.get("sent_packets") or 0)
    got = int(record.get("received_packets") or 0)
    return "pass" if sent and (sent - got) / sent <= LOST else "fail"


def _stats(record: Record) -> ReplayStats:
    intervals = [r for r in record.get("intervals") or [] if isinstance(r, dict)]
    width = 0.1
    if len(intervals) > 1:
        width = float(intervals[1].get("t", 0.1)) - float(intervals[0].get("t", 0.0)) or 0.1
    throughput = [int(r.get("rx_bytes") or 0) * 8 / width for r in intervals]
    return ReplayStats(
        throughput=throughput,
        sent=int(record.get("sent_packets") or 0),
        received=int(record.get("received_packets") or 0),
    )


MARKERS_LOST = 0.5
"""At least half of the original's STUN-framed datagrams lost..."""
MARKERS_CONTROL_OK = 0.2
"""...while at most a fifth of the control's datagrams at the same positions were."""


def _markers(original: Record | None, control: Record | None) -> str:
    """Whether the STUN-framed datagrams of the original, and only they, were dropped."""
    if original is None or control is None:
        return "none"
    sent = int(original.get("marked_sent") or 0)
    if sent == 0:
        return "none"
    lost = 1 - int(original.get("marked_received") or 0) / sent
    control_sent = int(control.get("marked_sent") or 0) or 1
    control_lost = 1 - int(control.get("marked_received") or 0) / control_sent
    return "lost" if lost >= MARKERS_LOST and control_lost <= MARKERS_CONTROL_OK else "passed"


TRICKLE = 0.02
"""A replay that failed but still delivered at least this share, in most intervals, was policed."""
LOSSY = 0.10
"""Replays that passed but both lost at least this share: calls connect, badly."""


def _delivery(original: Record | None, control: Record | None) -> str:
    """How both replays were delivered: a steady ``trickle`` (both failed, but a policer let a
    share through in most intervals), ``lossy`` (both passed, both lost >= 10 %), ``full``."""
    if original is None or control is None:
        return "none"

    def share(r: Record) -> float:
        sent = int(r.get("sent_packets") or 0)
        return int(r.get("received_packets") or 0) / sent if sent else 0.0

    def steady(r: Record) -> bool:
        rows = [row for row in r.get("intervals") or [] if isinstance(row, dict)]
        busy = [row for row in rows if int(row.get("tx_packets") or 0) > 0]
        got = [row for row in busy if int(row.get("rx_packets") or 0) > 0]
        return bool(busy) and len(got) >= len(busy) / 2

    shares = (share(original), share(control))
    if all(TRICKLE <= x < 1 - LOST for x in shares) and steady(original) and steady(control):
        return "trickle"
    if all(1 - LOST <= x <= 1 - LOSSY for x in shares):
        return "lossy"
    return "full"


def call_facts(targets: list[Record], keys: Record) -> dict[str, str] | None:
    """The facts of one function's call path, or None when it was not replayed."""
    by_role: dict[str, Record] = {}
    replays = {r.get("transaction_id"): r for r in keys.get("msgwatch_replays") or []
               if isinstance(r, dict)}  # fmt: skip
    for target in targets:
        ids = target.get("transaction_ids") or []
        record = replays.get(ids[0]) if isinstance(ids, list) and ids else None
        if record is not None:
            by_role[str(target.get("role"))] = record
    if "replay_original" not in by_role or "replay_control" not in by_role:
        return None
    stun_targets = [t for t in targets if t.get("role") == "call_path"]
    stun = "none"
    if stun_targets:
        stun = "ok" if any(t.get("failure") is None for t in stun_targets) else "failed"
    relay_targets = [
        t
        for t in targets
        if t.get("role", "endpoint") == "endpoint" and t.get("transport") == "udp"
    ]
    relays = "none"
    if relay_targets:
        relays = "ok" if any(t.get("failure") is None for t in relay_targets) else "failed"
    fallback_targets = [
        t
        for t in targets
        if t.get("role", "endpoint") == "endpoint"
        and t.get("transport") in ("tcp", "tls")
        and t.get("protocol") in ("stun", "turn")
    ]
    fallback = "none"
    if fallback_targets:
        fallback = "open" if any(t.get("failure") is None for t in fallback_targets) else "closed"
    views = {r.get("transaction_id"): r for r in keys.get("msgwatch_helper_views") or []
             if isinstance(r, dict)}  # fmt: skip
    relays_helper = "none"
    for target in (t for t in targets if t.get("role") == "helper_view"):
        ids = target.get("transaction_ids") or []
        view = views.get(ids[0]) if isinstance(ids, list) and ids else None
        results = [r for r in (view or {}).get("results") or [] if isinstance(r, dict)]
        if view is not None and view.get("failure") is None and results:
            relays_helper = "ok" if any(r.get("failure") is None for r in results) else "failed"
    facts = {
        "delivery": _delivery(by_role.get("replay_original"), by_role.get("replay_control")),
        "relays_helper": relays_helper,
        "fallback": fallback,
        "markers": _markers(by_role.get("replay_original"), by_role.get("replay_control")),
        "relays": relays,
        "original": _state(by_role.get("replay_original")),
        "control": _state(by_role.get("replay_control")),
        "neutral": _state(by_role.get("replay_neutral")),
        "domestic": _state(by_role.get("replay_domestic")),
        "stun": stun,
        "comparison": "none",
        "reason": "none",
    }
    if facts["original"] == facts["control"] == "pass":
        decision = compare_replays(
            _stats(by_role["replay_original"]), _stats(by_role["replay_control"])
        )
        facts["comparison"] = decision.which if decision.verdict == "differentiated" and \
            decision.which else decision.verdict  # fmt: skip
        facts["reason"] = decision.reason
    return facts


FACT_KEYS = (
    "original", "control", "neutral", "stun", "comparison", "reason", "relays", "relays_helper",
    "markers", "delivery",
)  # fmt: skip


def with_fallback(rule: CallRule, facts: dict[str, str]) -> CallRule:
    """A blocked UDP call path with the service's TCP/TLS relay fallback open is ``degraded``:
    calls may still connect, over TCP, badly (calls.toml's header)."""
    if rule.verdict == "blocked" and facts.get("fallback") == "open":
        return rule.model_copy(
            update={
                "id": f"{rule.id}+fallback",
                "verdict": "degraded",
                "explain": rule.explain + " The TCP/TLS fallback to the relays is open: calls may "
                "still connect, over TCP, badly.",
            }
        )
    return rule


def match_call(facts: dict[str, str]) -> CallRule:
    for rule in load_call_rules().rule:
        if all(getattr(rule, key) is None or getattr(rule, key) == facts[key] for key in FACT_KEYS):
            return with_fallback(rule, facts)
    raise LookupError("the call rules have no catch-all")

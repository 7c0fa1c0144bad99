"""Judging a ``msgwatch_circumvention`` measurement (rules as data in ``circumvention.toml``).

:func:`judge` reads one measurement (docs/spec/ts-msgwatch-circumvention.md) and gives verdict
records shaped as the service judge's (:class:`msgwatch.measurement.model.VerdictRecord`):

- one row for the transport: ``service`` = the entry's name, ``function`` = ``tunnel``
  (``reachability`` for ``tor_reach``);
- one row per ``through`` item: ``function`` = ``<service>.<function>`` (``whatsapp.voice``),
  judged in :mod:`msgwatch.analysis.verdicts.circumvention_through`.

The evidence rule (the toml's header says it in full): a failed stage is ``blocked`` with
mechanism ``<stage>.<kind>`` only when its failure is a network failure (``kinds``), a control
says the path abroad works (the measurement's ``control``, or ``peers``: other measurements of the
same run whose tunnel carried the transfer to the same helper), and the probe was not the slow
one: a timeout while the probe's loop stalled (``probe_lag``) is ``probe.overloaded``; a Tor
bootstrap whose progress moved within ``slow_progress_age`` seconds of the end of its time is
``tunnel.slow`` (a bootstrap without a ``progress_age`` is not known to be moving: it is judged
on its failure). The control proves only the path to the test helper, not that the endpoint is
up for everyone: ``circumvention.blocked`` says so and has a lower confidence, unless a
``helper_view`` (the endpoint tried from abroad) shows the endpoint up (``blocked_confirmed``) or
down (``endpoint_down``). A ``transfer`` or ``sustain`` whose flow stopped after bytes came back
(``stalled_at`` > 0, or a reset after bytes) is ``cut``; one that timed out while bytes still came
back (no ``stalled_at``) is ``slow``, inconclusive. Anything else is ``inconclusive``.

Hostile input: every value is read with its type checked, lists are cut at :data:`MAX_ITEMS`;
:func:`judge` never raises for any JSON value (a measurement it cannot read gives no rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

from msgwatch.analysis.verdicts import overload
from msgwatch.analysis.verdicts.circumvention_rules import (
    MAX_ITEMS,
    Record,
    Rule,
    RuleSet,
    dicts,
    integer,
    kind_of,
    load_rules,
    num,
    text,
    transfer_passed,
)
from msgwatch.analysis.verdicts.circumvention_through import through_ids, through_rule

__all__ = ["MAX_ITEMS", "RULES_VERSION", "TEST_NAME", "control_state", "judge", "judge_run",
           "kind_of", "load_rules"]  # fmt: skip

TEST_NAME: Final = "msgwatch_circumvention"
_CUT_STAGES = ("transfer", "sustain")
RULES_VERSION: Final = load_rules().rules_version


# --- the control -------------------------------------------------------------------------------------


def _helper_of(keys: Record) -> str | None:
    control = keys.get("control")
    return text(control.get("helper"), 128) if isinstance(control, dict) else None


def control_state(keys: Record, peers: Iterable[Record] = ()) -> Literal["ok", "failed", "none"]:
    """Whether the path abroad worked: the measurement's own ``control``; without one, a peer of
    the same run whose tunnel carried the transfer (to the same helper when both say)."""
    control = keys.get("control")
    if isinstance(control, dict) and "failure" in control:
        return "ok" if control.get("failure") is None else "failed"
    helper = _helper_of(keys)
    for peer in peers:
        other = peer.get("test_keys") if isinstance(peer, dict) else None
        if not isinstance(other, dict) or other is keys:
            continue
        theirs = _helper_of(other)
        if helper is not None and theirs is not None and helper != theirs:
            continue
        if transfer_passed(other):
            return "ok"
    return "none"


# --- the tunnel row ----------------------------------------------------------------------------------


def _span(stage: Record) -> tuple[float, float] | None:
    t0, t = num(stage.get("t0")), num(stage.get("t"))
    return (t0, t) if t0 is not None and t is not None and t0 <= t else None


def _overloaded(stage: Record, keys: Record, rules: RuleSet) -> bool:
    window = _span(stage)
    if window is None or stage.get("failure") != overload.TIMEOUT:
        return False
    lost = overload.stalled({"msgwatch_probe_lag": keys.get("probe_lag")}, *window)
    return lost >= rules.overload_min and lost >= rules.overload_share * (window[1] - window[0])


def _slow(stage: Record, keys: Record, rules: RuleSet) -> bool:
    """A bootstrap that ran out of time while still progressing: its ``progress_age`` (seconds
    since the progress last moved) at most ``slow_progress_age``. No age: not known to move."""
    if stage.get("stage") != "tunnel" or stage.get("failure") != overload.TIMEOUT:
        return False
    progress = num(stage.get("progress"))
    if progress is None:
        progress = num(keys.get("tor_progress"))
    if progress is None or progress <= 0:
        return False
    age = num(stage.get("progress_age"))
    return age is not None and 0 <= age <= rules.slow_progress_age


def _flow(stage: Record, kind: str) -> tuple[Literal["cut", "slow"], int] | None:
    """A ``transfer``/``sustain`` that failed after bytes came back: ``cut`` when the flow
    stopped (``stalled_at``: the bytes back when the echo stopped for good, or a reset/close after
    bytes), ``slow`` when it ran out of time with no ``stalled_at`` (still moving); None when no
    byte came back or it is not such a stage."""
    if stage.get("stage") not in _CUT_STAGES:
        return None
    back = max(integer(stage.get("bytes_received")), integer(stage.get("bytes")))
    stalled = stage.get("stalled_at", stage.get("stalled_at_bytes"))
    if integer(stalled) > 0:
        return "cut", integer(stalled)
    if back <= 0:
        return None
    if kind == "reset":
        return "cut", back
    return ("slow", back) if kind == "timeout" and stalled is None else None


def _tunnel_rule(keys: Record, peers: Iterable[Record], rules: RuleSet) -> tuple[Rule, Record]:
    """The rule for the transport's own row, and the values its text names."""
    stages = dicts(keys.get("stages"))
    failed = next((s for s in stages if s.get("failure") is not None), None)
    if failed is None:
        reach = keys.get("transport") == "tor_reach"  # no tunnel: its targets are the test
        if not stages or (not reach and not any(s.get("stage") == "tunnel" for s in stages)):
            return rules.get("circumvention.incomplete"), {}
        total, accessible = _reach_counts(keys)
        if total and accessible < total:
            return rules.get("circumvention.reachability_partial"), {
                "failed": total - accessible, "total": total,
            }  # fmt: skip
        return rules.get("circumvention.ok"), {}
    stage = text(failed.get("stage"), 16) or "unknown"
    failure = text(failed.get("failure"), 128) or "unknown_failure"
    values: Record = {"stage": stage, "failure": failure}
    kind = kind_of(failure, rules)
    if kind is None:
        known_local = failure in rules.local.failures
        return rules.get("circumvention.local" if known_local else "circumvention.unknown"), values
    if _overloaded(failed, keys, rules):
        return rules.get("probe.overloaded"), values
    if _slow(failed, keys, rules):
        values["progress"] = num(failed.get("progress")) or num(keys.get("tor_progress")) or 0
        return rules.get("circumvention.slow"), values
    flow = _flow(failed, kind)
    if flow is not None and flow[0] == "slow":
        values["bytes"] = flow[1]
        return rules.get("circumvention.flow_slow"), values
    control = control_state(keys, peers)
    if control == "none":
        return rules.get("circumvention.no_control"), values
    if control == "failed":
        return rules.get("circumvention.control_failed"), values
    if flow is not None:
        values["bytes"] = flow[1]
        return rules.get("circumvention.cut"), values
    values["kind"] = kind
    view = _helper_view(keys)
    if view == "down":
        return rules.get("circumvention.endpoint_down"), values
    return rules.get("circumvention.blocked_confirmed" if view == "up" else
                     "circumvention.blocked"), values  # fmt: skip


def _helper_view(keys: Record) -> Literal["up", "down", "none"]:
    """The endpoint tried from abroad by the test helper (``helper_view``, when a run has one):
    ``up`` when it answered there, ``down`` when it did not, ``none`` without a view."""
    view = keys.get("helper_view")
    if not isinstance(view, dict) or "failure" not in view:
        return "none"
    return "up" if view.get("failure") is None else "down"


def _reach_counts(keys: Record) -> tuple[int, int]:
    """Tor reachability's targets: (total, accessible) over OONI's per-protocol counts."""
    total = accessible = 0
    for protocol in ("dir_port", "or_port", "or_port_dirauth", "obfs4"):
        total += integer(keys.get(f"{protocol}_total"))
        accessible += integer(keys.get(f"{protocol}_accessible"))
    return total, min(accessible, total)


# --- records -----------------------------------------------------------------------------------------


def _format(template: str, values: Record) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


def _record(
    service: str, function: str, rule: Rule, values: Record, evidence: list[int], call: bool,
    rules: RuleSet,
) -> Record:  # fmt: skip
    mechanism = _format(rule.mechanism, values) if rule.mechanism else None
    ok = rule.verdict == "ok"
    return {
        "service": service,
        "function": function,
        "coverage": "full",
        "call_path": call,
        "scope": None,
        "fallback": None,
        "verdict": rule.verdict,
        "mechanism": mechanism,
        "confidence": rule.confidence,
        "rule_id": rule.id,
        "rules_version": rules.rules_version,
        "evidence": evidence,
        "endpoints": {
            "total": 1,
            "ok": int(ok),
            "failed": int(rule.verdict in ("blocked", "degraded")),
        },
        "explanation": _format(rule.explain, values),
    }


def judge(measurement: Any, peers: Iterable[Any] = ()) -> list[Record]:
    """The verdict rows of one ``msgwatch_circumvention`` measurement ([] for anything else).
    ``peers``: the other measurements of the same run (a control when this one has none)."""
    try:
        return _judge(measurement, peers)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError):
        return []


def _judge(measurement: Any, peers: Iterable[Any]) -> list[Record]:
    if not isinstance(measurement, dict) or measurement.get("test_name") != TEST_NAME:
        return []
    keys = measurement.get("test_keys")
    if not isinstance(keys, dict):
        return []
    entry = keys.get("entry")
    name = text(entry.get("name")) if isinstance(entry, dict) else None
    name = name or text(measurement.get("input"))
    if not name:
        return []
    report = measurement.get("report_id")
    same_run = [
        p for p in list(peers)[:MAX_ITEMS]
        if isinstance(p, dict) and p is not measurement and p.get("test_name") == TEST_NAME
        and (report is None or p.get("report_id") == report)
    ]  # fmt: skip
    rules = load_rules()
    function = "reachability" if keys.get("transport") == "tor_reach" else "tunnel"
    rule, values = _tunnel_rule(keys, same_run, rules)
    out = [_record(name, function, rule, values, [], False, rules)]
    for item in dicts(keys.get("through")):
        service, fn = text(item.get("service"), 32), text(item.get("function"), 32)
        if not service or not fn:
            continue
        rule, values = through_rule(item, keys, rules)
        call = bool(dicts(item.get("replays")))
        out.append(_record(name, f"{service}.{fn}", rule, values, through_ids(item), call, rules))
    return out


def judge_run(measurements: Iterable[Any]) -> list[Record]:
    """The verdict rows of a run's circumvention measurements, each with the others as peers."""
    items = [m for m in list(measurements) if isinstance(m, dict)]
    return [v for m in items for v in judge(m, items)]

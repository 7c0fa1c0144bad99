"""Judging a ``msgwatch_circumvention`` measurement (rules as data in ``circumvention.toml``).

:func:`judge` reads one measurement (docs/spec/ts-msgwatch-circumvention.md) and gives verdict
records shaped as the service judge's (:class:`msgwatch.measurement.model.VerdictRecord`):

- one row for the transport: ``service`` = the entry's name, ``function`` = ``tunnel``
  (``reachability`` for ``tor_reach``);
- one row per ``through`` item: ``function`` = ``<service>.<function>`` (``whatsapp.voice``).

The evidence rule (the toml's header says it in full): a failed stage is ``blocked`` with
mechanism ``<stage>.<kind>`` only when its failure is a network failure (``kinds``), a control
says the path abroad works (the measurement's ``control``, or ``peers``: other measurements of the
same run whose tunnel carried the transfer to the same helper), and the probe was not the slow
one (its loop's stalls; a Tor bootstrap still moving when its time ran out). A ``transfer`` or
``sustain`` that stopped after bytes came back is ``cut``. Anything else is ``inconclusive``.

Calls through the tunnel compare the original replay with its bit-inverted control, as
``calls.toml`` does directly: both lost (and the tunnel carried the transfer): the path of calls
through it is blocked; the original lost, the control through: DPI through the tunnel; both
through: ok.

Hostile input: every value is read with its type checked, lists are cut at :data:`MAX_ITEMS`;
:func:`judge` never raises for any JSON value (a measurement it cannot read gives no rows).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from msgwatch.analysis.verdicts import overload

Record = dict[str, Any]
TEST_NAME: Final = "msgwatch_circumvention"
MAX_ITEMS: Final = 256
_CUT_STAGES = ("transfer", "sustain")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    verdict: Literal["ok", "blocked", "inconclusive", "degraded", "not_measured"]
    mechanism: str | None = None
    confidence: float
    explain: str


class Local(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: list[str]


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules_version: str
    overload_share: float
    overload_min: float
    slow_progress_age: float
    replay_pass: float
    kinds: dict[str, str]
    prefix_kinds: dict[str, str]
    local: Local
    rule: list[Rule]

    def get(self, rule_id: str) -> Rule:
        return next(r for r in self.rule if r.id == rule_id)


@lru_cache(maxsize=1)
def load_rules() -> RuleSet:
    text = (resources.files("msgwatch.analysis.verdicts") / "circumvention.toml").read_text(
        encoding="utf-8"
    )
    return RuleSet.model_validate(tomllib.loads(text))


RULES_VERSION: Final = load_rules().rules_version


# --- reading hostile values ------------------------------------------------------------------------


def _dicts(value: Any) -> list[Record]:
    return [v for v in value[:MAX_ITEMS] if isinstance(v, dict)] if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any, limit: int = 64) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def kind_of(failure: str | None, rules: RuleSet) -> str | None:
    """The network kind of ``failure`` (``timeout``, ``reset``, ...), None when not the network's."""
    if failure is None or failure in rules.local.failures:
        return None
    if failure in rules.kinds:
        return rules.kinds[failure]
    for prefix, kind in rules.prefix_kinds.items():
        if failure.startswith(prefix):
            return kind
    return None


# --- the control -------------------------------------------------------------------------------------


def _helper_of(keys: Record) -> str | None:
    control = keys.get("control")
    return _str(control.get("helper"), 128) if isinstance(control, dict) else None


def _transfer_passed(keys: Record) -> bool:
    return any(
        s.get("stage") == "transfer" and s.get("failure") is None and _num(s.get("t")) is not None
        for s in _dicts(keys.get("stages"))
    )


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
        if _transfer_passed(other):
            return "ok"
    return "none"


# --- the tunnel row ----------------------------------------------------------------------------------


def _span(stage: Record) -> tuple[float, float] | None:
    t0, t = _num(stage.get("t0")), _num(stage.get("t"))
    return (t0, t) if t0 is not None and t is not None and t0 <= t else None


def _overloaded(stage: Record, keys: Record, rules: RuleSet) -> bool:
    window = _span(stage)
    if window is None or stage.get("failure") != overload.TIMEOUT:
        return False
    lost = overload.stalled({"msgwatch_probe_lag": keys.get("probe_lag")}, *window)
    return lost >= rules.overload_min and lost >= rules.overload_share * (window[1] - window[0])


def _slow(stage: Record, keys: Record, rules: RuleSet) -> bool:
    """A bootstrap that ran out of time while still progressing (or with no age to tell)."""
    if stage.get("stage") != "tunnel" or stage.get("failure") != overload.TIMEOUT:
        return False
    progress = _num(stage.get("progress"))
    if progress is None:
        progress = _num(keys.get("tor_progress"))
    if progress is None or progress <= 0:
        return False
    age = _num(stage.get("progress_age"))
    return age is None or age <= rules.slow_progress_age


def _cut_bytes(stage: Record) -> int:
    """Bytes that came back before a transfer or sustain stopped (0: none, or not such a stage)."""
    if stage.get("stage") not in _CUT_STAGES:
        return 0
    stalled = _int(stage.get("stalled_at_bytes"))
    return max(stalled, _int(stage.get("bytes_received")), _int(stage.get("bytes")))


def _tunnel_rule(keys: Record, peers: Iterable[Record], rules: RuleSet) -> tuple[Rule, Record]:
    """The rule for the transport's own row, and the values its text names."""
    stages = _dicts(keys.get("stages"))
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
    stage = _str(failed.get("stage"), 16) or "unknown"
    failure = _str(failed.get("failure"), 128) or "unknown_failure"
    values: Record = {"stage": stage, "failure": failure}
    kind = kind_of(failure, rules)
    if kind is None:
        known_local = failure in rules.local.failures
        return rules.get("circumvention.local" if known_local else "circumvention.unknown"), values
    if _overloaded(failed, keys, rules):
        return rules.get("probe.overloaded"), values
    if _slow(failed, keys, rules):
        values["progress"] = _num(failed.get("progress")) or _num(keys.get("tor_progress")) or 0
        return rules.get("circumvention.slow"), values
    control = control_state(keys, peers)
    if control == "none":
        return rules.get("circumvention.no_control"), values
    if control == "failed":
        return rules.get("circumvention.control_failed"), values
    cut = _cut_bytes(failed)
    if cut > 0:
        values["bytes"] = cut
        return rules.get("circumvention.cut"), values
    values["kind"] = kind
    return rules.get("circumvention.blocked"), values


def _reach_counts(keys: Record) -> tuple[int, int]:
    """Tor reachability's targets: (total, accessible) over OONI's per-protocol counts."""
    total = accessible = 0
    for protocol in ("dir_port", "or_port", "or_port_dirauth", "obfs4"):
        total += _int(keys.get(f"{protocol}_total"))
        accessible += _int(keys.get(f"{protocol}_accessible"))
    return total, min(accessible, total)


# --- through the tunnel ------------------------------------------------------------------------------


def _passes(replays: list[Record], role: str, rules: RuleSet) -> bool | None:
    """Whether ``role``'s replays passed (at least ``replay_pass`` came back); None: none sent."""
    mine = [
        r for r in replays
        if r.get("role") == role and not (isinstance(r.get("probe"), dict) and r["probe"].get("cut"))
    ]  # fmt: skip
    sent = sum(_int(r.get("sent_packets")) for r in mine)
    if sent <= 0:
        return None
    received = sum(min(_int(r.get("received_packets")), _int(r.get("sent_packets"))) for r in mine)
    return received >= rules.replay_pass * sent


def _through_rule(item: Record, keys: Record, rules: RuleSet) -> tuple[Rule, Record]:
    failure = _str(item.get("failure"), 128)
    values: Record = {"failure": failure}
    replays = _dicts(item.get("replays"))
    carried = _transfer_passed(keys)
    reason = _str(item.get("reason"), 64)
    if failure == "udp_not_carried" or (item.get("measured") is False and reason == "no_udp"):
        return rules.get("through.not_carried"), values
    if item.get("measured") is False:  # the tunnel did not come up: nothing was tried
        values["reason"] = reason or "not_measured"
        return rules.get("through.not_measured"), values
    if replays:
        original = _passes(replays, "replay_original", rules)
        control = _passes(replays, "replay_control", rules)
        if original and control:
            return rules.get("through.calls_ok"), values
        if original is False and control:
            return rules.get("through.calls_dpi"), values
        if original is False and control is False and carried:
            return rules.get("through.calls_path"), values
        return rules.get("through.calls_unclear"), values
    if failure is None:
        return rules.get("through.ok"), values
    kind = kind_of(failure, rules)
    if kind is None or not carried:
        return rules.get("through.unclear"), values
    values["kind"] = kind
    return rules.get("through.blocked"), values


def _through_ids(item: Record) -> list[int]:
    ids = [_int(r.get("transaction_id")) for r in _dicts(item.get("replays"))]
    tls = item.get("tls")
    if isinstance(tls, dict):
        ids.append(_int(tls.get("transaction_id")))
    return sorted({i for i in ids if i > 0})


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
    name = _str(entry.get("name")) if isinstance(entry, dict) else None
    name = name or _str(measurement.get("input"))
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
    for item in _dicts(keys.get("through")):
        service, fn = _str(item.get("service"), 32), _str(item.get("function"), 32)
        if not service or not fn:
            continue
        rule, values = _through_rule(item, keys, rules)
        call = bool(_dicts(item.get("replays")))
        out.append(_record(name, f"{service}.{fn}", rule, values, _through_ids(item), call, rules))
    return out


def judge_run(measurements: Iterable[Any]) -> list[Record]:
    """The verdict rows of a run's circumvention measurements, each with the others as peers."""
    items = [m for m in list(measurements) if isinstance(m, dict)]
    return [v for m in items for v in judge(m, items)]

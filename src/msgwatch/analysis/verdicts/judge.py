"""Judge each (service, function) from a measurement, and nothing else.

The judge reads only the measurement's ``test_keys`` (the recorded trace and ``msgwatch_targets``),
never sockets or the probe's objects, so a verdict can be recomputed from a stored measurement when
the rules change. Per endpoint it derives :class:`~msgwatch.analysis.verdicts.matching.Facts` and matches the
rules; per function it combines the endpoints by the function's mode:

- ``any_of`` (a redundant pool): ``ok`` if any endpoint is ok; otherwise ``blocked`` if any endpoint
  is blocked (the mechanism is the one most endpoints show), else ``inconclusive``.
- ``all_of`` (each required): ``ok`` if all are ok; otherwise ``blocked`` if any is blocked, else
  ``inconclusive``.

Attempts and partial failure (the combined rules at the end of ``rules.toml``):

- The runner tries a failed chain once more, later in the run; the targets of one endpoint carry
  ``attempt`` 1 and 2 and are judged together (:func:`judge_endpoint`). Failed every time: the
  failure's rule. Failed with a sign of interference once and worked once: ``degraded``
  ``intermittent``, in a pool as in a required set. A single timeout never decides alone.
- A pool some of whose endpoints work is ``degraded`` ``pool.partial`` when others failed every
  attempt with a sign of interference while the test helper reached them (``helper_view`` or
  ``pool_view`` records), unless they are only another way to a server that worked (the same
  host name: Signal's name failing while its fixed fallback addresses answer is the pool doing
  its job); the count is in the verdict's ``endpoints`` and its explanation.
  Without the helper's word a failing pool member may be down for everyone: the pool stays ``ok``.
- A target the run did not measure (``not_measured``: ``fence``, ``no_time``) never decides: a pool
  with an ok endpoint is still ok, and one that would be blocked or ok only by the endpoints that
  were measured is ``not_measured`` (an endpoint not measured might have said otherwise); a
  required endpoint that is blocked still makes the function blocked.

The call path (STUN to the test helper on the service's call ports, role ``call_path``) is a pool of
its own, required in addition to the endpoints: calls need both their set-up and their media path,
so the function's verdict is the more severe of the two.

The evidence of a verdict is the transaction ids of the endpoints that decided it.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

from msgwatch.analysis.verdicts import circumvention
from msgwatch.analysis.verdicts.call_rules import CallRule
from msgwatch.analysis.verdicts.calls import call_facts, match_call
from msgwatch.analysis.verdicts.matching import Facts, match, match_blockpage
from msgwatch.analysis.verdicts.overload import OVERLOADED, overloaded, throughput_overloaded
from msgwatch.analysis.verdicts.rules import Rule, RuleSet, load_rules
from msgwatch.measurement.vocab import INTERFERENCE, SEVERITY

Record = dict[str, Any]


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8", "replace")
    if isinstance(body, dict) and body.get("format") == "base64":
        try:
            return base64.b64decode(str(body.get("data", "")), validate=False)
        except ValueError:
            return b""
    return b""


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _in_networks(address: str, networks: list[Any]) -> bool:
    ip = _address(address)
    if ip is None:
        return False
    for prefix in networks:
        network = _network(str(prefix))
        if network is not None and ip.version == network.version and ip in network:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _public(text: str) -> int:
    """1: a global address; 0: another address; -1: not an address. Remembered, as
    :func:`_address` is: ``is_global`` tests the address against every special-purpose range, and
    a trace names the same few addresses again and again."""
    ip = _address(text)
    return -1 if ip is None else (1 if ip.is_global else 0)


def dns_forged(queries: list[Record], networks: list[Any]) -> bool:
    """Whether the queries of one chain show a forged answer.

    Forged: two different address sets answered the same query (an injected answer raced the real
    one), or the first answer holds a non-public address outside the service's declared networks.
    """
    seen: dict[str, set[frozenset[str]]] = {}
    for query in queries:
        addresses = frozenset(
            str(a.get("ipv4") or a.get("ipv6"))
            for a in (query.get("answers") or [])
            if isinstance(a, dict) and (a.get("ipv4") or a.get("ipv6"))
        )
        if not addresses:
            continue
        seen.setdefault(str(query.get("query_type")), set()).add(addresses)
        if "late" in (query.get("tags") or []):
            continue
        for address in addresses:
            if _public(address) == 0 and not _in_networks(address, networks):
                return True
    return any(len(sets) > 1 for sets in seen.values())


def _records(keys: Record, name: str) -> list[Record]:
    value = keys.get(name)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


_Index = dict[Any, list[tuple[int, Record]]]
_SCOPE: contextvars.ContextVar[tuple[Record, dict[str, _Index]] | None] = contextvars.ContextVar(
    "msgwatch_judge_scope", default=None
)
"""While :func:`judge` runs: its ``test_keys`` and, per record list, the records by transaction id,
built once, so that judging an endpoint does not scan every list of the trace again (the trace of a
measurement is not changed while it is judged; outside :func:`judge` nothing is cached)."""


def _with_txids(keys: Record, name: str, txids: set[int]) -> list[Record]:
    """The records of ``keys[name]`` whose ``transaction_id`` is in ``txids``, in trace order."""
    scope = _SCOPE.get()
    if scope is None or scope[0] is not keys:
        return [r for r in _records(keys, name) if r.get("transaction_id") in txids]
    index = scope[1].get(name)
    if index is None:
        index = {}
        for position, record in enumerate(_records(keys, name)):
            txid = record.get("transaction_id")
            if isinstance(txid, (int, str)):  # hashable ids only; others match no target
                index.setdefault(txid, []).append((position, record))
        scope[1][name] = index
    found = [pair for txid in txids for pair in index.get(txid, ())]
    if len(txids) > 1:
        found.sort(key=lambda pair: pair[0])
    return [record for _, record in found]


def _txids(target: Record) -> list[int]:
    value = target.get("transaction_ids")
    if not isinstance(value, list):
        return []
    return [i for i in value if isinstance(i, int) and not isinstance(i, bool)]


THROTTLE_RATIO = 4.0
"""The benign-name download must be at least this many times faster than the real one."""
THROTTLE_MIN_CONTROL_BYTES = 64 * 1024
"""...and must have moved this much, so that a tiny or failed control proves nothing."""


def throttled(records: list[Record]) -> bool:
    """Whether the real-name download ran far slower than the benign-name one (see rules.toml)."""
    real = [r for r in records if not r.get("control")]
    control = [r for r in records if r.get("control")]
    if not real or not control:
        return False
    rate = max(float(r.get("kbit_s") or 0) for r in real)
    best = max(control, key=lambda r: float(r.get("kbit_s") or 0))
    moved = int(best.get("bytes") or 0) >= THROTTLE_MIN_CONTROL_BYTES
    return moved and float(best.get("kbit_s") or 0) >= THROTTLE_RATIO * max(rate, 1e-9)


def _throughput(target: Record, keys: Record) -> list[Record]:
    """The target's throughput downloads (real and benign name)."""
    return _with_txids(keys, "msgwatch_throughput", set(_txids(target)))


def facts_for(target: Record, keys: Record) -> tuple[Facts, str | None]:
    """The facts of one endpoint, and the id of the block page fingerprint it matched."""
    txids = set(_txids(target))
    queries = _with_txids(keys, "queries", txids)
    handshakes = _with_txids(keys, "tls_handshakes", txids)
    main = [h for h in handshakes if "control" not in (h.get("tags") or [])]
    control = [h for h in handshakes if "control" in (h.get("tags") or [])]
    verified = any(h.get("failure") is None and not h.get("no_tls_verify") for h in main)
    blockpage: str | None = None
    for request in _with_txids(keys, "requests", txids):
        response = request.get("response")
        if isinstance(response, dict):
            headers = [
                (str(h[0]), str(h[1]))
                for h in response.get("headers_list") or []
                if isinstance(h, (list, tuple)) and len(h) == 2
            ]
            status = response.get("code")
            blockpage = match_blockpage(
                status if isinstance(status, int) else None,
                headers,
                _body_bytes(response.get("body")),
            )
            if blockpage:
                break
    control_state = "none"
    if control:
        control_state = "ok" if any(h.get("failure") is None for h in control) else "failed"
    facts = Facts(
        step=str(target.get("failed_step") or "none"),
        failure=failure if isinstance(failure := target.get("failure"), str) else None,
        dns_forged=dns_forged(queries, keys.get("msgwatch_service_networks") or []),
        verified=verified,
        blockpage=blockpage is not None,
        control=control_state,
        throttled=throttled(_throughput(target, keys)),
    )
    return facts, blockpage


def judge_target(target: Record, keys: Record) -> tuple[Rule, str | None]:
    facts, fingerprint = facts_for(target, keys)
    if overloaded(target, keys):  # the probe's own stall, not the network (verdicts.overload)
        return OVERLOADED, fingerprint
    if facts.throttled and throughput_overloaded(_throughput(target, keys), keys):
        return OVERLOADED, fingerprint  # a ratio of what a stalled probe found time to read
    return match(facts), fingerprint


class Judged:
    """One endpoint as judged: all its attempts, the rule that decides it, and its state
    (``ok``, ``failed``, ``intermittent`` or ``not_measured``; ``reason``, for ``not_measured``:
    ``fence`` or ``no_time``). A plain class, for a compiled ``__init__`` (see
    :class:`~msgwatch.analysis.verdicts.matching.Facts`)."""

    def __init__(
        self, targets: list[Record], rule: Rule, state: str, reason: str | None = None
    ) -> None:
        self.targets = targets
        self.rule = rule
        self.state = state
        self.reason = reason

    @property
    def txids(self) -> list[int]:
        return [i for t in self.targets for i in _txids(t)]


def _attempt_groups(targets: Iterable[Record]) -> list[list[Record]]:
    """The attempts of each endpoint together: targets that carry ``attempt`` are grouped by role
    and endpoint id; every other target (replays, measurements made before retries) is one."""
    groups: dict[tuple[str, str], list[Record]] = {}
    out: list[list[Record]] = []
    for target in targets:
        if not isinstance(target.get("attempt"), int):
            out.append([target])
            continue
        key = (str(target.get("role", "endpoint")), str(target.get("endpoint_id")))
        if key not in groups:
            groups[key] = []
            out.append(groups[key])
        groups[key].append(target)
    return out


def judge_endpoint(attempts: list[Record], keys: Record, rules: RuleSet) -> Judged:
    """One endpoint from its attempts: all ok is ok; all failed is the most severe failure's rule;
    a failure that interferes and a success is ``intermittent``; an attempt that was not measured
    (the fence, no time) never decides, unless its DNS evidence already shows a forged answer."""
    measured: list[tuple[Record, Rule]] = []
    reasons: list[str] = []
    for target in attempts:
        rule, _ = judge_target(target, keys)
        reason = target.get("not_measured")
        if isinstance(reason, str) and rule.id != "dns.forged":
            reasons.append(reason)
            continue
        measured.append((target, rule))
    if not measured:
        reason = reasons[0] if reasons else "fence"
        fallback = "not_measured.no_time" if reason == "no_time" else "not_measured.fence"
        return Judged(attempts, rules.combined_rule(fallback), "not_measured", reason)
    oks = [r for _, r in measured if r.verdict == "ok"]
    failed = [r for _, r in measured if r.verdict != "ok"]
    if not failed:
        return Judged(attempts, oks[0], "ok")
    worst = max(failed, key=lambda r: SEVERITY.get(r.verdict, 1.0))
    if not oks:
        return Judged(attempts, worst, "failed")
    if worst.verdict in INTERFERENCE:
        return Judged(attempts, rules.combined_rule("intermittent"), "intermittent")
    return Judged(attempts, oks[0], "ok")  # a failure that proves nothing, then a success


def _view_results(targets: list[Record], keys: Record) -> list[tuple[Record, bool]]:
    """(step, reached) for every step of the test helper's views of this function's endpoints."""
    views = {r.get("transaction_id"): r for r in _records(keys, "msgwatch_helper_views")}
    out: list[tuple[Record, bool]] = []
    for target in targets:
        if target.get("role") not in ("helper_view", "pool_view"):
            continue
        view = views.get(next(iter(_txids(target)), None))
        if view is None or view.get("failure") is not None:
            continue
        steps = _list(view.get("steps"))
        results = _list(view.get("results"))
        for step, result in zip(steps, results, strict=False):
            if isinstance(step, dict) and isinstance(result, dict):
                out.append((step, result.get("failure") is None))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _role(judged: Judged) -> str:
    return str(judged.targets[0].get("role", "endpoint"))


def _server(target: Record) -> str:
    return str(target.get("host") or target.get("address") or target.get("endpoint_id"))


def _helper_reached(target: Record, views: list[tuple[Record, bool]]) -> bool | None:
    """Whether the test helper reached this endpoint at the time (None: it was not asked)."""
    seen = [
        reached
        for step, reached in views
        if step.get("port") == target.get("port")
        and (
            (step.get("address") is not None and step.get("address") == target.get("address"))
            or (step.get("host") is not None and step.get("host") == target.get("host"))
        )
    ]
    return any(seen) if seen else None


Combined = tuple[str, str | None, list[Record], Rule | None, dict[str, Any]]


def _most_common(values: list[str | None]) -> str | None:
    """The most frequent of ``values`` (not empty), the first seen among equals (as
    ``Counter.most_common(1)``)."""
    counts: dict[str | None, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    best, most = values[0], 0
    for value, count in counts.items():
        if count > most:
            best, most = value, count
    return best


def _worst(group: list[Judged]) -> Combined:
    """The most severe verdict of ``group``, the mechanism most of those endpoints show."""
    worst = max(SEVERITY.get(j.rule.verdict, 1.0) for j in group)
    verdict = next(j.rule.verdict for j in group if SEVERITY.get(j.rule.verdict, 1.0) == worst)
    same = [j for j in group if j.rule.verdict == verdict]
    mechanism = _most_common([j.rule.mechanism for j in same])
    deciding = [j for j in same if j.rule.mechanism == mechanism]
    return verdict, mechanism, [t for j in deciding for t in j.targets], deciding[0].rule, {}


def _combine(
    mode: str, judged: list[Judged], keys: Record, targets: list[Record], rules: RuleSet
) -> Combined:
    """One verdict for a group of endpoints (``none`` when the group is empty).

    Endpoints that were not measured never decide: a pool with an ok endpoint is ok (or degraded)
    whatever else was not measured; a pool whose measured endpoints all failed, or a required set
    whose measured endpoints were all ok, is ``not_measured``, since the rest might say otherwise."""
    if not judged:
        return "none", None, [], None, {}
    measured = [j for j in judged if j.state != "not_measured"]
    unmeasured = [j for j in judged if j.state == "not_measured"]
    oks = [j for j in measured if j.state == "ok"]
    intermittent = [j for j in measured if j.state == "intermittent"]
    failed = [j for j in measured if j.state in ("failed", "intermittent")]

    def not_measured() -> Combined:
        reason = _most_common([j.reason for j in unmeasured])
        rule = next(j.rule for j in unmeasured if j.reason == reason)
        return rule.verdict, rule.mechanism, [], rule, {}

    if mode == "any_of":
        if intermittent:  # it worked at least once: degraded, whatever else failed
            return _worst(intermittent)
        if oks:
            views = _view_results(targets, keys)
            # An endpoint that is another way to a server that worked (a name whose fixed
            # fallback address answered) is the pool doing its job, not a part of it lost.
            served = {_server(j.targets[0]) for j in oks}
            partial = [j for j in failed if j.rule.verdict in INTERFERENCE
                       and _server(j.targets[0]) not in served
                       and _helper_reached(j.targets[0], views)]  # fmt: skip
            if partial:
                rule = rules.combined_rule("pool.partial")
                counts = {"failed": len(partial), "total": len(judged)}
                deciding = [t for j in partial for t in j.targets]
                return rule.verdict, rule.mechanism, deciding, rule, counts
            return "ok", None, [t for j in oks for t in j.targets], oks[0].rule, {}
        if unmeasured:
            return not_measured()
        return _worst(failed)
    if failed:
        verdict, *rest = _worst(failed)
        if verdict != "inconclusive" or not unmeasured:
            return (verdict, *rest)  # type: ignore[return-value]
    if unmeasured:
        return not_measured()
    return "ok", None, [t for j in oks for t in j.targets], oks[0].rule, {}


def _scope(verdict: str, facts: dict[str, str] | None) -> str | None:
    """For a call path that is not ok: ``abroad`` when the same call to the domestic helper
    passed, ``all`` when it failed too, None when there was none."""
    if verdict == "ok" or facts is None or facts.get("domestic") in (None, "none"):
        return None
    return "abroad" if facts["domestic"] == "pass" else "all"


def judge(measurement: Record) -> list[Record]:
    """Verdicts for every function of the measurement's service, in catalogue order (a
    ``msgwatch_circumvention`` measurement: :func:`msgwatch.analysis.verdicts.circumvention.judge`)."""
    if measurement.get("test_name") == circumvention.TEST_NAME:
        return circumvention.judge(measurement)
    keys = measurement.get("test_keys") or {}
    token = _SCOPE.set((keys, {}))
    try:
        return _judge(measurement, keys)
    finally:
        _SCOPE.reset(token)


def _judge(measurement: Record, keys: Record) -> list[Record]:
    service = str(keys.get("msgwatch_service") or measurement.get("input") or "")
    targets = _records(keys, "msgwatch_targets")
    rules = load_rules()
    out: list[Record] = []
    for function in keys.get("msgwatch_functions") or []:
        if not isinstance(function, dict):
            continue
        name = function.get("function")
        mine = [t for t in targets if t.get("function") == name]
        judged = [
            judge_endpoint(group, keys, rules)
            for group in _attempt_groups(t for t in mine if t.get("role") != "pool_view")
        ]
        if not judged:
            continue
        mode = str(function.get("mode", "any_of"))
        endpoints = _combine(mode, [j for j in judged if _role(j) == "endpoint"], keys, mine, rules)
        facts = call_facts(mine, keys)
        call_rule: CallRule | None = None
        groups: list[Combined]
        if facts is not None:
            # Replays decide the call path; the endpoints' own verdict still counts when worse.
            call_rule = match_call(facts)
            replayed = [t for t in mine if str(t.get("role", "")).startswith(("replay_", "call_"))]
            groups = [(call_rule.verdict, call_rule.mechanism, replayed, None, {}), endpoints]
        else:
            calls = [j for j in judged if _role(j) == "call_path"]
            groups = [endpoints, _combine("any_of", calls, keys, mine, rules)]
        verdict, mechanism, deciding, rule, counts = max(
            (g for g in groups if g[0] != "none"), key=lambda g: SEVERITY[g[0]]
        )
        if rule is None:
            first = next((j for j in judged if any(t is deciding[0] for t in j.targets)), None)
            rule = first.rule if first is not None and deciding else judged[0].rule
        rule_id, confidence, explanation = rule.id, rule.confidence, rule.explain
        if counts:
            explanation = explanation.format(reason="", **counts)
        if call_rule is not None and facts is not None and verdict == call_rule.verdict:
            rule_id, confidence = call_rule.id, call_rule.confidence
            explanation = call_rule.explain
        evidence = sorted({i for t in deciding for i in _txids(t)})
        tally: dict[str, int] = {}
        for j in judged:
            tally[j.state] = tally.get(j.state, 0) + 1
        endpoint_counts = {
            "total": len(judged),
            "ok": tally.get("ok", 0),
            "failed": tally.get("failed", 0) + tally.get("intermittent", 0),
        }
        if tally.get("not_measured"):
            endpoint_counts["not_measured"] = tally["not_measured"]
        out.append(
            {
                "service": service,
                "function": name,
                "coverage": str(function.get("coverage") or "full"),
                "call_path": any(t.get("role") == "call_path" for t in mine),
                "scope": _scope(verdict, facts),
                "fallback": facts.get("fallback") if facts else None,
                "verdict": verdict,
                "mechanism": mechanism,
                "confidence": confidence,
                "rule_id": rule_id,
                "rules_version": rules.rules_version,
                "evidence": evidence,
                "endpoints": endpoint_counts,
                "explanation": explanation,
            }
        )
    return out

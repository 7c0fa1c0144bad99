"""Judge each (service, function) from a measurement, and nothing else.

The judge reads only the measurement's ``test_keys`` (the recorded trace and ``msgwatch_targets``),
never sockets or the probe's objects, so a verdict can be recomputed from a stored measurement when
the rules change. Per endpoint it derives :class:`~msgwatch.verdicts.rules.Facts` and matches the
rules; per function it combines the endpoints by the function's mode:

- ``any_of`` (a redundant pool): ``ok`` if any endpoint is ok; otherwise ``blocked`` if any endpoint
  is blocked (the mechanism is the one most endpoints show), else ``inconclusive``.
- ``all_of`` (each required): ``ok`` if all are ok; otherwise ``blocked`` if any is blocked, else
  ``inconclusive``.

The call path (STUN to the test helper on the service's call ports, role ``call_path``) is a pool of
its own, required in addition to the endpoints: calls need both their set-up and their media path,
so the function's verdict is the more severe of the two.

The evidence of a verdict is the transaction ids of the endpoints that decided it.
"""

from __future__ import annotations

import base64
import ipaddress
from collections import Counter
from typing import Any

from msgwatch.verdicts.calls import CallRule, call_facts, match_call
from msgwatch.verdicts.rules import Facts, Rule, load_rules, match, match_blockpage

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


def _in_networks(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for prefix in networks:
        try:
            if ip in ipaddress.ip_network(str(prefix), strict=False):
                return True
        except ValueError:
            continue
    return False


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
            try:
                public = ipaddress.ip_address(address).is_global
            except ValueError:
                continue
            if not public and not _in_networks(address, networks):
                return True
    return any(len(sets) > 1 for sets in seen.values())


def _records(keys: Record, name: str) -> list[Record]:
    value = keys.get(name)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


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


def facts_for(target: Record, keys: Record) -> tuple[Facts, str | None]:
    """The facts of one endpoint, and the id of the block page fingerprint it matched."""
    txids = set(_txids(target))
    queries = [q for q in _records(keys, "queries") if q.get("transaction_id") in txids]
    handshakes = [h for h in _records(keys, "tls_handshakes") if h.get("transaction_id") in txids]
    main = [h for h in handshakes if "control" not in (h.get("tags") or [])]
    control = [h for h in handshakes if "control" in (h.get("tags") or [])]
    verified = any(h.get("failure") is None and not h.get("no_tls_verify") for h in main)
    blockpage: str | None = None
    for request in _records(keys, "requests"):
        response = request.get("response")
        if request.get("transaction_id") in txids and isinstance(response, dict):
            headers = [
                (str(h[0]), str(h[1]))
                for h in response.get("headers_list") or []
                if isinstance(h, list | tuple) and len(h) == 2
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
        throttled=throttled(
            [r for r in _records(keys, "msgwatch_throughput") if r.get("transaction_id") in txids]
        ),
    )
    return facts, blockpage


def judge_target(target: Record, keys: Record) -> tuple[Rule, str | None]:
    facts, fingerprint = facts_for(target, keys)
    return match(facts), fingerprint


_SEVERITY = {"ok": 0, "inconclusive": 1, "degraded": 2, "throttled": 3, "blocked": 4}


def _combine(mode: str, judged: list[tuple[Record, Rule]]) -> tuple[str, str | None, list[Record]]:
    """One verdict for a group of endpoints (``none`` when the group is empty)."""
    if not judged:
        return "none", None, []
    oks = [t for t, r in judged if r.verdict == "ok"]
    if (mode == "any_of" and oks) or (mode == "all_of" and len(oks) == len(judged)):
        return "ok", None, oks
    # Otherwise the most severe verdict among the endpoints that are not ok, with the mechanism
    # most of those endpoints show.
    failed = [(t, r) for t, r in judged if r.verdict != "ok"]
    worst = max(_SEVERITY.get(r.verdict, 1) for _, r in failed)
    verdict = next(r.verdict for _, r in failed if _SEVERITY.get(r.verdict, 1) == worst)
    group = [(t, r) for t, r in failed if r.verdict == verdict]
    mechanism = Counter(r.mechanism for _, r in group).most_common(1)[0][0]
    return verdict, mechanism, [t for t, r in group if r.mechanism == mechanism]


def _scope(verdict: str, facts: dict[str, str] | None) -> str | None:
    """For a call path that is not ok: ``abroad`` when the same call to the domestic helper
    passed, ``all`` when it failed too, None when there was none."""
    if verdict == "ok" or facts is None or facts.get("domestic") in (None, "none"):
        return None
    return "abroad" if facts["domestic"] == "pass" else "all"


def judge(measurement: Record) -> list[Record]:
    """Verdicts for every function of the measurement's service, in catalogue order."""
    keys = measurement.get("test_keys") or {}
    service = str(keys.get("msgwatch_service") or measurement.get("input") or "")
    targets = _records(keys, "msgwatch_targets")
    rules = load_rules()
    out: list[Record] = []
    for function in keys.get("msgwatch_functions") or []:
        if not isinstance(function, dict):
            continue
        name = function.get("function")
        mine = [t for t in targets if t.get("function") == name]
        judged = [(t, judge_target(t, keys)[0]) for t in mine]
        if not judged:
            continue
        mode = str(function.get("mode", "any_of"))
        endpoints = _combine(
            mode, [(t, r) for t, r in judged if t.get("role", "endpoint") == "endpoint"]
        )
        facts = call_facts(mine, keys)
        call_rule: CallRule | None = None
        if facts is not None:
            # Replays decide the call path; the endpoints' own verdict still counts when worse.
            call_rule = match_call(facts)
            replayed = [t for t in mine if str(t.get("role", "")).startswith(("replay_", "call_"))]
            call = (call_rule.verdict, call_rule.mechanism, replayed)
            groups = [call, endpoints]
        else:
            groups = [
                endpoints,
                _combine("any_of", [(t, r) for t, r in judged if t.get("role") == "call_path"]),
            ]
        verdict, mechanism, deciding = max(
            (g for g in groups if g[0] != "none"), key=lambda g: _SEVERITY[g[0]]
        )
        rule = next(r for t, r in judged if t is deciding[0]) if deciding else judged[0][1]
        rule_id, confidence, explanation = rule.id, rule.confidence, rule.explain
        if call_rule is not None and facts is not None and verdict == call_rule.verdict:
            rule_id, confidence = call_rule.id, call_rule.confidence
            explanation = call_rule.explain
        evidence = sorted({i for t in deciding for i in _txids(t)})
        ok_count = sum(1 for _, r in judged if r.verdict == "ok")
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
                "endpoints": {
                    "total": len(judged),
                    "ok": ok_count,
                    "failed": len(judged) - ok_count,
                },
                "explanation": explanation,
            }
        )
    return out

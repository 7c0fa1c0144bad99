"""OONI's tests onto msgwatch's (service, function, verdict, mechanism), OONI's anomaly kept beside.

======================================  ============================  ===========================
OONI test                               service / function            verdict from
======================================  ============================  ===========================
``whatsapp``                            whatsapp text, web,           :mod:`msgwatch.analysis.ooni`
                                        registration
``telegram``                            telegram text, web            (the status keys and the
``signal``                              signal text                   ``*_blocking`` flags)
``facebook_messenger``                  facebook_messenger text
``web_connectivity``                    the catalogue service whose   ``blocking``
                                        ``web`` hosts hold the input
``stun_reachability``,                  the catalogue service whose   ``failure``
``stunreachability``                    STUN/TURN server it is (each
                                        function using it), else
                                        ``stun`` / ``reachability``
``tor``                                 tor / reachability            ``targets[].failure``
``vanilla_tor``, ``torsf``,             the test's name / bootstrap   ``failure``, ``success``,
``openvpn``, ``psiphon``, ``riseupvpn``                               ``api_status``
======================================  ============================  ===========================

Rules:

- A function OONI could not judge (its key null or missing) is ``inconclusive``.
- A failure string is a mechanism ``<step>.<kind>`` as msgwatch's rules name them: the step from
  the string (``dns_*`` → dns, ``ssl_*`` → tls) or the function's (web → http, else tcp), the kind
  ``reset``, ``refused``, ``timeout``, ``nxdomain``, ``cert_invalid`` or ``other``; a blocking flag
  (``telegram_tcp_blocking``) gives its step (``tcp.blocked``); web_connectivity's ``blocking``
  gives ``dns.blocked``, ``tcp.blocked``, ``http.failure`` or ``http.diff``.
- ``ooni_anomaly`` is OONI's own flag as its fastpath reads it: the function's status ``blocked``
  or a blocking flag true, ``blocking`` not false/null, ``failure`` not null (tor: any target's);
  None when OONI said nothing.
- ``evidence`` is the list of OONI's keys the verdict was read from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from msgwatch.analysis import ooni
from msgwatch.analysis.transform.base import entries, text
from msgwatch.catalogue import load_catalogue

CIRCUMVENTION = ("vanilla_tor", "torsf", "openvpn", "psiphon", "riseupvpn")
STUN_TESTS = ("stun_reachability", "stunreachability")
TESTS = frozenset((*ooni.TESTS, "web_connectivity", *STUN_TESTS, "tor", *CIRCUMVENTION))
"""Every OONI test the analysis reads."""


@dataclass(frozen=True)
class Mapped:
    """One (service, function) judged from an OONI test's keys."""

    service: str
    function: str
    verdict: str
    mechanism: str | None
    confidence: float
    rule_id: str
    evidence: tuple[str, ...]
    ooni_anomaly: bool | None


_KINDS = (
    ("nxdomain", "nxdomain"),
    ("reset", "reset"),
    ("eof", "reset"),
    ("refused", "refused"),
    ("timeout", "timeout"),
    ("ssl_invalid", "cert_invalid"),
    ("certificate", "cert_invalid"),
)


def mechanism(failure: Any, step: str) -> str | None:
    """``<step>.<kind>`` for an OONI failure string (None for no failure)."""
    if not isinstance(failure, str) or not failure:
        return None
    if failure.startswith("dns_") or "nxdomain" in failure:
        step = "dns"
    elif failure.startswith("ssl_"):
        step = "tls"
    kind = next((k for needle, k in _KINDS if needle in failure), "other")
    return f"{step}.{kind}"


def _confidence(mech: str | None) -> float:
    return 0.5 if mech is None or mech.endswith((".timeout", ".other")) else 0.7


def _messenger(test: str, keys: dict[str, Any]) -> list[Mapped]:
    facts = {f.function: f for f in ooni.facts({"test_name": test, "test_keys": keys})}
    out = []
    for check in ooni.TESTS[test]:
        used = tuple(k for k in (check.status, check.failure, *check.flags) if k)
        fact = facts.get(check.function)
        if fact is None:
            out.append(_unknown(test, check.function, used))
            continue
        step = "http" if check.function == "web" else "tcp"
        mech = None
        if fact.mechanism is not None and fact.mechanism in check.flags:
            mech = fact.mechanism.split("_")[1] + ".blocked"
        elif fact.mechanism is not None:
            mech = mechanism(fact.mechanism, step)
        blocked = fact.verdict == "blocked"
        confidence = _confidence(mech) if blocked else 0.7
        rule = f"ooni.{test}.{check.function}.{fact.verdict}"
        out.append(
            Mapped(test, check.function, fact.verdict, mech, confidence, rule, used, blocked)
        )
    return out


def _unknown(service: str, function: str, used: tuple[str, ...]) -> Mapped:
    rule = f"ooni.{service}.{function}.unknown"
    return Mapped(service, function, "inconclusive", None, 0.0, rule, used, None)


def _failed(service: str, function: str, fail: Any, used: tuple[str, ...], step: str) -> Mapped:
    """ok without a failure, blocked with one."""
    if fail is None:
        return Mapped(service, function, "ok", None, 0.6, f"ooni.{service}.ok", used, False)
    mech = mechanism(fail, step) or f"{step}.other"
    rule = f"ooni.{service}.failure"
    return Mapped(service, function, "blocked", mech, _confidence(mech), rule, used, True)


@lru_cache(maxsize=1)
def _catalogue() -> tuple[dict[str, str], dict[tuple[str, int], list[tuple[str, str]]]]:
    """(web host → service, (STUN/TURN host, port) → [(service, function)]) of the shipped
    catalogue."""
    web: dict[str, str] = {}
    stun: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for service in load_catalogue().services:
        for function in service.functions:
            for endpoint in function.endpoints:
                host = endpoint.host or endpoint.address
                if host is None:
                    continue
                if function.function == "web":
                    web.setdefault(_bare(host), service.id)
                if endpoint.protocol in ("stun", "turn"):
                    places = stun.setdefault((host.lower(), endpoint.port), [])
                    if (service.id, function.function) not in places:
                        places.append((service.id, function.function))
    return web, stun


def _bare(host: str) -> str:
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _host(value: Any) -> str | None:
    url = text(value, 2048)
    if not url:
        return None
    try:
        return urlsplit(url if "://" in url else f"//{url}").hostname
    except ValueError:
        return None


_WEB_BLOCKING = {"dns": "dns.blocked", "tcp_ip": "tcp.blocked", "http-failure": "http.failure",
                 "http-diff": "http.diff"}  # fmt: skip


def web_service(input_: Any) -> str | None:
    """The catalogue service whose web host is ``input_``'s host."""
    host = _host(input_)
    return _catalogue()[0].get(_bare(host)) if host else None


def _web(service: str, keys: dict[str, Any]) -> Mapped:
    blocking = keys.get("blocking")
    used = ("blocking", "accessible")
    if blocking is False:
        return Mapped(service, "web", "ok", None, 0.7, "ooni.web_connectivity.ok", used, False)
    mech = _WEB_BLOCKING.get(blocking) if isinstance(blocking, str) else None
    if mech is None:
        return _unknown(service, "web", used)
    confidence = 0.4 if mech == "http.diff" else 0.7
    rule = f"ooni.web_connectivity.{mech}"
    return Mapped(service, "web", "blocked", mech, confidence, rule, used, True)


def _stun(keys: dict[str, Any], input_: Any) -> list[Mapped]:
    endpoint = text(keys.get("endpoint")) or text(input_) or ""
    try:
        parsed = urlsplit(endpoint if "://" in endpoint else f"stun://{endpoint}")
        where = ((parsed.hostname or "").lower(), parsed.port or 3478)
    except ValueError:
        where = ("", 0)
    places = _catalogue()[1].get(where) or [("stun", "reachability")]
    fail = keys.get("failure")
    fail = fail if isinstance(fail, str) or fail is None else "unknown_failure"
    return [_failed(s, f, fail, ("failure",), "udp") for s, f in places]


def _tor(keys: dict[str, Any]) -> Mapped:
    targets = keys.get("targets")
    found = entries(list(targets.values()) if isinstance(targets, dict) else targets)
    used = ("targets",)
    if not found:
        return _unknown("tor", "reachability", used)
    failures = [t.get("failure") for t in found]
    anomaly = any(f is not None for f in failures)
    if any(f is None for f in failures):
        return Mapped("tor", "reachability", "ok", None, 0.6, "ooni.tor.ok", used, anomaly)
    mech = mechanism(next(f for f in failures if isinstance(f, str)), "tcp") if failures else None
    mech = mech or "tcp.other"
    return Mapped("tor", "reachability", "blocked", mech, _confidence(mech), "ooni.tor.failure",
                  used, True)  # fmt: skip


def _circumvention(test: str, keys: dict[str, Any]) -> Mapped:
    fail = keys.get("failure")
    if test == "riseupvpn" and keys.get("api_status") == "blocked":
        fail = fail or keys.get("api_failure") or "api_blocked"
    if fail is None and keys.get("success") is False:
        fail = keys.get("error") or "bootstrap_failed"
    used = ("failure", "success", "api_status") if test == "riseupvpn" else ("failure", "success")
    return _failed(test, "bootstrap", fail if isinstance(fail, str) else None, used, "tunnel")


def read(test: str, keys: dict[str, Any], input_: Any) -> list[Mapped] | str:
    """The (service, function) verdicts of an OONI test, or the reason it gives none."""
    if test in ooni.TESTS:
        return _messenger(test, keys)
    if test == "web_connectivity":
        service = web_service(input_)
        return [_web(service, keys)] if service else "not_a_catalogue_domain"
    if test in STUN_TESTS:
        return _stun(keys, input_)
    if test == "tor":
        return [_tor(keys)]
    if test in CIRCUMVENTION:
        return [_circumvention(test, keys)]
    return "unknown_test"


def service_of(test: str, input_: Any) -> str | None:
    """The service an OONI test's observations belong to (None for an unread test)."""
    if test == "web_connectivity":
        return web_service(input_)
    if test in STUN_TESTS:
        return None
    return test if test in TESTS else None

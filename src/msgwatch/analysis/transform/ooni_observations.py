"""Observation rows of OONI's tests: their df-00x traces, tor's targets, the bootstrap of a tunnel.

- ``queries``, ``tcp_connect``, ``tls_handshakes``, ``requests`` (top level, and
  ``tcp_connect`` given as one object as openvpn writes it) give rows as msgwatch's do
  (:mod:`~msgwatch.analysis.transform.trace`), with the test's service and, when the test covers
  one function only, that function.
- ``tor``: each of ``targets`` gives its own trace rows (target = the target's name, role = its
  ``target_protocol``) and one ``bootstrap`` row with its failure.
- ``vanilla_tor``, ``torsf``, ``openvpn``, ``psiphon``, ``riseupvpn``: one ``bootstrap`` row
  (failure, ``t`` = ``bootstrap_time``); STUN tests: one ``stun`` row for the endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from msgwatch.analysis.transform import trace
from msgwatch.analysis.transform.base import Envelope, Row, jtext, number, observation, text
from msgwatch.analysis.transform.ooni_map import CIRCUMVENTION, STUN_TESTS, Mapped
from msgwatch.analysis.transform.trace import constant, failure, place


def observations(env: Envelope, test: str, mapped: list[Mapped]) -> Iterator[Row]:
    """The observation rows of an OONI measurement whose verdicts are ``mapped``."""
    functions = {m.function for m in mapped}
    service = mapped[0].service if mapped else None
    function = next(iter(functions)) if len(functions) == 1 else None
    yield from trace.rows(env.keys, constant([place(service, function, text(env.input))]))
    if test == "tor":
        yield from tor_targets(env, service, function)
    elif test in CIRCUMVENTION:
        yield _bootstrap(env, env.keys, service, function, None, None)
    elif test in STUN_TESTS:
        endpoint = text(env.keys.get("endpoint")) or text(env.input)
        yield observation(
            service, function, kind="stun", target=endpoint, transport="udp",
            failure=failure(env.keys.get("failure")),
        )  # fmt: skip


def tor_targets(env: Envelope, service: str | None, function: str | None) -> Iterator[Row]:
    """Each of OONI's ``tor`` ``targets`` (also msgwatch's ``tor_reach``): its trace rows and a
    ``bootstrap`` row (target = its name, role = its protocol)."""
    targets = env.keys.get("targets")
    if isinstance(targets, list):
        targets = {str(i): t for i, t in enumerate(targets[:256])}
    if not isinstance(targets, dict):
        return
    for name, target in list(targets.items())[:256]:
        if not isinstance(target, dict):
            continue
        name = target.get("target_name") or name
        role = text(target.get("target_protocol"), 32)
        where = [place(service, function, text(name, 256), role)]
        yield from trace.rows(target, constant(where))
        yield _bootstrap(env, target, service, function, text(name, 256), role)


def _bootstrap(
    env: Envelope,
    keys: dict[str, Any],
    service: str | None,
    function: str | None,
    target: str | None,
    role: str | None,
) -> Row:
    detail = {
        name: keys[name]
        for name in ("tor_progress", "transport_name", "success", "api_status", "target_address")
        if isinstance(keys.get(name), (str, int, bool))
    }
    fail = keys.get("failure")
    return observation(
        service, function, kind="bootstrap", target=target or text(env.input), role=role,
        failure=failure(fail) if fail is not None else None,
        t=number(keys.get("bootstrap_time")), detail=jtext(detail),
    )  # fmt: skip

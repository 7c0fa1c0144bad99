"""Observation rows of msgwatch's circumvention test (``msgwatch_circumvention``,
docs/spec/ts-msgwatch-circumvention.md).

Every row's ``service`` is the entry's name (``tor``, ``openvpn-udp``, a user's own name), as the
judge's verdict rows have it; ``target`` is the entry's name too unless a row says otherwise.

- The probe's own trace (``queries``, ``tcp_connect``, ``tls_handshakes``, ``requests``): function
  ``tunnel`` (``reachability`` for ``tor_reach``).
- One ``stage`` row per entry of ``stages`` (at most :data:`MAX_STAGES`): ``role`` the stage
  (``resolve`` … ``sustain``), ``t0``/``t``/``failure`` as recorded, ``transport`` the entry's
  protocol, ``bytes_sent``/``bytes_received`` and ``throughput_kbps`` (the echo's rate) for
  ``transfer`` and ``sustain``, ``detail`` the stage's details the judge relies on.
- One ``bootstrap`` row, as OONI's tunnel tests give: ``t`` the ``bootstrap_time``, ``failure``
  the measurement's, ``detail`` its transport name, Tor's progress and ``success``.
- ``tor_reach``: each of ``targets`` gives its trace rows and a ``bootstrap`` row (``target`` the
  target's name, ``role`` its protocol), as OONI's ``tor`` test does.
- Each measured ``through`` item: its TLS handshake, app opening and replays as rows of function
  ``<service>.<function>`` (``whatsapp.voice``), the judge's name for that row.

An entry's scrubbed values stay scrubbed: nothing here reads ``params``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from msgwatch.analysis.transform import trace
from msgwatch.analysis.transform.base import (
    Envelope,
    Row,
    entries,
    integer,
    jtext,
    number,
    observation,
    small,
    text,
)
from msgwatch.analysis.transform.msgwatch import records
from msgwatch.analysis.transform.ooni_observations import tor_targets
from msgwatch.analysis.transform.trace import constant, failure, place

MAX_STAGES: Final = 16
"""Stage entries read (a real measurement has at most six)."""
MAX_THROUGH: Final = 64
_STAGE_DETAIL: Final = ("budget", "progress", "progress_tag", "progress_age", "accessible",
                        "stalled_at", "seconds", "idle", "rate")  # fmt: skip


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def entry_name(env: Envelope) -> str | None:
    """The entry's name: ``entry.name``, else the measurement's input."""
    entry = env.keys.get("entry")
    name = text(entry.get("name"), 64) if isinstance(entry, dict) else None
    return name or text(env.input, 64)


def observations(env: Envelope) -> Iterator[Row]:
    """The observation rows of a ``msgwatch_circumvention`` measurement."""
    keys = env.keys
    service = entry_name(env)
    function = "reachability" if keys.get("transport") == "tor_reach" else "tunnel"
    entry = _dict(keys.get("entry"))
    protocol = text(entry.get("protocol"), 16)
    address = text(entry.get("address"), 128)
    port = small(entry.get("port"))
    yield from trace.rows(keys, constant([place(service, function, service)]))
    for stage in entries(keys.get("stages"))[:MAX_STAGES]:
        yield _stage(service, function, stage, protocol)
    yield _bootstrap(keys, service, function, service, None, address, port)
    if function == "reachability":
        yield from tor_targets(env, service, function)
    for item in entries(keys.get("through"))[:MAX_THROUGH]:
        yield from _through(service, item)


def _stage(service: str | None, function: str, stage: dict[str, Any], protocol: str | None) -> Row:
    detail = {k: stage[k] for k in _STAGE_DETAIL if isinstance(stage.get(k), (int, float, str))}
    rate = number(stage.get("echo_rate"))
    return observation(
        service, function, kind="stage", target=service, role=text(stage.get("stage"), 32),
        transport=protocol, t0=number(stage.get("t0")), t=number(stage.get("t")),
        failure=failure(stage.get("failure")), bytes_sent=integer(stage.get("bytes_sent")),
        bytes_received=integer(stage.get("bytes_received")),
        throughput_kbps=rate * 8 / 1000 if rate is not None else None, detail=jtext(detail),
    )  # fmt: skip


def _bootstrap(
    keys: dict[str, Any],
    service: str | None,
    function: str,
    target: str | None,
    role: str | None,
    address: str | None = None,
    port: int | None = None,
) -> Row:
    detail = {
        name: keys[name]
        for name in ("transport_name", "tor_progress", "success", "failed_stage",
                     "target_address")
        if isinstance(keys.get(name), (str, int, bool))
    }  # fmt: skip
    return observation(
        service, function, kind="bootstrap", target=target, role=role, ip=address, port=port,
        failure=failure(keys.get("failure")), t=number(keys.get("bootstrap_time")),
        detail=jtext(detail),
    )  # fmt: skip


def _through(service: str | None, item: dict[str, Any]) -> Iterator[Row]:
    if item.get("measured") is not True:
        return
    name, fn = text(item.get("service"), 32), text(item.get("function"), 32)
    if not name or not fn:
        return
    target = _dict(item.get("target"))
    where = constant([place(service, f"{name}.{fn}", text(target.get("endpoint"), 256) or name)])
    found = {
        "tls_handshakes": entries(item.get("tls")),
        "msgwatch_app_handshakes": entries(item.get("app")),
        "msgwatch_replays": entries(item.get("replays")),
    }
    yield from records(found, where)

"""One circumvention entry's test as a measurement (``docs/spec/ts-msgwatch-circumvention.md``).

:func:`build` turns a finished :class:`~msgwatch.circumvention.model.Run` into the OONI envelope
the same way the service test's runner does (:func:`msgwatch.measurement.envelope.build_measurement`,
then the test's own name, version and extensions), and scrubs it.

Rules:

- The entry's params (keys, passwords, certificates, bridge lines) never enter the measurement:
  ``entry`` is built from the entry's public fields only, and the transports' own keys are copied
  only when the spec names them (:data:`TRANSPORT_KEYS`), never ``params``.
- A private entry (a user's own endpoint) is scrubbed like the probe's own address
  (:func:`private_addresses`): its address, every address its name resolved to (the ``resolve``
  stage's queries), every address the transport resolved or contacted for it
  (``run.endpoint_addresses``) and, for ``tor_reach``, every target's address become
  ``[scrubbed]`` in every string; then the port beside a scrubbed address goes too
  (:func:`scrub_ports`: ``[scrubbed]:1194`` → ``[scrubbed]``, a ``port`` number next to a
  scrubbed ``ip``/``address``/``endpoint`` → 0), ``entry.port`` is null, and a ``tor_reach``
  entry's target ids (hashes of ``ip:port``) become ``scrubbed-<n>``.
- Bounded: ``tor_logs`` at most :data:`MAX_LOG_LINES` lines of :data:`MAX_LOG_CHARS` characters,
  ``through`` at most :data:`MAX_THROUGH` items, ``targets`` at most :data:`MAX_TARGETS`.
- It never raises for odd content in ``run.keys``: what does not have the spec's type is left out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from msgwatch.circumvention.model import Context, Entry, Run
from msgwatch.measurement.circumvention import (
    EXTENSIONS,
    TEST_NAME,
    TEST_VERSION,
    TRANSPORT_NAMES,
)
from msgwatch.measurement.envelope import RunInfo, build_measurement
from msgwatch.measurement.scrub import SCRUBBED, scrub

__all__ = ["TEST_NAME", "TEST_VERSION", "build", "test_keys"]

MAX_LOG_LINES = 200
MAX_LOG_CHARS = 512
MAX_THROUGH = 64
MAX_TARGETS = 256
TRANSPORT_KEYS: Mapping[str, type | tuple[type, ...]] = {
    "tor_progress": int, "tor_progress_tag": str, "tor_progress_summary": str,
    "tor_version": str, "timeout": (int, float), "targets": dict,
    "dir_port_total": int, "dir_port_accessible": int, "or_port_total": int,
    "or_port_accessible": int, "or_port_dirauth_total": int, "or_port_dirauth_accessible": int,
    "obfs4_total": int, "obfs4_accessible": int, "openvpn_handshake": list, "tunnel": str,
    "probe_lag": dict, "wireguard_handshake": dict, "udp_associate": dict,
}  # fmt: skip
"""``run.keys`` copied into ``test_keys`` when they have the spec's type (``tor_logs`` and
``through`` are copied bounded, ``control`` checked; ``error`` is written for Tor's types)."""
TOR_TYPES = ("tor", "obfs4")
BOOTSTRAP_STAGES = ("resolve", "connect", "handshake", "tunnel")
TIMEOUT_REACHED = "timeout-reached"
"""OONI ``vanilla_tor``'s ``error`` when the bootstrap ran out of time."""
ADDRESS_KEYS = ("ip", "address", "endpoint", "target_address")
"""Keys whose scrubbed value takes the ``port`` beside it (:func:`scrub_ports`)."""
_PORT_AFTER = re.compile(r"\[?\[scrubbed\]\]?:\d{1,5}(?!\d)")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def entry_info(entry: Entry) -> dict[str, Any]:
    """The spec's ``entry``: public fields only, scrubbed when private."""
    return {
        "name": entry.name,
        "type": entry.type,
        "address": SCRUBBED if entry.private else entry.address,
        "port": None if entry.private else entry.port,
        "protocol": entry.protocol,
        "source": entry.source,
        "private": entry.private,
    }


def private_addresses(
    entry: Entry, queries: Iterable[Any], contacted: Iterable[str] = ()
) -> set[str]:
    """What to scrub for a private entry: its address, every address its name resolved to,
    those the transport resolved or contacted for it (``contacted``:
    ``run.endpoint_addresses``) and a ``tor_reach`` entry's target addresses."""
    if not entry.private:
        return set()
    found = {entry.address} | {a for a in contacted if isinstance(a, str) and a}
    targets = entry.params.get("targets") if entry.type == "tor_reach" else None
    for target in targets if isinstance(targets, list) else []:
        address = target.get("address") if isinstance(target, Mapping) else None
        if isinstance(address, str) and address:
            found.add(address)
    if _is_ip(entry.address):
        return found
    for query in queries:
        if not isinstance(query, dict) or query.get("hostname") != entry.address:
            continue
        for answer in query.get("answers") or []:
            if isinstance(answer, dict):
                for key in ("ipv4", "ipv6"):
                    value = answer.get(key)
                    if isinstance(value, str) and _is_ip(value):
                        found.add(value)
    return found


def scrub_ports(value: Any) -> Any:
    """A copy of ``value`` (JSON-like, already scrubbed of addresses) without the ports beside
    a scrubbed address (module notes)."""
    if isinstance(value, str):
        return _PORT_AFTER.sub(SCRUBBED, value)
    if isinstance(value, list):
        return [scrub_ports(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: scrub_ports(v) for k, v in value.items()}
    port = out.get("port")
    beside = any(isinstance(out.get(k), str) and SCRUBBED in out[k] for k in ADDRESS_KEYS)
    if beside and isinstance(port, int) and not isinstance(port, bool):
        out["port"] = 0
    return out


def _bootstrap_time(run: Run) -> float:
    tunnel = next((s for s in run.stages if s.stage == "tunnel"), None)
    if tunnel is None or tunnel.failure is not None or tunnel.t is None or not run.stages:
        return 0.0
    return round(max(0.0, tunnel.t - run.stages[0].t0), 6)


def _success(run: Run) -> bool:
    if run.failed_stage is not None:
        return False
    return any(s.stage == "tunnel" for s in run.stages)


def _through(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [dict(item) for item in value[:MAX_THROUGH] if isinstance(item, dict)]


def _tor_error(run: Run) -> str | None:
    """OONI ``vanilla_tor``'s ``error``, of the bootstrap (the stages up to ``tunnel``): null
    when none of them failed, ``timeout-reached`` when one ran out of time, else its failure."""
    failure = next((s.failure for s in run.stages if s.failure is not None
                    and s.stage in BOOTSTRAP_STAGES), None)  # fmt: skip
    return TIMEOUT_REACHED if failure == "generic_timeout_error" else failure


def _control(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not {"helper", "port", "failure", "t0", "t"} <= set(value):
        return None
    return dict(value)


def test_keys(run: Run, ctx: Context) -> dict[str, Any]:
    """The measurement's ``test_keys`` from ``run`` (unscrubbed)."""
    trace = run.trace.test_keys()
    keys: dict[str, Any] = {
        name: trace[name]
        for name in ("queries", "tcp_connect", "tls_handshakes", "requests", "network_events")
    }
    keys.update(
        transport=run.entry.type,
        transport_name=TRANSPORT_NAMES.get(run.entry.type, run.entry.type),
        entry=entry_info(run.entry),
        stages=[s.as_dict() for s in run.stages],
        failed_stage=run.failed_stage,
        failure=run.failure,
        success=_success(run),
        bootstrap_time=_bootstrap_time(run),
        budget=ctx.budget(run.entry.type),
        control=_control(run.keys.get("control")),
        through=_through(run.keys.get("through")),
        msgwatch_dropped_events=trace["msgwatch_dropped_events"],
        msgwatch_bytes=trace["msgwatch_bytes"],
    )
    for name, kind in TRANSPORT_KEYS.items():
        value = run.keys.get(name)
        if isinstance(value, kind) and not isinstance(value, bool):
            keys[name] = value
    if isinstance(keys.get("targets"), dict) and len(keys["targets"]) > MAX_TARGETS:
        keys["targets"] = dict(list(keys["targets"].items())[:MAX_TARGETS])
    logs = run.keys.get("tor_logs")
    if isinstance(logs, list):
        keys["tor_logs"] = [str(line)[:MAX_LOG_CHARS] for line in logs[-MAX_LOG_LINES:]]
    if run.entry.type in TOR_TYPES:
        keys["error"] = _tor_error(run)
    return keys


def build(
    run: Run,
    entry: Entry,
    ctx: Context,
    started: dt.datetime,
    *,
    info: RunInfo | None = None,
    probe_addresses: Iterable[str] = (),
) -> dict[str, Any]:
    """The whole measurement of ``entry``'s test, scrubbed of the probe's addresses (those of
    ``run.trace`` and ``probe_addresses``) and, for a private entry, of its own."""
    info = info or RunInfo.new(now=started)
    keys = test_keys(run, ctx)
    hidden = set(run.trace.probe_addresses) | set(probe_addresses)
    measurement = build_measurement(
        info,
        service_id=entry.name,
        start=started,
        runtime=max((s.t for s in run.stages if s.t is not None), default=0.0),
        test_keys=keys,
        probe_addresses=hidden,
    )
    measurement["test_name"], measurement["test_version"] = TEST_NAME, TEST_VERSION
    measurement["extensions"] = dict(EXTENSIONS)
    private = private_addresses(entry, keys["queries"], run.endpoint_addresses)
    if private:
        measurement = scrub_ports(scrub(measurement, private))
        # The entry's name is the measurement's input: it stays; a host name scrubbed out of it
        # would not be, so the name is never the address (the loader's rule for user entries).
        measurement["input"] = entry.name
        keys = measurement["test_keys"]
        keys["entry"]["name"] = entry.name
        if isinstance(keys.get("targets"), dict):  # ids hash ip:port: guessable
            keys["targets"] = {f"scrubbed-{i}": t for i, t in enumerate(keys["targets"].values())}
    return measurement

"""What goes through a tunnel once it is up: each asked service's text path and its calls.

Each result is one record of ``run.keys["through"]`` (the spec's ``through[]``)::

    {"service": "whatsapp", "function": "text", "measured": true, "failure": null,
     "failed_step": null, "resolved_outside": false,
     "target": {"endpoint", "host", "port", "protocol", "address", "resolved_outside"} | null,
     "tls": <df-006 record> | null, "app": <app handshake record> | null}
    {"service": "whatsapp", "function": "voice", "measured": true, "failure": null,
     "replays": [<replay_original record>, <replay_control record>]}

- **Text**: the first endpoint of the service's ``text`` function whose protocol can be tested
  through a stream (:data:`TEXT_PROTOCOLS`), connected through :meth:`Tunnel.open_stream`: for
  ``tls``/``https`` a TLS handshake with the endpoint's host name as SNI, verified against
  ``ctx.ca_bundle`` (the ``tls`` record, as :mod:`msgwatch.steps.tls` records it); for
  ``whatsapp_chat``/``mtproto`` the application's opening (:mod:`msgwatch.steps.app`); for
  ``tcp`` the connection alone. An endpoint with a host and no address is resolved first,
  outside the tunnel (``ctx.resolver`` or the system's; ``resolved_outside`` says so, on the
  record and its ``target``): tunnels carry streams to addresses, not names. ``failed_step``
  says where a failure happened: ``resolve`` (outside the tunnel: the direct path's DNS, not the
  tunnel's), ``connect`` (the stream through the tunnel), ``tls`` or ``app`` (the exchange).
- **Calls**, when the tunnel carries UDP: for each ``voice``/``video`` function with call
  ports, one round of the step-3 replay (:mod:`msgwatch.probe.calls`): the original profile and
  its bit-inverted control, one after the other in an order drawn from the seed, each
  ``call_seconds`` long, to the helper's echo on the function's first call port, through
  :meth:`Tunnel.open_udp` (the replay's ``open_udp`` hook). The records are the replays' own
  (roles ``replay_original`` and ``replay_control``). The helper sees the tunnel's exit, not
  the probe's port, so its own counts are not asked for.
- A tunnel that does not carry UDP gives its call functions ``measured: false`` with
  ``reason: "no_udp"``; a tunnel that did not come up gives every record ``measured: false``
  with the failed stage as ``reason`` (:func:`not_measured`).

Nothing here raises for what the network does: every failure is a record's ``failure``. Each
record is appended to ``out`` (when given) as soon as it is done, so that a runner that cuts
the work short keeps what was measured.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

from msgwatch import failures as F
from msgwatch.circumvention.model import Context, Tunnel
from msgwatch.steps import lag
from msgwatch.steps.app import mtproto_handshake, whatsapp_hello
from msgwatch.steps.dns import resolve
from msgwatch.steps.net import UDPSocket
from msgwatch.steps.replay import GRACE, ReplayOptions, replay
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from msgwatch.wire.packets import STUN_COOKIE_BYTES


class Endpoint(Protocol):
    """What is read of a catalogue endpoint (:class:`msgwatch.catalogue.Endpoint`; this package
    does not import the catalogue, which imports it)."""

    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def port(self) -> int: ...
    @property
    def transport(self) -> str: ...
    @property
    def protocol(self) -> str: ...


class Targets(Protocol):
    """What is read of a service's function (:class:`msgwatch.catalogue.FunctionTargets`)."""

    @property
    def endpoints(self) -> Sequence[Endpoint]: ...
    @property
    def call_ports(self) -> Sequence[int]: ...


class Service(Protocol):
    """What is read of a service (:class:`msgwatch.catalogue.Service`)."""

    @property
    def id(self) -> str: ...
    def function(self, name: str) -> Targets | None: ...


TEXT_PROTOCOLS = ("tls", "https", "whatsapp_chat", "mtproto", "tcp")
"""Protocols of a text endpoint that a stream through a tunnel can test, in order of
preference (a TLS handshake first: what the brief's text path is)."""
TEXT_SECONDS = 8.0
"""At most this long for one service's text path (resolution included)."""
CALL_SECONDS = 2.0
"""Seconds of each replay through a tunnel (a short round: original and control)."""
CALL_FUNCTIONS = ("voice", "video")
LOST = 0.5
"""A replay that lost more than this failed (mirrors ``msgwatch.analysis.rounds.LOST``)."""
MARKERS: dict[str, C.Marker] = {
    "whatsapp": "whatsapp", "teams": "teams", "skype": "teams", "zoom": "zoom",
    "telegram": "telegram", "discord": "discord", "viber": "viber",
    "facebook_messenger": "messenger", "signal": "signal",
}  # fmt: skip
"""Each service's call marker (mirrors ``msgwatch.probe.calls.MARKERS``: this package imports
neither the probe nor the catalogue, which import it; tests/circumvention checks the copies)."""


def call_functions(service: Service) -> list[str]:
    """The service's call functions that have call ports (what :func:`calls` replays)."""
    out = []
    for name in CALL_FUNCTIONS:
        function = service.function(name)
        if function is not None and function.call_ports:
            out.append(name)
    return out


def replay_seconds(call_seconds: float = CALL_SECONDS) -> float:
    """Seconds one replay through a tunnel may take (:func:`_replay`'s deadline)."""
    return call_seconds + GRACE + 1.0


def budget(services: Sequence[Service], call_seconds: float = CALL_SECONDS) -> float:
    """Seconds everything through one tunnel may take for ``services``: each text path, and
    each call function's two replays, with a second of margin for each."""
    per_call = 2 * replay_seconds(call_seconds) + 1.0
    return sum(TEXT_SECONDS + 1.0 + per_call * len(call_functions(s)) for s in services)


def not_measured(services: Sequence[Service], reason: str) -> list[dict[str, Any]]:
    """The records of a tunnel that did not come up: nothing went through it."""
    return [
        {"service": s.id, "function": f, "measured": False, "failure": None, "reason": reason}
        for s in services
        for f in ("text", *call_functions(s))
    ]


async def through(
    tunnel: Tunnel, trace: Trace, services: Sequence[Service], ctx: Context, *,
    call_seconds: float = CALL_SECONDS, seed: int = 0, out: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every service's text path, then its calls, one after the other (module notes); the
    records, appended to ``out`` as they are done when it is given."""
    loop = asyncio.get_running_loop()
    out = [] if out is None else out
    for service in services:
        out.append(await text_path(tunnel, trace, service, ctx, loop.time() + TEXT_SECONDS))
        for name in call_functions(service):
            if not tunnel.carries_udp:
                out.append({"service": service.id, "function": name, "measured": False,
                            "failure": None, "reason": "no_udp"})  # fmt: skip
                continue
            out.append(await calls(tunnel, trace, service, name, ctx, call_seconds, seed))
    return out


def text_endpoint(service: Service) -> Endpoint | None:
    """The text endpoint to test through a tunnel (module notes), None when there is none."""
    function = service.function("text")
    if function is None:
        return None
    for protocol in TEXT_PROTOCOLS:
        for endpoint in function.endpoints:
            if endpoint.protocol == protocol and endpoint.transport == "tcp":
                return endpoint
    return None


async def _address(
    trace: Trace, endpoint: Endpoint, ctx: Context, deadline: float, target: dict[str, Any]
) -> str | None:
    if endpoint.address:
        return endpoint.address
    assert endpoint.host is not None
    target["resolved_outside"] = True
    server = None
    if ctx.resolver:
        host, _, port = ctx.resolver.rpartition(":")
        server = (host.strip("[]"), int(port or 53))
    found = await resolve(trace, trace.new_transaction(), endpoint.host, server, deadline)
    if not found.addresses:
        target["failure"] = found.failure or F.DNS_NO_ANSWER
        return None
    return found.addresses[0]


async def text_path(
    tunnel: Tunnel, trace: Trace, service: Service, ctx: Context, deadline: float
) -> dict[str, Any]:
    """One service's text path through ``tunnel``; never raises, never outlasts ``deadline``
    by more than a second."""
    record: dict[str, Any] = {"service": service.id, "function": "text", "measured": True,
                              "failure": None, "failed_step": None, "resolved_outside": False,
                              "target": None, "tls": None, "app": None}  # fmt: skip
    endpoint = text_endpoint(service)
    if endpoint is None:
        record.update(measured=False, reason="no_text_endpoint")
        return record
    target: dict[str, Any] = {"endpoint": endpoint.id, "host": endpoint.host,
                              "port": endpoint.port, "protocol": endpoint.protocol,
                              "address": None, "resolved_outside": False}  # fmt: skip
    record["target"] = target
    step = "resolve"
    try:
        async with asyncio.timeout_at(deadline + 1.0):
            ip = await _address(trace, endpoint, ctx, deadline, target)
            record["resolved_outside"] = target["resolved_outside"]
            if ip is None:
                record.update(failure=target.pop("failure"), failed_step=step)
                return record
            target["address"] = ip
            step = "connect"
            conn = await tunnel.open_stream(trace, trace.new_transaction(), ip, endpoint.port,
                                            deadline)  # fmt: skip
            step = "tls" if endpoint.protocol in ("tls", "https") else "app"
            try:
                await _exchange(conn, endpoint, ctx, deadline, record)
            finally:
                conn.close()
    except Exception as exc:
        record["failure"] = record["failure"] or F.classify(exc)
    if record["failure"] is not None:
        record["failed_step"] = step
    return record


async def _exchange(
    conn: Any, endpoint: Endpoint, ctx: Context, deadline: float, record: dict[str, Any]
) -> None:
    """The text protocol's exchange on an open stream; sets ``record``'s ``tls``/``app`` and
    ``failure`` (raises only what the caller classifies)."""
    trace: Trace = conn.trace
    if endpoint.protocol in ("tls", "https"):
        ca = str(ctx.ca_bundle) if ctx.ca_bundle else None
        before = len(trace.tls_handshakes)
        try:
            await tls_handshake(conn, endpoint.host, deadline, ca_bundle=ca)
        finally:  # this handshake's record, never an earlier one's
            record["tls"] = trace.tls_handshakes[-1] if len(trace.tls_handshakes) > before else None
    elif endpoint.protocol in ("whatsapp_chat", "mtproto"):
        before = len(trace.app_handshakes)
        if endpoint.protocol == "mtproto":
            result = await mtproto_handshake(conn, deadline, time.time())
        else:
            result = await whatsapp_hello(conn, deadline)
        record["app"] = trace.app_handshakes[-1] if len(trace.app_handshakes) > before else None
        record["failure"] = result.failure


async def calls(
    tunnel: Tunnel, trace: Trace, service: Service, function: str, ctx: Context,
    seconds: float = CALL_SECONDS, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """One round (original, control) of ``function``'s call replay through ``tunnel``; never
    raises. ``failure`` is the original's when it lost more than half (as the step-3 replay's)."""
    targets = service.function(function)
    record: dict[str, Any] = {"service": service.id, "function": function, "measured": True,
                              "failure": None, "replays": []}  # fmt: skip
    if targets is None or not targets.call_ports:
        record.update(measured=False, reason="no_call_ports")
        return record
    marker = MARKERS.get(service.id)
    make = C.voice_profile if function == "voice" else C.video_profile
    port = targets.call_ports[0]
    original = make(seconds, seed, marker)
    pair = [("replay_original", "original", original),
            ("replay_control", "control", C.control(original))]  # fmt: skip
    if random.Random(f"msgwatch-through-{seed}-{service.id}-{function}").random() < 0.5:
        pair.reverse()  # the order drawn, as the step-3 rounds draw it
    marked = stun_framed(original)
    signed = C.framings(original, marker)["signature"]
    loop = asyncio.get_running_loop()

    async def open_udp(tr: Trace, txid: int, ip: str, p: int) -> UDPSocket:
        return await tunnel.open_udp(tr, txid, ip, p, loop.time() + seconds + 2 * GRACE + 2)

    async with lag.running():
        for role, variant, packets in pair:
            label = {"profile": function, "variant": variant, "marker": marker, "role": role,
                     "port": port, "round": 1, "attempt": 1, "through": True}  # fmt: skip
            options = ReplayOptions(label, marked=marked, signed=signed, open_udp=open_udp)
            record["replays"].append(await _replay(trace, packets, ctx.helper, port, options))
    first = next((r for r in record["replays"] if r.get("role") == "replay_original"), None)
    if first is not None and (not first["sent_packets"] or first["loss"] > LOST):
        record["failure"] = first["failure"] or F.TIMEOUT
    return record


def stun_framed(packets: Sequence[C.Packet]) -> frozenset[int]:
    """Datagrams carrying STUN's magic cookie where STUN puts it (as the step-3 replay counts
    them: ``marked_sent``/``marked_received``)."""
    return frozenset(
        i
        for i, p in enumerate(packets)
        if len(p.payload) >= 20 and p.payload[4:8] == STUN_COOKIE_BYTES
    )


async def _replay(
    trace: Trace, packets: Sequence[C.Packet], helper: str, port: int, options: ReplayOptions
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    length = packets[-1].offset if packets else 0.0
    deadline = loop.time() + replay_seconds(length)
    result = await replay(trace, trace.new_transaction(), helper, port, packets, deadline, options)
    return result.record

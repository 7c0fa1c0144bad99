"""Downstream replays: the helper sends call-shaped traffic of its own towards the probe.

Every other UDP flow to the helper is an echo, so the way back only ever carries what survived the
way up: a classifier or a policer that acts on server→client call traffic alone is never tested
with a full-rate call coming down. ``POST /v1/udp/send`` (:mod:`msgwatch.helper.control`) asks the
helper to play one schedule of :mod:`msgwatch.wire.calltraffic`
(:class:`~msgwatch.wire.helper_api.Schedule`: the same profiles, markers, controls and random
payloads as the probe's replays) to the client, which knows therefore exactly what to expect, and
counts what arrives. The request and its answer are the wire contract's
(:class:`~msgwatch.wire.helper_api.SendRequest`, :class:`~msgwatch.wire.helper_api.SendAnswer`).

A small request makes many bytes, so the helper would be an amplifier if it sent where it is told.
It sends only:

- to the **address of the control connection** (TCP: not spoofable), never to another;
- on a **flow that is open**: (that address, ``client_port``, ``local_port``), from which the helper
  received a datagram in the last :attr:`SendSettings.fresh` seconds (10), on the socket the
  control connection reached (the probe sends a few pinhole datagrams first: they open its NAT
  mapping and prove that it wants the traffic); never to a source port below 1024 or to one of the
  helper's own ports (:mod:`msgwatch.helper.udp`, step 2);
- for at most :attr:`SendSettings.max_seconds` seconds (10), one send per flow at a time, at most
  :attr:`SendSettings.per_client` at once per client (a probe measures every call function at
  the same time) and :attr:`SendSettings.total` in all;
- within the client's budgets: the whole schedule's bytes must fit in what its byte budget (and
  the global one) holds when asked (429 ``over_budget`` otherwise), and **every datagram** is
  charged to its byte and packet budgets as it goes (:meth:`msgwatch.helper.limits.Limits.allow_send`):
  one over them is withheld and counted (``originated.over_limits``), as is one that meets a full
  send buffer (``originated.send_buffer_full``).

The control call itself is rate-limited per client like ``/v1/measure`` (``send`` in
:class:`~msgwatch.helper.limits.CallLimits`). The request is answered as soon as the send is
scheduled (202, with the datagrams and bytes it will send): the first datagram leaves at once.

While a flow carries a send, what the helper receives on it is counted and not echoed
(:mod:`msgwatch.helper.udp`), so the probe's pinholes never add to the count. The flow's view
(``GET /v1/udp/flows``) then has an ``originated`` block (:data:`msgwatch.wire.helper_api.ORIGINATED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from msgwatch.helper.flows import FlowKey
from msgwatch.helper.logs import logger
from msgwatch.helper.udp import UDPEndpoint, UDPService, normalize_ip
from msgwatch.wire import calltraffic as C
from msgwatch.wire import helper_api as api
from msgwatch.wire.helper_api import MAX_SECONDS, SendAnswer, SendRequest

Port = Annotated[int, Field(ge=api.MIN_PORT, le=api.MAX_PORT)]


class SendModel(BaseModel):
    """The validation of a ``POST /v1/udp/send`` body: the contract's
    :class:`~msgwatch.wire.helper_api.SendRequest`, its fields and bounds (unknown fields refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_port: Port
    local_port: Port
    profile: api.Profile
    variant: api.Variant
    seconds: float = Field(gt=0, le=MAX_SECONDS)
    seed: int = Field(ge=0, le=api.MAX_SEED)
    marker: C.Marker | None = None

    def request(self) -> SendRequest:
        return SendRequest.from_dict(self.model_dump())


class SendRefused(Exception):
    """A send the helper will not make: the HTTP status, a reason and a detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True)
class SendSettings:
    max_seconds: float = MAX_SECONDS
    fresh: float = 10.0
    """A datagram from the flow must have arrived this recently."""
    per_client: int = 32
    """A probe runs every call function's downstream rounds at once: 18 functions in today's
    catalogue (each function's own rounds follow each other)."""
    total: int = 128


@dataclass
class Downstream:
    """The running downstream sends (see the module's notes)."""

    udp: UDPService
    settings: SendSettings = field(default_factory=SendSettings)
    clock: Callable[[], float] = time.monotonic
    _running: dict[str, set[FlowKey]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def running(self) -> int:
        return sum(len(keys) for keys in self._running.values())

    def _endpoint(self, local: str | None, port: int) -> UDPEndpoint | None:
        endpoints = self.udp.endpoints
        if local is not None:
            local = normalize_ip(local)
            wildcard = "::" if ":" in local else "0.0.0.0"
            return endpoints.get((local, port)) or endpoints.get((wildcard, port))
        return None

    def start(self, client: str, local: str | None, request: SendRequest) -> SendAnswer:
        """Schedule a send to ``client`` (the control connection's address) as the control
        connection reached the helper at ``local``; the 202 body, or :class:`SendRefused`."""
        now = self.clock()
        key = (client, request.client_port, request.local_port)
        plan = request.schedule
        if plan.seconds > self.settings.max_seconds:
            raise SendRefused(400, "bad_request", f"seconds: at most {self.settings.max_seconds}")
        if request.client_port < 1024 or request.client_port in self.udp.own_ports:
            raise SendRefused(403, "source_port", "the helper never sends to that port")
        endpoint = self._endpoint(local, request.local_port)
        if endpoint is None or endpoint.transport is None:
            raise SendRefused(404, "no_such_socket", "no UDP socket on that port here")
        last = self.udp.flows.last_received(key, now)
        if last is None or now - last > self.settings.fresh:
            raise SendRefused(404, "no_such_flow", f"no datagram from you with those ports in "
                              f"the last {self.settings.fresh:g} s")  # fmt: skip
        mine = self._running.get(client, set())
        if key in self.udp.sending or len(mine) >= self.settings.per_client:
            raise SendRefused(409, "already_sending", "a send to you is running on that flow, "
                              f"or {self.settings.per_client} are")  # fmt: skip
        if self.running >= self.settings.total:
            raise SendRefused(503, "busy", "too many sends at once")
        packets = plan.packets()
        size = sum(len(p.payload) for p in packets)
        if self.udp.limits.available(client, now) < size:
            raise SendRefused(429, "over_budget", f"{size} bytes do not fit in your budget now")
        self.udp.flows.originating(key)
        self.udp.sending.add(key)
        self._running.setdefault(client, set()).add(key)
        task = asyncio.ensure_future(self._play(key, endpoint, packets))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info("send: %s, %s %s, %d datagrams", self.udp.names.name(client),
                    plan.variant, plan.profile, len(packets))  # fmt: skip
        return SendAnswer(
            client_port=request.client_port,
            local_port=request.local_port,
            packets=len(packets),
            bytes=size,
            seconds=round(packets[-1].offset if packets else 0.0, 3),
        )

    async def _play(self, key: FlowKey, endpoint: UDPEndpoint, packets: list[C.Packet]) -> None:
        client, port, _ = key
        loop = asyncio.get_running_loop()
        service, counters = self.udp, self.udp.counters
        try:
            start = loop.time()
            for offset, payload in packets:
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                transport = endpoint.transport
                if transport is None or transport.is_closing():
                    return
                now = self.clock()
                if endpoint.paused:
                    service.flows.withheld(key, "send_buffer_full")
                    continue
                if not service.limits.allow_send(client, len(payload), now):
                    service.flows.withheld(key, "over_limits")
                    counters.over_limits += 1
                    continue
                transport.sendto(payload, (client, port))
                counters.tx_packets += 1
                counters.tx_bytes += len(payload)
                counters.originated_packets += 1
                counters.originated_bytes += len(payload)
                service.flows.originated(key, len(payload), now)
                service.originated(key, payload, now)  # its echo is not answered (loops.py)
        finally:
            service.sending.discard(key)
            mine = self._running.get(client)
            if mine is not None:
                mine.discard(key)
                if not mine:
                    del self._running[client]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

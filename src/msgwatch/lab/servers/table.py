"""Which lab server answers each catalogue protocol: :data:`SERVERS` and :func:`plan_services`.

The mirror of the probe's table of chains (:data:`msgwatch.probe.protocols.CHAINS`): a new protocol
is one line here and, if no server answers it yet, a server module in this package.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from msgwatch.catalogue.schema import Endpoint, Protocol
from msgwatch.lab.mapping import LabMapping
from msgwatch.lab.netns import LabError
from msgwatch.lab.servers.base import DEFAULT_CERT, Bind, hostport, norm
from msgwatch.lab.servers.helper import HELPER_PORTS


@dataclass
class ServicePlan:
    """Which server answers each endpoint of the lab catalogue, where."""

    dns: dict[str, str] = field(default_factory=dict)
    """Host name → lab address (the public resolver's records)."""
    web: dict[tuple[str, int, bool], set[str]] = field(default_factory=dict)
    """(address, port, TLS) → host names nginx serves there."""
    turn: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    """(address, port) → transports (``udp``, ``tcp``, ``tls``) coturn listens on there."""
    turn_names: dict[tuple[str, int], str] = field(default_factory=dict)
    """(address, port) → the host name of a TLS ``stun``/``turn`` endpoint there (its certificate)."""
    echo_tcp: set[tuple[str, int]] = field(default_factory=set)
    mtproto: set[tuple[str, int]] = field(default_factory=set)
    """(address, port) of the emulated Telegram data centres (the helper's MTProto responder)."""
    whatsapp: set[tuple[str, int]] = field(default_factory=set)
    """(address, port) of the emulated WhatsApp chat endpoints (the helper's hello responder)."""
    call_ports: set[int] = field(default_factory=set)

    def addresses(self) -> list[str]:
        served = self.echo_tcp | self.mtproto | self.whatsapp
        found = set(self.dns.values()) | {a for a, _ in served}
        found |= {a for a, _, _ in self.web} | {a for a, _ in self.turn}
        return sorted(
            found, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a))
        )

    def turn_groups(self) -> dict[tuple[int, frozenset[str], str | None], list[str]]:
        """(port, transports, TLS host name) → addresses: one coturn each (coturn has one
        listening port, and one certificate)."""
        groups: dict[tuple[int, frozenset[str], str | None], list[str]] = defaultdict(list)
        for (address, port), transports in sorted(self.turn.items()):
            name = self.turn_names.get((address, port)) if "tls" in transports else None
            groups[(port, frozenset(transports), name)].append(address)
        return dict(
            sorted(groups.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]), kv[0][2] or ""))
        )

    def helper_ports(self) -> list[int]:
        return sorted(set(HELPER_PORTS) | self.call_ports)


@dataclass
class _Claims:
    """A plan being made: every socket claimed once, by one server."""

    mapping: LabMapping
    plan: ServicePlan
    owner: dict[Bind, tuple[str, str]] = field(default_factory=dict)

    def address(self, e: Endpoint) -> str:
        return norm(e.address if e.address is not None else self.mapping.hosts[e.host or ""])

    def claim(self, proto: str, address: str, port: int, server: str, label: str) -> None:
        key = (proto, address, port)
        if key in self.owner and self.owner[key][0] != server:
            raise LabError(
                f"{label} and {self.owner[key][1]} both need {proto} "
                f"{hostport(address, port)} ({server} / {self.owner[key][0]})"
            )
        self.owner.setdefault(key, (server, label))


ServerFn = Callable[[_Claims, Endpoint, str], None]
"""Assigns one endpoint (with its label for errors) to the server that answers its protocol."""


def _resolver_only(claims: _Claims, e: Endpoint, label: str) -> None:
    """``dns``: the public resolver answers every catalogue name (``ServicePlan.dns``)."""


def _coturn(claims: _Claims, e: Endpoint, label: str) -> None:
    """``stun``/``turn``: coturn; TLS and TCP share the socket (it tells them apart by the first
    bytes), and one TLS port has one certificate."""
    address = claims.address(e)
    claims.claim("udp" if e.transport == "udp" else "tcp", address, e.port, "coturn", label)
    claims.plan.turn.setdefault((address, e.port), set()).add(e.transport)
    if e.transport == "tls":
        name = e.host or DEFAULT_CERT
        known = claims.plan.turn_names.setdefault((address, e.port), name)
        if known != name:
            raise LabError(
                f"{label}: TURN over TLS on {hostport(address, e.port)}"
                f" needs one certificate, for {known} or {name}"
            )


def _nginx(claims: _Claims, e: Endpoint, label: str) -> None:
    """``http``/``https``/``tls``: nginx, with a lab-CA certificate per host name over TLS."""
    address, tls = claims.address(e), e.protocol != "http"
    claims.claim("tcp", address, e.port, "nginx (TLS)" if tls else "nginx", label)
    names = claims.plan.web.setdefault((address, e.port, tls), set())
    if e.host is not None:
        names.add(e.host)


def _mtproto(claims: _Claims, e: Endpoint, label: str) -> None:
    """``mtproto``: the test helper's MTProto responder."""
    address = claims.address(e)
    claims.claim("tcp", address, e.port, "test helper (MTProto)", label)
    claims.plan.mtproto.add((address, e.port))


def _whatsapp(claims: _Claims, e: Endpoint, label: str) -> None:
    """``whatsapp_chat``: the test helper's WhatsApp hello responder."""
    address = claims.address(e)
    claims.claim("tcp", address, e.port, "test helper (WhatsApp chat)", label)
    claims.plan.whatsapp.add((address, e.port))


def _echo(claims: _Claims, e: Endpoint, label: str) -> None:
    """``tcp``: the test helper's TCP echo."""
    address = claims.address(e)
    claims.claim("tcp", address, e.port, "test helper", label)
    claims.plan.echo_tcp.add((address, e.port))


SERVERS: dict[Protocol, ServerFn] = {
    "dns": _resolver_only,
    "tcp": _echo,
    "tls": _nginx,
    "https": _nginx,
    "http": _nginx,
    "stun": _coturn,
    "turn": _coturn,
    "mtproto": _mtproto,
    "whatsapp_chat": _whatsapp,
}
"""The lab's server for each catalogue protocol (the mirror of the probe's table of chains)."""


def plan_services(mapping: LabMapping) -> ServicePlan:
    """Assign every endpoint of the lab catalogue to a server; two servers on one socket fail."""
    claims = _Claims(mapping, ServicePlan(dns=dict(mapping.hosts)))
    for service in mapping.catalogue.services:
        for function in service.functions:
            claims.plan.call_ports |= set(function.call_ports)
            for e in function.endpoints:
                label = f"{service.id}/{function.function}/{e.label}"
                SERVERS[e.protocol](claims, e, label)
    return claims.plan

"""The catalogue's schema: what a service file may say, checked strictly.

A catalogue is a directory of TOML files: ``index.toml`` (the catalogue's version and schema number)
and one ``<service>.toml`` per service. A service file names the service, the sources its facts come
from, the networks (address ranges) the service is known to use, and per function (``text``,
``voice``, ``video``, ``media``, ``web``, ``registration``) the endpoints that the probe tests.

Rules the schema enforces, so that a catalogue can be trusted by the probe without more checks:

- every endpoint and every network names a ``source`` declared in the file's ``[[sources]]`` and
  carries the date it was ``checked``;
- an endpoint has a ``host`` or an ``address`` (or both), a port in 1..65535, a transport that fits
  its protocol (``stun``/``turn`` over udp, tcp or tls; ``tls``/``https`` over tcp; ...);
- ``mode`` says how a function's endpoints combine: ``any_of`` (a redundant pool: the function is
  blocked only if all fail) or ``all_of`` (each is required);
- endpoint ids are unique within a function.

Group entries (``hosts = [...]``, ``ports = [...]``) expand to one endpoint per host and port, so
that "e1..e16.whatsapp.net on 443 and 5222" is one sourced fact, not 32.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from msgwatch.measurement.vocab import FUNCTIONS as FUNCTIONS
from msgwatch.measurement.vocab import Function as Function

Transport = Literal["tcp", "udp", "tls"]
# A protocol named here has a chain in the probe (msgwatch.probe.protocols.CHAINS), a server in
# the lab (msgwatch.lab.servers.SERVERS) and its transports below; tests/probe/test_protocols.py
# checks that the four agree.
Protocol = Literal[
    "dns",  # the name is resolved; nothing is connected
    "tcp",  # TCP connect
    "tls",  # TCP connect + TLS handshake (certificate verified)
    "https",  # TCP + TLS + HTTP/1.1 GET
    "http",  # TCP + HTTP/1.1 GET in clear text
    "stun",  # STUN Binding request
    "turn",  # TURN Allocate request without credentials (a 401 proves the relay path)
    "mtproto",  # TCP connect + MTProto req_pq_multi; the data centre answers resPQ
    "whatsapp_chat",  # TCP connect + WhatsApp's chat opening (WA prologue, Noise hello)
]
Mode = Literal["any_of", "all_of"]

_TRANSPORTS: dict[str, set[str]] = {
    "dns": {"udp", "tcp"},
    "tcp": {"tcp"},
    "tls": {"tcp"},
    "https": {"tcp"},
    "http": {"tcp"},
    "stun": {"udp", "tcp", "tls"},
    "turn": {"udp", "tcp", "tls"},
    "mtproto": {"tcp"},
    "whatsapp_chat": {"tcp"},
}

Port = Annotated[int, Field(ge=1, le=65535)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where a fact comes from."""

    id: Slug
    title: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://\S+$")
    kind: Literal["vendor", "spec", "measurement", "code", "research", "news"] = "vendor"
    """What the source is: the vendor's own documentation is preferred over everything else."""
    checked: dt.date
    """When someone last read the source and found the facts that cite it."""


class Network(_Strict):
    """An address range the service is known to use (DNS consistency, lab mapping)."""

    prefix: str
    source: Slug
    checked: dt.date
    note: str = ""

    @field_validator("prefix")
    @classmethod
    def _is_prefix(cls, value: str) -> str:
        ipaddress.ip_network(value, strict=True)
        return value


def _check_host(value: str) -> str:
    name = value.rstrip(".")
    if (
        not name
        or len(name) > 253
        or any(
            not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label)
            for label in name.split(".")
        )
    ):
        raise ValueError(f"{value!r} is not a host name")
    return name.lower()


def _check_address(value: str) -> str:
    return str(ipaddress.ip_address(value))


class EndpointSpec(_Strict):
    """An endpoint (or a group of them) as written in a service file."""

    id: Slug
    host: str | None = None
    hosts: list[str] | None = None
    address: str | None = None
    port: Port | None = None
    ports: list[Port] | None = None
    transport: Transport = "tcp"
    protocol: Protocol
    path: str = "/"
    """Request path for ``http``/``https``."""
    download_path: str | None = None
    """A large object on this host: the throughput test downloads it with the real and with a
    benign server name (``https`` endpoints of the ``media`` function)."""
    source: Slug
    checked: dt.date
    note: str = ""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _check_host(value)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_check_host(v) for v in value]

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @field_validator("path", "download_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(c.isspace() for c in value)):
            raise ValueError("a path must start with '/' and contain no white space")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> EndpointSpec:
        if self.host is not None and self.hosts is not None:
            raise ValueError("give either host or hosts, not both")
        if self.port is not None and self.ports is not None:
            raise ValueError("give either port or ports, not both")
        if self.port is None and not self.ports:
            raise ValueError("an endpoint needs a port (or ports)")
        if self.host is None and not self.hosts and self.address is None:
            raise ValueError("an endpoint needs a host, hosts or an address")
        if self.hosts is not None and self.address is not None:
            raise ValueError("an address cannot be shared by a group of hosts")
        if self.transport not in _TRANSPORTS[self.protocol]:
            allowed = ", ".join(sorted(_TRANSPORTS[self.protocol]))
            raise ValueError(
                f"protocol {self.protocol!r} does not run over {self.transport!r} "
                f"(allowed: {allowed})"
            )
        if self.protocol in ("dns",) and self.host is None and not self.hosts:
            raise ValueError("a dns endpoint needs a host name")
        return self


class Endpoint(_Strict):
    """One concrete endpoint: what the probe tests. Made by expanding an :class:`EndpointSpec`."""

    id: str
    host: str | None
    address: str | None
    port: int
    transport: Transport
    protocol: Protocol
    path: str
    source: str
    checked: dt.date
    note: str = ""
    download_path: str | None = None

    @property
    def label(self) -> str:
        where = self.host or self.address or "?"
        if where and ":" in where:
            where = f"[{where}]"
        return f"{self.protocol}://{where}:{self.port}"


class FunctionSpec(_Strict):
    mode: Mode = "any_of"
    coverage: Literal["full", "signalling"] = "full"
    """``signalling``: only the call set-up path is tested (the relays are handed out per call and
    not published); an ``ok`` verdict then says nothing about the media path."""
    note: str = ""
    call_ports: list[Port] = []
    """UDP ports the service's call media uses. With a test helper configured, the probe sends
    STUN to the helper on each of them: the call path, whatever relay a call would be given."""
    call_ports_source: Slug | None = None
    endpoints: list[EndpointSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> FunctionSpec:
        if bool(self.call_ports) != (self.call_ports_source is not None):
            raise ValueError("call_ports and call_ports_source go together")
        seen: set[str] = set()
        for endpoint in self.endpoints:
            if endpoint.id in seen:
                raise ValueError(f"endpoint id {endpoint.id!r} appears twice")
            seen.add(endpoint.id)
        return self

    def expand(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        for spec in self.endpoints:
            hosts: list[str | None] = list(spec.hosts) if spec.hosts else [spec.host]
            ports = list(spec.ports) if spec.ports else [spec.port or 0]
            group = len(hosts) * len(ports) > 1
            for host in hosts:
                for port in ports:
                    where = host or spec.address
                    suffix = f"/{where}:{port}" if group else ""
                    out.append(
                        Endpoint(
                            id=spec.id + suffix,
                            host=host,
                            address=spec.address,
                            port=port,
                            transport=spec.transport,
                            protocol=spec.protocol,
                            path=spec.path,
                            download_path=spec.download_path,
                            source=spec.source,
                            checked=spec.checked,
                            note=spec.note,
                        )
                    )
        return out


class ServiceFile(_Strict):
    """A service file, as written."""

    schema_version: Literal[1] = Field(alias="schema")
    id: Slug
    name: str = Field(min_length=1)
    operator: str = ""
    note: str = ""
    successor: str | None = None
    """Id of the service that replaced this one (Skype → Teams), when it was retired."""
    retired: dt.date | None = None
    trust_roots: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+\.pem$")
    """A PEM file beside the service file with root CAs the service's own servers chain to (Signal's
    private CA); trusted for this service's endpoints in addition to the system's store."""
    trust_roots_source: Slug | None = None
    sources: list[Source] = Field(min_length=1)
    networks: list[Network] = []
    functions: dict[Function, FunctionSpec] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sources_resolve(self) -> ServiceFile:
        known = {s.id for s in self.sources}
        if len(known) != len(self.sources):
            raise ValueError("source ids must be unique")
        if (self.trust_roots is None) != (self.trust_roots_source is None):
            raise ValueError("trust_roots and trust_roots_source go together")
        if self.trust_roots_source is not None and self.trust_roots_source not in known:
            raise ValueError(f"trust_roots_source: unknown source {self.trust_roots_source!r}")
        for network in self.networks:
            if network.source not in known:
                raise ValueError(f"network {network.prefix}: unknown source {network.source!r}")
        for fname, function in self.functions.items():
            if function.call_ports_source is not None and function.call_ports_source not in known:
                raise ValueError(
                    f"functions.{fname}.call_ports_source: unknown source "
                    f"{function.call_ports_source!r}"
                )
            for endpoint in function.endpoints:
                if endpoint.source not in known:
                    raise ValueError(
                        f"functions.{fname}.endpoints[{endpoint.id}]: "
                        f"unknown source {endpoint.source!r}"
                    )
        return self


class Index(_Strict):
    schema_version: Literal[1] = Field(alias="schema")
    version: str = Field(pattern=r"^\d{4}\.\d{2}\.\d{2}(\.\d+)?$")
    """Catalogue version, a date (``2026.11.24``), with a serial when released twice in a day."""
    note: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

"""Mapping the real catalogue into the lab's address space.

The probe runs unchanged in the lab; only its configuration differs. This module gives the lab its
catalogue: every service gets a /24 of its own in ``198.18.0.0/15`` (IPv6: a /48 in
``2001:db8::/32``), every host name and every literal address of the service is given an address in
that /24 (the same name always gets the same address), and the service's ``networks`` become that /24
— so DNS-consistency checks work in the lab as in the field. Real addresses never leave this module:
the result holds lab addresses only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from msgwatch.catalogue import Catalogue, Service
from msgwatch.catalogue.schema import Network
from msgwatch.lab.plan import LAB_V4, LAB_V6

FIRST_SERVICE_SUBNET = 16
"""Service i gets 198.18.(16 + i).0/24; lower /24s are left for the lab's own infrastructure."""


@dataclass
class LabMapping:
    catalogue: Catalogue
    hosts: dict[str, str] = field(default_factory=dict)
    """Host name → lab IPv4 address."""
    addresses: dict[str, str] = field(default_factory=dict)
    """Real literal address → lab address (kept only inside the lab's process)."""
    subnets: dict[str, str] = field(default_factory=dict)
    """Service id → its lab /24."""


def _subnet(index: int) -> ipaddress.IPv4Network:
    base = int(LAB_V4.network_address) + (FIRST_SERVICE_SUBNET + index) * 256
    return ipaddress.IPv4Network((base, 24))


def _subnet6(index: int) -> ipaddress.IPv6Network:
    base = int(LAB_V6.network_address) + ((FIRST_SERVICE_SUBNET + index) << 80)
    return ipaddress.IPv6Network((base, 48))


class _Allocator:
    """Hands out the addresses of one service's subnets, the same one for the same key."""

    def __init__(
        self, service: str, subnet: ipaddress.IPv4Network, subnet6: ipaddress.IPv6Network
    ) -> None:
        self.service, self.subnet, self.subnet6 = service, subnet, subnet6
        self.next_host = 10

    def __call__(self, table: dict[str, str], key: str, v6: bool) -> str:
        if key in table:
            return table[key]
        if self.next_host > 250:
            raise ValueError(f"{self.service}: more than 240 lab addresses needed")
        network: ipaddress.IPv4Network | ipaddress.IPv6Network = self.subnet6 if v6 else self.subnet
        table[key] = str(network.network_address + self.next_host)
        self.next_host += 1
        return table[key]


def map_catalogue(catalogue: Catalogue) -> LabMapping:
    """The lab's catalogue for ``catalogue`` (see the module's notes)."""
    mapping = LabMapping(catalogue)
    services: list[Service] = []
    for index, service in enumerate(catalogue.services):
        subnet = _subnet(index)
        mapping.subnets[service.id] = str(subnet)
        allocate = _Allocator(service.id, subnet, _subnet6(index))
        functions = []
        for function in service.functions:
            endpoints = []
            for e in function.endpoints:
                update: dict[str, str | None] = {}
                if e.host is not None:
                    allocate(mapping.hosts, e.host, v6=False)
                if e.address is not None:
                    v6 = ipaddress.ip_address(e.address).version == 6
                    lab_address = allocate(mapping.addresses, e.address, v6)
                    update["address"] = lab_address
                    # A group's expanded id names its address: the lab's, never the real one.
                    update["id"] = e.id.replace(e.address, lab_address)
                endpoints.append(e.model_copy(update=update))
            functions.append(dataclasses.replace(function, endpoints=tuple(endpoints)))
        source = service.sources[0]
        prefixes = [str(subnet), str(allocate.subnet6)]
        # A host shared with an earlier service (a CDN name in two files) keeps its first address:
        # it is declared here too, or this service's DNS answers would look forged.
        for e in (e for f in service.functions for e in f.endpoints if e.host is not None):
            address = mapping.hosts[e.host or ""]
            if ipaddress.ip_address(address) not in subnet and f"{address}/32" not in prefixes:
                prefixes.append(f"{address}/32")
        networks = tuple(
            Network(prefix=p, source=source.id, checked=source.checked, note="lab")
            for p in prefixes
        )
        services.append(dataclasses.replace(service, functions=tuple(functions), networks=networks))
    mapping.catalogue = dataclasses.replace(catalogue, services=tuple(services))
    return mapping

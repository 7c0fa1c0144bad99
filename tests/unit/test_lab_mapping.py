"""The lab's catalogue holds lab addresses only."""

from __future__ import annotations

import ipaddress

from msgwatch.catalogue import load_catalogue
from msgwatch.lab.mapping import map_catalogue
from msgwatch.lab.plan import LAB_V4, LAB_V6


def _in_lab(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip in (LAB_V4 if ip.version == 4 else LAB_V6)


def test_every_address_of_the_mapped_catalogue_is_in_the_lab_range() -> None:
    mapping = map_catalogue(load_catalogue())
    assert mapping.hosts and all(_in_lab(a) for a in mapping.hosts.values())
    for service in mapping.catalogue.services:
        for network in service.networks:
            net = ipaddress.ip_network(network.prefix)
            assert net.subnet_of(LAB_V4 if net.version == 4 else LAB_V6)  # type: ignore[arg-type]
        for function in service.functions:
            for endpoint in function.endpoints:
                assert endpoint.address is None or _in_lab(endpoint.address), endpoint
                assert not any(real in endpoint.id for real in mapping.addresses), endpoint.id


def test_mapping_is_deterministic_and_per_service() -> None:
    first, second = map_catalogue(load_catalogue()), map_catalogue(load_catalogue())
    assert first.hosts == second.hosts
    subnets = list(first.subnets.values())
    assert len(set(subnets)) == len(subnets)

"""The mini-Internet's data agrees with itself: catalogue, address plan, servers, ground truth."""

import ipaddress
from pathlib import Path

from msgwatch.catalogue import load_catalogue
from msgwatch.lab.loopback import topology as T
from msgwatch.lab.loopback import unavailable
from msgwatch.lab.loopback.catalogue import write_catalogue

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def test_catalogue_is_valid_and_loopback_only(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path))
    assert 5 <= len(catalogue.services) <= 7
    for service in catalogue.services:
        for network in service.networks:
            assert ipaddress.ip_network(network.prefix).subnet_of(LOOPBACK)  # type: ignore[arg-type]
        for function in service.functions:
            for endpoint in function.endpoints:
                if endpoint.host is not None:
                    assert endpoint.host in T.DNS, endpoint.host
                if endpoint.address is not None:
                    assert ipaddress.ip_address(endpoint.address) in LOOPBACK
    for address in [a for a in T.DNS.values() if a] + [s.address for s in T.SITES]:
        assert ipaddress.ip_address(address) in LOOPBACK


def test_expectations_cover_the_catalogue_once(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path))
    functions = sorted((s.id, f.function) for s in catalogue.services for f in s.functions)
    assert sorted((e.service, e.function) for e in T.EXPECTED) == functions
    mechanisms = {e.mechanism for e in T.EXPECTED if e.verdict == "blocked"}
    assert mechanisms == {"dns.nxdomain", "dns.forged", "tls.cert_invalid", "http.blockpage",
                          "tls.timeout", "udp.timeout"}  # fmt: skip
    assert all(e.mechanism is None for e in T.EXPECTED if e.verdict == "ok")


def test_working_answers_come_from_the_service_network() -> None:
    forged = {name for name, address in T.DNS.items() if address == T.BLOCKPAGE_IP}
    assert forged == {"web.telegram.org"}
    networks = [ipaddress.ip_network(s.network) for s in T.SERVICES]
    assert all(ipaddress.ip_address(T.BLOCKPAGE_IP) not in n for n in networks)
    for name, address in T.DNS.items():
        if address and name not in forged:
            assert any(ipaddress.ip_address(address) in n for n in networks), name


def test_a_missing_server_names_its_debian_package() -> None:
    problem = unavailable(search="/nonexistent")
    assert problem is not None
    for package in ("dnsmasq-base", "nginx-light", "coturn"):
        assert package in problem

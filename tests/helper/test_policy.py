"""The control API's allow-list (pure: no address here is ever contacted)."""

from __future__ import annotations

import pytest

from msgwatch.helper.policy import Policy, PolicyError, policy_from_options

PRODUCTION = Policy.production()
LAB = Policy.lab()


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("198.18.0.1", "reserved"),
        ("198.19.255.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("203.0.113.9", "documentation"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this_network"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("2001:db8::1", "documentation"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link_local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("2001::1", "reserved"),  # Teredo
        ("3fff::1", "documentation"),
        ("::ffff:127.0.0.1", "loopback"),  # mapped: judged as the IPv4 address
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
        ("fe80::1%eth0", "link_local"),
        ("not-an-ip", "not_an_address"),
    ],
)
def test_production_refuses_non_global_targets(ip: str, reason: str) -> None:
    assert PRODUCTION.reason(ip, 443) == reason
    assert not PRODUCTION.allows(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "157.240.1.1", "2a03:2880:f10c::1", "::ffff:8.8.4.4"])
def test_production_allows_global_unicast(ip: str) -> None:
    assert PRODUCTION.reason(ip, 443) is None


def test_ports() -> None:
    assert PRODUCTION.reason("8.8.8.8", 0) == "bad_port"
    assert PRODUCTION.reason("8.8.8.8", 25) == "port_not_allowed"
    assert LAB.reason("198.18.3.10", 25) is None
    assert LAB.reason("198.18.3.10", 70000) == "bad_port"


@pytest.mark.parametrize("ip", ["198.18.0.1", "198.19.0.10", "198.18.16.5", "2001:db8:3::10",
                                "::ffff:198.18.3.10"])  # fmt: skip
def test_lab_allows_its_prefixes(ip: str) -> None:
    assert LAB.reason(ip, 3478) is None


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "outside_allowed_prefixes"),
        ("10.0.0.1", "outside_allowed_prefixes"),
        ("8.8.8.8", "outside_allowed_prefixes"),
        ("198.20.0.1", "outside_allowed_prefixes"),
        ("2001:db9::1", "outside_allowed_prefixes"),
        ("::1", "outside_allowed_prefixes"),
        ("0.0.0.0", "unspecified"),
        ("ff02::1", "multicast"),
    ],
)
def test_lab_refuses_the_rest(ip: str, reason: str) -> None:
    assert LAB.reason(ip, 443) == reason


def test_explicit_prefixes_and_unspecified_always_refused() -> None:
    policy = Policy.lab(["127.0.0.0/8", "0.0.0.0/0"])
    assert policy.reason("127.0.0.1", 80) is None
    assert policy.reason("0.0.0.0", 80) == "unspecified"  # even inside an allowed prefix
    assert policy.reason("255.255.255.255", 80) == "broadcast"


def test_options() -> None:
    assert policy_from_options(False, ()).mode == "production"
    assert policy_from_options(True, ()).describe() == ["198.18.0.0/15", "2001:db8::/32"]
    assert policy_from_options(True, ("127.0.0.1",)).describe() == ["127.0.0.1/32"]
    with pytest.raises(PolicyError):
        Policy.lab(["example.com"])
    with pytest.raises(PolicyError):
        Policy.lab([])

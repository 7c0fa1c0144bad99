"""Which targets the helper may measure for a client: the control API's allow-list.

The helper runs steps (DNS, TCP, TLS, HTTP, STUN, TURN) to addresses a client names. Without a
policy that is an open proxy into the helper's own network and a tool for scanning and reflection.
Every address is checked here **before** a socket is made for it, and again after a name resolves
(a public name may resolve to ``127.0.0.1``). Two modes:

- **production** (the default): only global unicast addresses. Refused, with the reason named:

  ==================  =====================================================================
  IPv4                0/8 "this network", 10/8, 172.16/12, 192.168/16 (RFC 1918), 100.64/10
                      (CGNAT), 127/8 (loopback), 169.254/16 (link-local), 192.0.0/24 (IETF),
                      192.0.2/24, 198.51.100/24, 203.0.113/24 (documentation), 198.18/15
                      (benchmarking), 192.88.99/24 (6to4 relays), 224/4 (multicast), 240/4
                      (reserved), 255.255.255.255 (broadcast); and anything Python's
                      ``ipaddress`` does not call global
  IPv6                ::/128, ::1, outside 2000::/3 (reserved: fc00::/7, fe80::/10, ff00::/8,
                      ...), 2001::/23 (IETF protocol assignments, Teredo), 2001:db8::/32 and
                      3fff::/20 (documentation), 5f00::/16 (SRv6); addresses that embed an IPv4
                      address (::ffff:0:0/96 mapped, 64:ff9b::/96 NAT64, 2002::/16 6to4) are
                      judged by the embedded IPv4 address
  ==================  =====================================================================

  and port 25 (SMTP: a measurement never needs it; an abuser would).
- **lab** (``--lab`` or ``--allow PREFIX ...``): only the given prefixes (``--lab`` alone means
  198.18.0.0/15 and 2001:db8::/32). Unspecified, multicast and broadcast addresses are refused in
  every mode, and an IPv4-mapped IPv6 address is judged as the IPv4 address it maps.

Port 0 is refused everywhere. The policy is pure data and functions; it never touches the network.
The helper's own resolver (configured by the operator) is not subject to it: only what a client
names is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from msgwatch.failures import NOT_ALLOWED as NOT_ALLOWED

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LAB_PREFIXES = ("198.18.0.0/15", "2001:db8::/32")

_DENIED_V4 = (
    ("0.0.0.0/8", "this_network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # benchmarking (RFC 2544): the lab's range
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_DENIED_V6 = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link_local"),
    ("ff00::/8", "multicast"),
)
DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(prefix), reason) for prefix, reason in (*_DENIED_V4, *_DENIED_V6)
)
"""Production mode's refused prefixes, each with the reason reported (as data, for the docs)."""
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
DENIED_PORTS_PRODUCTION = frozenset({25})


class PolicyError(ValueError):
    """A prefix given to the policy does not parse."""


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an address (a zone index ``%eth0`` is dropped), or None."""
    try:
        return ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64 well-known prefix, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def _always_refused(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address == _BROADCAST:
        return "broadcast"
    return None


def production_reason(address: IPAddress) -> str | None:
    """Why production mode refuses ``address``, or None when it is a global unicast address."""
    inner = embedded_v4(address)
    if inner is not None:
        return production_reason(inner)
    refused = _always_refused(address)
    if refused:
        return refused
    for network, reason in DENIED:
        if network.version == address.version and address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "reserved"
    if not address.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class Policy:
    """The helper's allow-list. ``allowed`` None: production mode; else lab mode, those only."""

    allowed: tuple[IPNetwork, ...] | None = None

    @classmethod
    def production(cls) -> Policy:
        return cls(None)

    @classmethod
    def lab(cls, prefixes: Iterable[str] = LAB_PREFIXES) -> Policy:
        """Only ``prefixes`` (each ``ADDR/LEN``; a bare address is a /32 or /128)."""
        networks: list[IPNetwork] = []
        for prefix in prefixes:
            try:
                networks.append(ipaddress.ip_network(prefix.strip(), strict=False))
            except ValueError as exc:
                raise PolicyError(f"not a prefix: {prefix!r}") from exc
        if not networks:
            raise PolicyError("lab mode needs at least one allowed prefix")
        return cls(tuple(networks))

    @property
    def mode(self) -> str:
        return "production" if self.allowed is None else "lab"

    def describe(self) -> list[str]:
        """The allowed prefixes as text (``["global unicast"]`` in production mode)."""
        return ["global unicast"] if self.allowed is None else [str(n) for n in self.allowed]

    def reason(self, ip: str, port: int | None = None) -> str | None:
        """Why ``ip`` (and ``port``) may not be a target, or None when it may."""
        address = parse_address(ip)
        if address is None:
            return "not_an_address"
        if port is not None and not 0 < port < 65536:
            return "bad_port"
        if self.allowed is None:
            if port in DENIED_PORTS_PRODUCTION:
                return "port_not_allowed"
            return production_reason(address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # judged as the IPv4 address it is
        refused = _always_refused(address)
        if refused:
            return refused
        if not any(address.version == n.version and address in n for n in self.allowed):
            return "outside_allowed_prefixes"
        return None

    def allows(self, ip: str, port: int | None = None) -> bool:
        return self.reason(ip, port) is None


def policy_from_options(lab: bool, allow: Sequence[str]) -> Policy:
    """The policy the command line asks for: ``--allow`` prefixes, ``--lab``, or production."""
    if allow:
        return Policy.lab(allow)
    if lab:
        return Policy.lab()
    return Policy.production()

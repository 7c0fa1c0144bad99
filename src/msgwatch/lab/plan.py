"""The lab's topology and address plan as data (``docs/design/001-lab.md``), and the ``ip`` commands.

Nothing here touches the system: :class:`Topology` turns a lab id and the services' addresses into
namespace names, interface names and the ``ip -batch`` lines that build the lab, so the plan can be
checked without root (every address in the lab's networks, no default route, names ≤ 15 chars)::

      probe1 ──1── censor1 ──3──┐             ┌──5── abroad   (services, public resolver, helper)
                                ├── transit ──┤
      probe2 ──2── censor2 ──4──┘             └──6── domestic (domestic helper, peer)

Link ``n`` joins namespaces ``a`` and ``b`` through the veth pair ``v<id>-<n>a`` / ``v<id>-<n>b``.
Addresses: ISP n's LAN 198.18.n.0/24 (censor .1 = the ISP resolver, probe .2, block page .80);
router links /30s in 198.18.0.0/24; abroad's infrastructure 198.18.3.0/24 (resolver .53, helper .10);
domestic 198.19.0.0/24 (helper .10, peer .20); services their own /24s from 198.18.16.0 on
(``msgwatch.lab.mapping``), held on abroad's loopback. IPv6 on the ISP 1 path to abroad only:
2001:db8:1::/64 (LAN), 2001:db8:0:1::/64 and 2001:db8:0:3::/64 (router links), 2001:db8:3::/64
(resolver ::53, helper ::10), services' /48s.

Every route names a lab prefix (198.18.0.0/15, 2001:db8::/32 or narrower): no namespace has a
default route, and nothing is connected to the host's network. Forwarding is on in the three routers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

ROLES = ("probe1", "probe2", "censor1", "censor2", "transit", "abroad", "domestic")
ISPS = ("isp1", "isp2")
ROUTERS = ("censor1", "censor2", "transit")
LAB_V4 = ipaddress.IPv4Network("198.18.0.0/15")
LAB_V6 = ipaddress.IPv6Network("2001:db8::/32")
LAB_NETWORKS = (LAB_V4, LAB_V6)
"""The lab's networks (the benchmarking and documentation ranges): its one home in the code."""

PUBLIC_RESOLVER = "198.18.3.53"
PUBLIC_RESOLVER6 = "2001:db8:3::53"
HELPERS = {"abroad": "198.18.3.10", "domestic": "198.19.0.10"}
HELPER6 = "2001:db8:3::10"
DOMESTIC_PEER = "198.19.0.20"
COLLECTOR = "198.18.3.20"
"""The observatory's collector abroad (started only by scenarios with an ``[observatory]``)."""
COLLECTOR_PORT = 8080
CIRCUMVENTION_PREFIX = "198.18.4.0/24"
"""Circumvention servers abroad (Tor's private network, VPN, Shadowsocks and proxy servers), held on
abroad's loopback like the helper; started only by a lab asked for them
(``Lab(circumvention=...)``, :mod:`msgwatch.lab.circumvention`)."""
CIRCUMVENTION = {
    **{f"tor-auth{n}": f"198.18.4.{n}" for n in (1, 2, 3)},  # directory authorities (also relays)
    "tor-relay": "198.18.4.4", "tor-exit": "198.18.4.5",
    "tor-bridge": "198.18.4.16",  # obfs4 bridge: an address of its own, outside the relays'
    "openvpn": "198.18.4.20", "wireguard": "198.18.4.21", "shadowsocks": "198.18.4.22",
    "socks5": "198.18.4.23", "http-proxy": "198.18.4.24", "socks5-micro": "198.18.4.25",
    **{f"hostile{n}": f"198.18.4.{30 + n}" for n in range(8)},  # misbehaving servers for tests
}  # fmt: skip
"""Role → address of every circumvention server abroad."""
TUNNEL_POOLS = {"openvpn-udp": "198.18.5.0/24", "openvpn-tcp": "198.18.7.0/24",
                "wireguard": "198.18.6.0/24"}  # fmt: skip
"""Addresses inside the VPN tunnels (server .1, clients from .2): they exist only on the tunnels'
TUN devices, abroad and in the probe's namespace, never on a link."""
INFRASTRUCTURE = tuple(
    ipaddress.ip_network(p)
    for p in (
        "198.18.0.0/20",
        "198.19.0.0/24",
        "2001:db8::/48",
        "2001:db8:1::/48",
        "2001:db8:3::/48",
    )
)
"""Prefixes of the lab's own infrastructure: no service address may fall in them."""


ISP_NETWORKS = {"isp1": (64500, "XA", "Lab ISP 1"), "isp2": (64501, "XA", "Lab ISP 2")}
"""Each ISP's network (AS number, country, name) unless its scenario names one: documentation AS
numbers (RFC 5398) and the ISO 3166 user-assigned code XA, so nothing is taken for a real network.
The lab writes them into a GeoIP database for the ISPs' prefixes (``msgwatch.lab.geoip``)."""


def isp_prefixes(isp: str) -> list[str]:
    """The addresses an ISP gives its subscribers (its LAN, IPv4 and IPv6)."""
    return [p for p in (lan_prefix(isp), lan_prefix6(isp)) if p]


def isp_number(isp: str) -> int:
    if isp not in ISPS:
        raise ValueError(f"unknown ISP {isp!r} (the lab has {', '.join(ISPS)})")
    return ISPS.index(isp) + 1


def resolver_ip(isp: str) -> str:
    return f"198.18.{isp_number(isp)}.1"


def blockpage_ip(isp: str) -> str:
    return f"198.18.{isp_number(isp)}.80"


def lan_prefix(isp: str) -> str:
    return f"198.18.{isp_number(isp)}.0/24"


def lan_prefix6(isp: str) -> str | None:
    return "2001:db8:1::/64" if isp == "isp1" else None


def wan_ip(isp: str) -> str:
    """The censor's address towards transit (the ISP resolver's source for upstream queries)."""
    return f"198.18.0.{4 * (isp_number(isp) - 1) + 1}"


@dataclass(frozen=True)
class Link:
    number: int
    a: str
    b: str
    a_addresses: tuple[str, ...]
    b_addresses: tuple[str, ...]


LINKS = (
    Link(1, "probe1", "censor1", ("198.18.1.2/24", "2001:db8:1::2/64"),
         ("198.18.1.1/24", "198.18.1.80/24", "2001:db8:1::1/64")),
    Link(2, "probe2", "censor2", ("198.18.2.2/24",), ("198.18.2.1/24", "198.18.2.80/24")),
    Link(3, "censor1", "transit", ("198.18.0.1/30", "2001:db8:0:1::1/64"),
         ("198.18.0.2/30", "2001:db8:0:1::2/64")),
    Link(4, "censor2", "transit", ("198.18.0.5/30",), ("198.18.0.6/30",)),
    Link(5, "transit", "abroad", ("198.18.0.9/30", "2001:db8:0:3::1/64"),
         ("198.18.0.10/30", "2001:db8:0:3::2/64")),
    Link(6, "transit", "domestic", ("198.18.0.13/30",), ("198.18.0.14/30",)),
)  # fmt: skip

LOCAL = {
    "abroad": (f"{PUBLIC_RESOLVER}/32", f"{HELPERS['abroad']}/32", f"{COLLECTOR}/32",
               f"{PUBLIC_RESOLVER6}/128", f"{HELPER6}/128",
               *(f"{a}/32" for a in CIRCUMVENTION.values())),
    "domestic": (f"{HELPERS['domestic']}/32", f"{DOMESTIC_PEER}/32"),
}  # fmt: skip
"""Addresses held on a namespace's loopback (besides the services' addresses abroad)."""

ROUTES = {
    "probe1": ("198.18.0.0/15 via 198.18.1.1", "2001:db8::/32 via 2001:db8:1::1"),
    "probe2": ("198.18.0.0/15 via 198.18.2.1",),
    "censor1": ("198.18.0.0/15 via 198.18.0.2", "2001:db8::/32 via 2001:db8:0:1::2"),
    "censor2": ("198.18.0.0/15 via 198.18.0.6",),
    "transit": ("198.18.1.0/24 via 198.18.0.1", "198.18.2.0/24 via 198.18.0.5",
                "198.18.3.0/24 via 198.18.0.10", f"{CIRCUMVENTION_PREFIX} via 198.18.0.10",
                "198.19.0.0/24 via 198.18.0.14",
                "2001:db8:1::/64 via 2001:db8:0:1::1", "2001:db8:3::/64 via 2001:db8:0:3::2"),
    "abroad": ("198.18.0.0/15 via 198.18.0.9", "2001:db8::/32 via 2001:db8:0:3::1"),
    "domestic": ("198.18.0.0/15 via 198.18.0.13",),
}  # fmt: skip
"""Routes of each namespace (besides the connected ones, and transit's routes to the services)."""


def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)


@dataclass(frozen=True)
class Topology:
    """One lab's namespaces, links, addresses and routes, as names and ``ip`` commands."""

    lab_id: str
    service_addresses: tuple[str, ...] = field(default=())
    """Every address a service endpoint of the lab catalogue uses (held by abroad)."""

    def __post_init__(self) -> None:
        for address in self.service_addresses:
            ip = ipaddress.ip_address(address)
            if not any(ip in n for n in LAB_NETWORKS if n.version == ip.version):
                raise ValueError(f"service address {address} is outside the lab's networks")
            if any(ip in n for n in INFRASTRUCTURE if n.version == ip.version):
                raise ValueError(f"service address {address} is in the lab's infrastructure")

    def ns(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        return f"mw{self.lab_id}-{role}"

    def ifname(self, link: Link, side: str) -> str:
        return f"v{self.lab_id}-{link.number}{side}"

    def interfaces(self, isp: str) -> dict[str, str]:
        """The censor's interfaces: ``lan`` towards the probe, ``wan`` towards transit."""
        n = isp_number(isp)
        return {"lan": self.ifname(LINKS[n - 1], "b"), "wan": self.ifname(LINKS[n + 1], "a")}

    def service_routes(self) -> list[str]:
        """The services' prefixes (a /24 or /48 around each address), routed abroad by transit."""
        return sorted({str(_network(a)) for a in self.service_addresses})

    def create_commands(self) -> list[str]:
        """``ip -batch`` lines run in the host's namespace: the namespaces and their veth pairs.

        Each veth end is created directly in its namespace; none is left in the host's.
        """
        lines = [f"netns add {self.ns(role)}" for role in ROLES]
        for link in LINKS:
            lines.append(
                f"link add {self.ifname(link, 'a')} netns {self.ns(link.a)} type veth "
                f"peer name {self.ifname(link, 'b')} netns {self.ns(link.b)}"
            )
        return lines

    def addresses(self) -> dict[str, list[tuple[str, str]]]:
        """Role → (interface, address/prefix) it is given."""
        out: dict[str, list[tuple[str, str]]] = {role: [] for role in ROLES}
        for link in LINKS:
            for role, side, addrs in ((link.a, "a", link.a_addresses), (link.b, "b", link.b_addresses)):  # fmt: skip
                out[role] += [(self.ifname(link, side), a) for a in addrs]
        for role, addrs in LOCAL.items():
            out[role] += [("lo", a) for a in addrs]
        for address in sorted(set(self.service_addresses)):
            bits = 32 if ipaddress.ip_address(address).version == 4 else 128
            out["abroad"].append(("lo", f"{address}/{bits}"))
        return out

    def routes(self) -> dict[str, list[str]]:
        out = {role: list(routes) for role, routes in ROUTES.items()}
        for prefix in self.service_routes():
            via = "198.18.0.10" if ipaddress.ip_network(prefix).version == 4 else "2001:db8:0:3::2"
            out["transit"].append(f"{prefix} via {via}")
        return out

    def namespace_commands(self) -> dict[str, list[str]]:
        """Namespace → its ``ip -batch`` lines: links up, addresses, routes (after :meth:`sysctls`).

        IPv6 addresses are added ``nodad``: usable at once, not after a second of duplicate detection.
        """
        out: dict[str, list[str]] = {}
        addresses, routes = self.addresses(), self.routes()
        for role in ROLES:
            lines = ["link set lo up"]
            lines += [f"link set {self.ifname(link, side)} up" for link in LINKS
                      for side, end in (("a", link.a), ("b", link.b)) if end == role]  # fmt: skip
            for ifname, address in addresses[role]:
                nodad = " nodad" if ":" in address else ""
                lines.append(f"addr add {address} dev {ifname}{nodad}")
            lines += [f"route add {route}" for route in routes[role]]
            out[self.ns(role)] = lines
        return out

    def sysctls(self) -> dict[str, list[str]]:
        """Per namespace, set before its links go up: no IPv6 duplicate address detection (the
        link-local addresses are usable at once, not after a second), and forwarding in the routers
        (IPv6 on the ISP 1 path only)."""
        out: dict[str, list[str]] = {}
        for role in ROLES:
            ifnames = [self.ifname(link, side) for link in LINKS
                       for side, end in (("a", link.a), ("b", link.b)) if end == role]  # fmt: skip
            out[self.ns(role)] = [
                f"net.ipv6.conf.{name}.accept_dad=0" for name in ("all", "default", *ifnames)
            ]
        for router in ROUTERS:
            out[self.ns(router)].append("net.ipv4.ip_forward=1")
        for router in ("censor1", "transit"):
            out[self.ns(router)].append("net.ipv6.conf.all.forwarding=1")
        return out

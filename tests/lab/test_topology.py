"""The lab's topology: the plan as data (no root), then a real lab — reachability and safety.

From each ISP's probe host, the ISP resolver answers catalogue names with lab addresses, HTTPS
endpoints abroad verify against the lab CA, STUN relays answer, the domestic helper echoes; IPv6
works from probe 1 to the public resolver. Safety: every address in every lab namespace is a lab,
loopback or link-local address, no namespace has a default route, no veth end is outside the lab's
namespaces, and no socket is bound outside the lab's networks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from aioice import stun

from msgwatch.catalogue import Catalogue, Endpoint, load_catalogue
from msgwatch.helper.server import parse_endpoint
from msgwatch.helper.udp import binding_response
from msgwatch.lab import netns
from msgwatch.lab import plan as P
from msgwatch.lab.catalogue_files import scrub_addresses, write_catalogue
from msgwatch.lab.mapping import map_catalogue
from msgwatch.lab.procs.proc import bound
from msgwatch.lab.servers import plan_services
from msgwatch.lab.topology import Lab, LabError
from msgwatch.steps.stun import build_request
from msgwatch.wire import mtproto, whatsapp

LAB = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]
ALLOWED = [*LAB, ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
           ipaddress.ip_network("fe80::/10")]  # fmt: skip


def _in(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0].strip("[]"))
    return any(ip in n for n in networks if n.version == ip.version)


# -- the plan, without root --------------------------------------------------------------------


def test_plan_uses_lab_addresses_short_names_and_no_default_route() -> None:
    mapping = map_catalogue(load_catalogue())
    topology = P.Topology("abc123", tuple(plan_services(mapping).addresses()))
    for role, entries in topology.addresses().items():
        for ifname, address in entries:
            assert len(ifname) <= 15
            assert _in(str(ipaddress.ip_interface(address).ip), LAB), (role, address)
    for routes in topology.routes().values():
        for route in routes:
            prefix, via = route.split(" via ")
            assert "default" not in route and _in(via, LAB)
            assert any(ipaddress.ip_network(prefix).subnet_of(n)  # type: ignore[arg-type]
                       for n in LAB if n.version == ipaddress.ip_network(prefix).version), route  # fmt: skip
    commands = topology.create_commands()
    veths = [c for c in commands if "type veth" in c]
    assert len(veths) == len(P.LINKS)
    assert all(c.count(" netns mwabc123-") == 2 for c in veths)  # both ends inside the lab
    assert {c.split()[2] for c in commands if c.startswith("netns add")} == {
        f"mwabc123-{r}" for r in P.ROLES
    }
    assert topology.interfaces("isp1") == {"lan": "vabc123-1b", "wan": "vabc123-3a"}
    assert topology.interfaces("isp2") == {"lan": "vabc123-2b", "wan": "vabc123-4a"}


def test_every_catalogue_endpoint_has_a_server() -> None:
    mapping = map_catalogue(load_catalogue())
    plan = plan_services(mapping)
    served = {(a, p) for a, p, _ in plan.web} | set(plan.turn) | plan.echo_tcp
    served |= plan.mtproto | plan.whatsapp
    assert plan.mtproto and plan.whatsapp  # Telegram DCs, WhatsApp chat: the responders
    for service in mapping.catalogue.services:
        for function in service.functions:
            for e in function.endpoints:
                address = e.address or mapping.hosts[e.host or ""]
                assert (address, e.port) in served, (service.id, e.label)
    assert {3478, 3479, 3480, 3481, 8801} <= set(plan.helper_ports())


def test_the_lab_catalogue_loads_and_holds_lab_addresses_only(tmp_path: Path) -> None:
    mapping = map_catalogue(load_catalogue())
    catalogue = load_catalogue(write_catalogue(mapping, tmp_path))
    assert [s.id for s in catalogue.services] == [s.id for s in mapping.catalogue.services]
    for service in catalogue.services:
        assert service.networks and all(
            _in(str(ipaddress.ip_network(n.prefix).network_address), LAB) for n in service.networks
        )
        for function in service.functions:
            for e in function.endpoints:
                assert e.address is None or _in(e.address, LAB)
    text = "".join(p.read_text() for p in tmp_path.glob("*.toml"))
    assert "149.154." not in text and "31.13." not in text  # Telegram's, Meta's real ranges
    assert scrub_addresses("relay 104.44.195.124:3478, [2001:db8::1]:443, 12:30:00") == (
        "relay [address]:3478, [2001:db8::1]:443, 12:30:00"
    )


def test_a_subset_of_the_catalogue_loads_without_its_successors(tmp_path: Path) -> None:
    full = load_catalogue()
    subset = Catalogue(full.version, full.path, tuple(full.select(["skype", "whatsapp"])))
    assert subset.service("skype") is not None and subset.service("skype").successor == "teams"  # type: ignore[union-attr]
    written = load_catalogue(write_catalogue(map_catalogue(subset), tmp_path))
    assert [s.id for s in written.services] == ["skype", "whatsapp"]
    assert written.service("skype").successor is None  # type: ignore[union-attr]


def test_helper_answers_stun_binding() -> None:
    request = build_request("stun")  # the probe's own: SOFTWARE + FINGERPRINT
    answer = binding_response(bytes(request), ("198.18.1.2", 40000))
    assert answer is not None
    response = stun.parse_message(answer)
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("198.18.1.2", 40000)
    assert binding_response(b"hello world, not stun", ("198.18.1.2", 1)) is None
    assert parse_endpoint("[2001:db8:3::10]:443") == ("2001:db8:3::10", 443)
    with pytest.raises(ValueError, match="not an IP address"):
        parse_endpoint("helper.lab:7")


def test_missing_root_or_package_is_said_plainly() -> None:
    problem = netns.unavailable(search="/nonexistent", euid=1000)
    assert problem is not None and "root" in problem
    for package in ("iproute2", "nftables", "dnsmasq-base", "nginx-light", "coturn"):
        assert package in problem
    with pytest.raises(LabError, match="6 lowercase hex"):
        Lab(lab_id="nope")


# -- a real lab --------------------------------------------------------------------------------


def _endpoint(lab: Lab, protocol: str, transport: str = "tcp", v6: bool = False) -> Endpoint:
    for service in lab.mapping.catalogue.services:
        for function in service.functions:
            for e in function.endpoints:
                if e.protocol != protocol or e.transport != transport:
                    continue
                if v6 == (e.address is not None and ":" in e.address):
                    return e
    raise LookupError(protocol)


def _address(lab: Lab, e: Endpoint) -> str:
    return e.address or lab.mapping.hosts[e.host or ""]


def _query(server: str, name: str, kind: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, kind), server, timeout=2)


def _https_get(address: str, port: int, host: str, cafile: str) -> bytes:
    context = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection((address, port), timeout=3) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def _stun(address: str, port: int, request: stun.Message) -> stun.Message:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(bytes(request), (address, port))
        return stun.parse_message(sock.recv(2048))


def _echo(address: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=3) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


@pytest.mark.netns
@pytest.mark.parametrize("isp", P.ISPS)
def test_probe_reaches_resolver_https_stun_and_domestic_helper(lab: Lab, isp: str) -> None:
    probe = lab.probe_role(isp)
    resolver = lab.resolver(isp).rsplit(":", 1)[0]
    https = _endpoint(lab, "https")
    assert https.host is not None
    answer = lab.run_in(probe, _query, resolver, https.host)
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.answer[0][0].to_text() == lab.mapping.hosts[https.host]
    assert (
        lab.run_in(probe, _query, resolver, "no-such-name.lab.invalid").rcode()
        == dns.rcode.NXDOMAIN
    )
    aaaa = lab.run_in(probe, _query, resolver, https.host, "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer

    page = lab.run_in(
        probe, _https_get, _address(lab, https), https.port, https.host, str(lab.ca_bundle)
    )
    assert page.startswith(b"HTTP/1.1 200") and https.host.encode() in page

    stun_ep = _endpoint(lab, "stun", "udp")
    binding = lab.run_in(probe, _stun, _address(lab, stun_ep), stun_ep.port,
                         stun.Message(stun.Method.BINDING, stun.Class.REQUEST))  # fmt: skip
    assert binding.message_class == stun.Class.RESPONSE
    assert binding.attributes["XOR-MAPPED-ADDRESS"][0] == f"198.18.{P.isp_number(isp)}.2"

    turn_ep = _endpoint(lab, "turn", "udp")
    allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST,
                            attributes={"REQUESTED-TRANSPORT": 17 << 24})  # fmt: skip
    challenge = lab.run_in(probe, _stun, _address(lab, turn_ep), turn_ep.port, allocate)
    assert challenge.message_class == stun.Class.ERROR
    assert challenge.attributes["ERROR-CODE"][0] == 401
    assert "REALM" in challenge.attributes and "NONCE" in challenge.attributes

    assert lab.run_in(probe, _echo, lab.helper_address("domestic"), 7, b"ping") == b"ping"
    helper = lab.run_in(probe, _stun, lab.helper_address("abroad"), 3480,
                        stun.Message(stun.Method.BINDING, stun.Class.REQUEST))  # fmt: skip
    assert helper.message_class == stun.Class.RESPONSE

    chat = _endpoint(lab, "whatsapp_chat")  # the helper answers as WhatsApp's chat does
    hello = lab.run_in(probe, _echo, _address(lab, chat), chat.port,
                       whatsapp.client_hello(os.urandom(32)))  # fmt: skip
    frame = whatsapp.parse_server_hello(hello)
    assert isinstance(frame, whatsapp.ServerFrame) and frame.server_hello

    block = lab.run_in(probe, _echo, lab.blockpage_ip(isp), 80, b"GET / HTTP/1.0\r\n\r\n")
    assert block.startswith(b"HTTP/1.1 403") and b"blocked by order of" in block


@pytest.mark.netns
def test_ipv6_on_the_isp1_path(lab: Lab) -> None:
    answer = lab.run_in("probe1", _query, P.PUBLIC_RESOLVER6, next(iter(lab.mapping.hosts)))
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    mtproto6 = _endpoint(lab, "mtproto", v6=True)  # the helper answers as a data centre does
    nonce = os.urandom(16)
    request = mtproto.req_pq_multi(nonce, mtproto.message_id(time.time()))
    reply = lab.run_in("probe1", _echo, _address(lab, mtproto6), mtproto6.port, request)
    assert isinstance(mtproto.parse_res_pq(reply, nonce), mtproto.ResPQ)


@pytest.mark.netns
def test_resolver_lines_make_the_isp_resolver_lie(lab: Lab) -> None:
    host = next(iter(sorted(lab.mapping.hosts)))
    resolver = lab.resolver("isp2").rsplit(":", 1)[0]
    lab.set_resolver_lines("isp2", [f"address=/{host}/{lab.blockpage_ip('isp2')}"])
    try:
        assert lab.run_in("probe2", _query, resolver, host).answer[0][0].to_text() == "198.18.2.80"
        truthful = lab.run_in("probe1", _query, lab.resolver("isp1").rsplit(":", 1)[0], host)
        assert truthful.answer[0][0].to_text() == lab.mapping.hosts[host]  # the other ISP's is not
    finally:
        lab.set_resolver_lines("isp2", [])
    assert (
        lab.run_in("probe2", _query, resolver, host).answer[0][0].to_text()
        == lab.mapping.hosts[host]
    )
    with pytest.raises(LabError, match="one line"):
        lab.set_resolver_lines("isp1", ["address=/x/198.18.1.80\nserver=8.8.8.8"])


@pytest.mark.netns
def test_every_address_is_a_lab_address_and_no_route_leaves(lab: Lab) -> None:
    for role in P.ROLES:
        ns = lab.ns(role)
        data = json.loads(subprocess.run(["ip", "-j", "-n", ns, "addr", "show"], check=True,
                                         capture_output=True, text=True).stdout)  # fmt: skip
        for link in data:
            for info in link.get("addr_info", []):
                assert _in(info["local"], ALLOWED), (ns, link["ifname"], info["local"])
        for family in ("-4", "-6"):
            default = subprocess.run(["ip", family, "-n", ns, "route", "show", "default"],
                                     check=True, capture_output=True, text=True).stdout  # fmt: skip
            assert default.strip() == "", (ns, default)
            routes = json.loads(subprocess.run(["ip", "-j", family, "-n", ns, "route", "show"],
                                               check=True, capture_output=True, text=True).stdout)  # fmt: skip
            for route in routes:
                dst = route["dst"]
                assert dst != "default"
                network = ipaddress.ip_network(dst if "/" in dst else f"{dst}", strict=False)
                assert _in(str(network.network_address), ALLOWED), (ns, route)


@pytest.mark.netns
def test_no_veth_end_outside_the_lab(lab: Lab) -> None:
    host = json.loads(subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True,
                                     text=True).stdout)  # fmt: skip
    assert not [link["ifname"] for link in host if link["ifname"].startswith(f"v{lab.lab_id}")]
    expected = {lab.topology.ifname(link, side): lab.ns(role)
                for link in P.LINKS for side, role in (("a", link.a), ("b", link.b))}  # fmt: skip
    found = {}
    for role in P.ROLES:
        links = json.loads(subprocess.run(["ip", "-j", "-n", lab.ns(role), "link", "show"],
                                          check=True, capture_output=True, text=True).stdout)  # fmt: skip
        for link in links:
            if link["ifname"] != "lo":
                found[link["ifname"].split("@")[0]] = lab.ns(role)
    assert found == expected


@pytest.mark.netns
def test_no_socket_is_bound_outside_the_lab(lab: Lab) -> None:
    lab.run_in("probe1", _query, lab.resolver("isp1").rsplit(":", 1)[0], "forwarded.lab.invalid")
    for role in P.ROLES:
        out = subprocess.run(["ss", "-N", lab.ns(role), "-Htuan"], check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
        for line in out.splitlines():
            local = line.split()[4]
            address = local.rsplit(":", 1)[0]
            assert address not in ("*", "0.0.0.0", "[::]") and _in(address, ALLOWED), (role, line)
    for server in lab.servers:
        assert server.proc is not None and server.proc.poll() is None, server.name
        assert all(_in(ip, LAB) for _, ip, _ in bound(server.proc.pid)), server.name

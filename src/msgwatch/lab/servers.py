"""The lab's real servers, configured from the lab catalogue and started inside their namespaces.

=========  =====================================================================================
abroad     dnsmasq, the public resolver (198.18.3.53, 2001:db8:3::53): every catalogue host name
           with its lab address (``host-record``: AAAA gets an empty NOERROR), NXDOMAIN for any
           other name (``local=/#/``);
           nginx: every ``https``/``http``/``tls`` endpoint on its address and port, a lab-CA
           certificate per host name by SNI, a default server with a certificate of its own for
           any other name;
           coturn, one per port (and transport set, and host name for TLS): every
           ``stun``/``turn`` endpoint over UDP, TCP or TLS — Binding is answered, an Allocate
           without credentials gets 401 with REALM and NONCE (over TLS with a lab-CA certificate
           for the endpoint's host name);
           the msgwatch test helper (``msgwatch helper serve --lab``): TCP echo on every ``tcp``
           endpoint, the first step of MTProto on every ``mtproto`` endpoint (req_pq_multi →
           resPQ) and of WhatsApp's chat on every ``whatsapp_chat`` endpoint (hello → ServerHello),
           and on its own addresses (198.18.3.10, 2001:db8:3::10) TCP + UDP echo, STUN Binding and
           the control API (port 8765).
censor n   dnsmasq, ISP n's resolver (198.18.n.1), forwarding to the public resolver from the
           censor's WAN address, plus any lines a scenario adds (resolver lies);
           nginx, the block page server (198.18.n.80, ports 80 and 443, certificate for
           ``blocked.lab.invalid``).
domestic   the test helper on 198.19.0.10 (echo, STUN, control API).
=========  =====================================================================================

Every server binds only the addresses it is given (checked at start: a socket outside the lab's
networks fails it), runs as ``ip netns exec <ns> <server>`` in its own session, and keeps its config,
pid file and logs as ``<name>.*`` in the run directory. :mod:`msgwatch.lab.procs.proc` starts, checks
and stops them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
from cryptography.hazmat.primitives.asymmetric import ec

from msgwatch.lab import netns
from msgwatch.lab import plan as P
from msgwatch.lab.mapping import LabMapping
from msgwatch.lab.netns import LabError
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server, which
from msgwatch.wire.helper_api import CALL_PORTS, CONTROL_PORT

HELPER_PORTS = (7, *CALL_PORTS)
"""Ports of the test helper (TCP and UDP): its defaults (the call ports and a neutral high port),
the echo port, and every service's call ports besides."""
HELPER_LIMITS = ("--budget-bytes", "1000000000", "--rate-pps", "50000",
                 "--measure-per-minute", "1000", "--send-per-minute", "1000")  # fmt: skip
"""The lab's helpers serve a whole run's replays (every service at once) from one probe address,
and the scenario tests' many runs: limits well above the production defaults."""
BLOCKPAGE_CERT = "blocked.lab.invalid"
DEFAULT_CERT = "default.lab.invalid"
BLOCKPAGE_HTML = (
    "<!DOCTYPE html><html><head><title>Access restricted</title></head><body>"
    "<h1>Access restricted</h1><p>Access to this resource has been blocked by order of the "
    "Ministry of Digital Development (msgwatch lab).</p></body></html>"
)
TURN_REALM, TURN_USER = "lab", "lab:lab"
_DENIED_PEERS = (  # a relay may only ever reach lab addresses
    "0.0.0.0-198.17.255.255", "198.20.0.0-255.255.255.255",
    "::-2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)  # fmt: skip

Bind = tuple[str, str, int]


def _norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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


def plan_services(mapping: LabMapping) -> ServicePlan:
    """Assign every endpoint of the lab catalogue to a server; two servers on one socket fail."""
    plan = ServicePlan(dns=dict(mapping.hosts))
    owner: dict[Bind, tuple[str, str]] = {}

    def claim(proto: str, address: str, port: int, server: str, label: str) -> None:
        key = (proto, address, port)
        if key in owner and owner[key][0] != server:
            raise LabError(f"{label} and {owner[key][1]} both need {proto} "
                           f"{_hostport(address, port)} ({server} / {owner[key][0]})")  # fmt: skip
        owner.setdefault(key, (server, label))

    for service in mapping.catalogue.services:
        for function in service.functions:
            plan.call_ports |= set(function.call_ports)
            for e in function.endpoints:
                if e.protocol == "dns":
                    continue
                address = _norm(e.address if e.address is not None else mapping.hosts[e.host or ""])
                label = f"{service.id}/{function.function}/{e.label}"
                tls = e.protocol in ("https", "tls") or e.transport == "tls"
                if e.protocol in ("stun", "turn"):
                    # TLS and TCP share the socket: coturn tells them apart by the first bytes.
                    proto = "udp" if e.transport == "udp" else "tcp"
                    claim(proto, address, e.port, "coturn", label)
                    plan.turn.setdefault((address, e.port), set()).add(e.transport)
                    if e.transport == "tls":
                        name = e.host or DEFAULT_CERT
                        known = plan.turn_names.setdefault((address, e.port), name)
                        if known != name:
                            raise LabError(f"{label}: TURN over TLS on {_hostport(address, e.port)}"
                                           f" needs one certificate, for {known} or {name}")  # fmt: skip
                elif e.protocol in ("https", "http", "tls") or e.transport == "tls":
                    claim("tcp", address, e.port, "nginx (TLS)" if tls else "nginx", label)
                    names = plan.web.setdefault((address, e.port, tls), set())
                    if e.host is not None:
                        names.add(e.host)
                elif e.protocol == "mtproto":
                    claim("tcp", address, e.port, "test helper (MTProto)", label)
                    plan.mtproto.add((address, e.port))
                elif e.protocol == "whatsapp_chat":
                    claim("tcp", address, e.port, "test helper (WhatsApp chat)", label)
                    plan.whatsapp.add((address, e.port))
                else:  # tcp: TCP echo
                    claim("tcp", address, e.port, "test helper", label)
                    plan.echo_tcp.add((address, e.port))
    return plan


@dataclass
class Context:
    """What every server builder needs: the run directory, the namespaces, the executables."""

    run: Path
    topology: P.Topology
    exe: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.exe:
            self.exe = {name: which(name) for name in ("dnsmasq", "nginx", "turnserver")}

    def server(
        self, name: str, role: str, argv: list[str], binds: Iterable[Bind],
        answers: Callable[[], bool] | None = None,
    ) -> Server:  # fmt: skip
        server = Server(name, netns.exec_argv(self.topology.ns(role), argv), self.run / f"{name}.log",
                        {(p, _norm(a), port) for p, a, port in binds}, allowed=P.LAB_NETWORKS)  # fmt: skip
        if answers is not None:
            server.answers = answers
        return server


def _dns_answers(address: str, name: str) -> bool:
    query = dns.message.make_query(name, "A")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        try:
            sock.sendto(query.to_wire(), (address, 53))
            return sock.recv(4096)[:2] == query.to_wire()[:2]
        except OSError:
            return False


def _stun_answers(addresses: Sequence[str], port: int) -> bool:
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)  # Binding, no attributes
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.1)
            try:
                sock.sendto(request, (address, port))
                if sock.recv(2048)[:2] != b"\x01\x01":
                    return False
            except OSError:
                return False
    return True


def _in(ctx: Context, role: str, fn: Callable[..., bool], *args: object) -> Callable[[], bool]:
    ns = ctx.topology.ns(role)
    return lambda: netns.run_in(ns, fn, *args, timeout=5)


def public_dns(ctx: Context, plan: ServicePlan) -> Server:
    name, run = "abroad-dns", ctx.run
    lines = ["# msgwatch lab: the public resolver, answering every lab catalogue name; NXDOMAIN else.",
             "no-resolv", "no-hosts", "bind-interfaces", f"listen-address={P.PUBLIC_RESOLVER}",
             f"listen-address={P.PUBLIC_RESOLVER6}", "port=53", f"pid-file={run / f'{name}.pid'}",
             f"log-facility={run / f'{name}.log'}", "log-queries", "local=/#/"]  # fmt: skip
    # host-record, not address=: AAAA is answered with NODATA instead of REFUSED.
    lines += [f"host-record={host},{address}" for host, address in sorted(plan.dns.items())]
    (run / f"{name}.conf").write_text("\n".join(lines) + "\n")
    binds = [(p, a, 53) for p in ("udp", "tcp") for a in (P.PUBLIC_RESOLVER, P.PUBLIC_RESOLVER6)]
    probe = next(iter(sorted(plan.dns)), "probe.lab.invalid")
    answers = _in(ctx, "abroad", _dns_answers, P.PUBLIC_RESOLVER, probe)
    argv = [ctx.exe["dnsmasq"], "-k", "-C", str(run / f"{name}.conf")]
    return ctx.server(name, "abroad", argv, binds, answers)


def check_resolver_lines(lines: Sequence[str]) -> list[str]:
    for line in lines:
        if any(c in line for c in "\r\n\0"):
            raise LabError(f"a resolver line must be one line: {line!r}")
    return list(lines)


def isp_dns(ctx: Context, isp: str, extra: Sequence[str] = ()) -> Server:
    role, run = f"censor{P.isp_number(isp)}", ctx.run
    name, address = f"{role}-dns", P.resolver_ip(isp)
    lines = [f"# msgwatch lab: {isp}'s resolver, forwarding to the public resolver.",
             "no-resolv", "no-hosts", "bind-interfaces", f"listen-address={address}", "port=53",
             f"server={P.PUBLIC_RESOLVER}@{P.wan_ip(isp)}", f"pid-file={run / f'{name}.pid'}",
             f"log-facility={run / f'{name}.log'}", "log-queries"]  # fmt: skip
    extra = check_resolver_lines(extra)
    if extra:
        lines += ["# added by the scenario's censor rules", *extra]
    (run / f"{name}.conf").write_text("\n".join(lines) + "\n")
    argv = [ctx.exe["dnsmasq"], "-k", "-C", str(run / f"{name}.conf")]
    return ctx.server(name, role, argv, [("udp", address, 53), ("tcp", address, 53)])


def _server_block(listen: str, names: Sequence[str], cert: tuple[Path, Path] | None,
                  body: str, status: int = 200, html: bool = False,
                  bulk: Path | None = None) -> str:  # fmt: skip
    default = not names
    lines = [f"listen {listen}{' ssl' if cert else ''}{' default_server' if default else ''};",
             f"server_name {' '.join(names) or '_'};"]  # fmt: skip
    if cert is not None:
        lines += [f"ssl_certificate {cert[0]};", f"ssl_certificate_key {cert[1]};"]
    if html:
        lines.append("default_type text/html;")
    lines.append(f'location / {{ return {status} "{body}"; }}')
    if bulk is not None:  # the object the probe's throughput test downloads
        lines.append(f"location = {BULK_PATH} {{ alias {bulk}; }}")
    return "    server {\n" + "".join(f"        {line}\n" for line in lines) + "    }\n"


def _nginx_conf(run: Path, name: str, blocks: Sequence[str]) -> Path:
    tmp = run / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    temps = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = (
        f"# msgwatch lab: {name}\n"
        f"daemon off;\nmaster_process off;\npid {run / f'{name}.pid'};\n"
        f"lock_file {run / f'{name}.lock'};\nerror_log {run / f'{name}.log'} notice;\n"
        "worker_rlimit_nofile 8192;\nevents { worker_connections 4096; }\nhttp {\n"
        f"    access_log {run / f'{name}-access.log'};\n{temps}"
        "    default_type text/plain;\n    server_tokens off;\n"
        "    server_names_hash_bucket_size 256;\n    server_names_hash_max_size 8192;\n"
        + "".join(blocks)
        + "}\n"
    )
    path = run / f"{name}.conf"
    path.write_text(conf)
    return path


def _nginx_argv(ctx: Context, name: str, conf: Path) -> list[str]:
    return [
        ctx.exe["nginx"],
        "-e",
        str(ctx.run / f"{name}.log"),
        "-p",
        str(ctx.run),
        "-c",
        str(conf),
    ]


BULK_PATH = "/msgwatch/bulk"
BULK_BYTES = 1 << 20


def web(ctx: Context, plan: ServicePlan, issue: Callable[[str], tuple[Path, Path]]) -> Server:
    name, blocks, binds = "abroad-web", [], []
    bulk = ctx.run / "bulk.bin"
    bulk.write_bytes(os.urandom(BULK_BYTES))
    for (address, port, tls), names in sorted(plan.web.items()):
        listen = _hostport(address, port)
        binds.append(("tcp", address, port))
        for host in sorted(names):
            blocks.append(_server_block(listen, [host], issue(host) if tls else None,
                                        f"msgwatch lab: {host}\\n", bulk=bulk))  # fmt: skip
        blocks.append(_server_block(listen, [], issue(DEFAULT_CERT) if tls else None,
                                    f"msgwatch lab: {address}\\n", bulk=bulk))  # fmt: skip
    conf = _nginx_conf(ctx.run, name, blocks)
    return ctx.server(name, "abroad", _nginx_argv(ctx, name, conf), binds)


def blockpage(ctx: Context, isp: str, issue: Callable[[str], tuple[Path, Path]]) -> Server:
    role = f"censor{P.isp_number(isp)}"
    name, address = f"{role}-blockpage", P.blockpage_ip(isp)
    blocks = [
        _server_block(_hostport(address, 80), [], None, BLOCKPAGE_HTML, 403, html=True),
        _server_block(_hostport(address, 443), [], issue(BLOCKPAGE_CERT), BLOCKPAGE_HTML, 403,
                      html=True),
    ]  # fmt: skip
    conf = _nginx_conf(ctx.run, name, blocks)
    binds = [("tcp", address, 80), ("tcp", address, 443)]
    return ctx.server(name, role, _nginx_argv(ctx, name, conf), binds)


def coturns(
    ctx: Context, plan: ServicePlan, issue: Callable[[str], tuple[Path, Path]]
) -> list[Server]:
    """One coturn per (port, transports, TLS name). For TLS, coturn's plain TCP listener on the
    endpoint's port, given a certificate (the lab CA's, for the endpoint's host name), tells a TLS
    ClientHello from plain STUN by the first bytes and serves both; its separate TLS listener
    (``--tls-listening-port``, which would default to 5349) goes to a port the kernel picks and is
    not used. (The reverse does not work: plain TCP to the TLS listener gets no answer.)"""
    servers: list[Server] = []
    groups = plan.turn_groups()
    ports = [port for port, _, _ in groups]
    kinds = [(port, transports) for port, transports, _ in groups]
    for index, ((port, transports, tls_name), addresses) in enumerate(groups.items()):
        suffix = "" if ports.count(port) == 1 else "-" + "-".join(sorted(transports))
        suffix += f"-{index}" if kinds.count((port, transports)) > 1 else ""
        name, run = f"abroad-turn-{port}{suffix}", ctx.run
        low = 49152 + 256 * index  # relay ports: a range of its own for each coturn
        args = [f"--listening-ip={a}" for a in addresses] + [f"--relay-ip={a}" for a in addresses]
        args += [
            f"--listening-port={port}", "--no-rfc5780",  # no second port (port + 1)
            "--no-dtls", "--no-tcp-relay", "--no-cli", "--no-multicast-peers",
            f"--realm={TURN_REALM}", "--lt-cred-mech", f"--user={TURN_USER}",  # Allocate → 401
            f"--userdb={run / f'{name}.db'}",
            *[f"--denied-peer-ip={r}" for r in _DENIED_PEERS],
            f"--min-port={low}", f"--max-port={low + 255}",
            f"--log-file={run / f'{name}.log'}", "--simple-log", f"--pidfile={run / f'{name}.pid'}",
        ]  # fmt: skip
        if "tls" in transports:
            cert, key = issue(tls_name or DEFAULT_CERT)
            args += ["--tls-listening-port=0", f"--cert={cert}", f"--pkey={key}"]
        else:
            args.append("--no-tls")
            if "tcp" not in transports:
                args.append("--no-tcp")
        if "udp" not in transports:
            args.append("--no-udp")
        (run / f"{name}.args").write_text("\n".join(args) + "\n")  # the config, for reading
        stream = "tcp" in transports or "tls" in transports
        binds = [("udp", a, port) for a in addresses if "udp" in transports]
        binds += [("tcp", a, port) for a in addresses if stream]
        answers = (
            _in(ctx, "abroad", _stun_answers, addresses, port) if "udp" in transports else None
        )
        # -n: no configuration file; every option is on the command line (with -c it would also
        # read one, and then bind every interface).
        servers.append(
            ctx.server(name, "abroad", [ctx.exe["turnserver"], "-n", *args], binds, answers)
        )
    return servers


def _helper_answers(address: str, port: int) -> bool:
    """``GET /v1/health`` on the helper's control port answers 200."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    request = f"GET /v1/health HTTP/1.1\r\nHost: {_hostport(address, port)}\r\n"
    request += "Connection: close\r\n\r\n"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((address, port))
            sock.sendall(request.encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def helper(ctx: Context, role: str, addresses: Sequence[str], ports: Sequence[int],
           echo_tcp: Iterable[tuple[str, int]] = (), mtproto: Iterable[tuple[str, int]] = (),
           whatsapp: Iterable[tuple[str, int]] = ()) -> Server:  # fmt: skip
    """The msgwatch test helper in lab mode on ``addresses`` × ``ports`` (UDP and TCP), its
    control API on port 8765, plus TCP echo on ``echo_tcp`` (the lab's TCP service endpoints) and
    the MTProto / WhatsApp responders on ``mtproto`` / ``whatsapp``."""
    name = f"{role}-helper"
    extra, listed = sorted(set(echo_tcp)), ",".join(map(str, sorted(set(ports))))
    answering = [("--mtproto-listen", sorted(set(mtproto))),
                 ("--whatsapp-listen", sorted(set(whatsapp)))]  # fmt: skip
    argv = [sys.executable, "-m", "msgwatch", "helper", "serve", "--lab",
            "--control-port", str(CONTROL_PORT), "--udp-ports", listed, "--tcp-ports", listed,
            "--resolver", _hostport(P.PUBLIC_RESOLVER, 53), "--ca-bundle", str(ctx.run / "ca.pem"),
            *HELPER_LIMITS]  # fmt: skip
    argv += [arg for a in addresses for arg in ("--listen", a)]
    argv += [arg for a, p in extra for arg in ("--tcp-listen", _hostport(a, p))]
    argv += [arg for option, eps in answering for a, p in eps for arg in (option, _hostport(a, p))]
    binds = [(t, a, p) for t in ("tcp", "udp") for a in addresses for p in ports]
    binds += [("tcp", a, CONTROL_PORT) for a in addresses] + [("tcp", a, p) for a, p in extra]
    binds += [("tcp", a, p) for _, eps in answering for a, p in eps]
    server = ctx.server(name, role, argv, binds,
                        _in(ctx, role, _helper_answers, addresses[0], CONTROL_PORT))  # fmt: skip
    server.log = server.out  # it logs to stderr only
    return server


def build(ctx: Context, plan: ServicePlan, authority: Authority,
          resolver_lines: dict[str, list[str]]) -> list[Server]:  # fmt: skip
    """Every server of the lab, configured (files written) but not started."""
    certs = ctx.run / "certs"
    certs.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())  # one leaf key, a certificate per name

    @functools.cache
    def issue(name: str) -> tuple[Path, Path]:
        return authority.issue(name, certs, key)

    ports = plan.helper_ports()
    servers = [public_dns(ctx, plan), web(ctx, plan, issue), *coturns(ctx, plan, issue),
               helper(ctx, "abroad", [P.HELPERS["abroad"], P.HELPER6], ports, plan.echo_tcp,
                      plan.mtproto, plan.whatsapp),
               helper(ctx, "domestic", [P.HELPERS["domestic"]], ports)]  # fmt: skip
    for isp in P.ISPS:
        servers += [isp_dns(ctx, isp, resolver_lines.get(isp, [])), blockpage(ctx, isp, issue)]
    return servers

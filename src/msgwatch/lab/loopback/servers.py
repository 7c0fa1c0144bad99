"""The mini-Internet's real servers: dnsmasq, nginx and coturn, configured from the topology.

How a server process is started, found ready and stopped is :mod:`msgwatch.lab.procs.proc` (shared
with the namespace lab); this module writes the three configurations. Ready means the process holds
its sockets and answers (a DNS query, a STUN Binding request); every socket it holds must be bound
on 127.0.0.0/8, or the start fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from msgwatch.lab.loopback import topology as T
from msgwatch.lab.procs import proc
from msgwatch.lab.procs.proc import LOOPBACK, SEARCH, Server, ServerError, which
from msgwatch.lab.procs.ready import dns_answers, stun_answers

__all__ = ["PACKAGES", "MiniInternetError", "Server", "build", "foreign_binds", "unavailable"]

PACKAGES = {"dnsmasq": "dnsmasq-base", "nginx": "nginx-light", "turnserver": "coturn"}


class MiniInternetError(ServerError):
    """The mini-Internet cannot start or stop; the message says what to do."""

    def __init__(self, server: str, what: str = "", logs: list[Path] | None = None,
                 tail: str = "") -> None:  # fmt: skip
        if not what:  # a plain message, not about one server
            RuntimeError.__init__(self, server)
            self.server, self.what, self.logs, self.tail = "", server, [], ""
        else:
            super().__init__(server, what, logs or [], tail)


def unavailable(search: str = SEARCH) -> str | None:
    """Why the mini-Internet cannot run here (a server missing, not root), or None."""
    problem = proc.missing(PACKAGES, search)
    if problem:
        return problem
    if os.geteuid() != 0:
        return "the mini-Internet must run as root (its servers bind ports 53, 80 and 443)"
    return None


def foreign_binds(pid: int) -> list[str]:
    """Sockets of ``pid`` bound to an address outside 127.0.0.0/8."""
    return proc.foreign_binds(pid, LOOPBACK)


def _server(name: str, argv: list[str], log: Path, binds: set[tuple[str, str, int]],
            answers: Callable[[], bool] | None = None) -> Server:  # fmt: skip
    if answers is None:
        return Server(name, argv, log, binds, error=MiniInternetError)
    return Server(name, argv, log, binds, answers, error=MiniInternetError)


def _dns_ready() -> bool:
    return dns_answers(T.RESOLVER_IP, next(iter(T.DNS)))


def _stun_ready() -> bool:
    return stun_answers(T.TURN_IPS, T.TURN_PORT)


def dnsmasq(run: Path, exe: str) -> Server:
    lines = ["# msgwatch mini-Internet resolver: the names below, NXDOMAIN for all others.",
             "no-resolv", "no-hosts", "bind-interfaces", f"listen-address={T.RESOLVER_IP}",
             "port=53", f"pid-file={run / 'dnsmasq.pid'}", f"log-facility={run / 'dnsmasq.log'}",
             "log-queries", "local=/#/"]  # fmt: skip
    for name, address in T.DNS.items():
        # host-record, not address=: it answers AAAA with NODATA instead of REFUSED.
        lines.append(f"host-record={name},{address}" if address else f"address=/{name}/")
    (run / "dnsmasq.conf").write_text("\n".join(lines) + "\n")
    argv = [exe, "-k", "-C", str(run / "dnsmasq.conf")]
    binds = {("udp", T.RESOLVER_IP, 53), ("tcp", T.RESOLVER_IP, 53)}
    return _server("dnsmasq", argv, run / "dnsmasq.log", binds, _dns_ready)


def _server_block(site: T.Site, cert: tuple[Path, Path] | None, default: bool) -> str:
    listen = f"{site.address}:{site.port}{' ssl' if site.tls else ''}"
    lines = [f"listen {listen}{' default_server' if default else ''};",
             f"server_name {' '.join(site.names) or '_'};"]  # fmt: skip
    if cert is not None:
        lines += [f"ssl_certificate {cert[0]};", f"ssl_certificate_key {cert[1]};"]
    if site.blockpage:
        lines += ["default_type text/html;", f'location / {{ return 403 "{T.BLOCKPAGE_HTML}"; }}']
    else:
        body = f"msgwatch mini-Internet: {' '.join(site.names) or site.address}\\n"
        lines.append(f'location / {{ return 200 "{body}"; }}')
    return "    server {\n" + "".join(f"        {line}\n" for line in lines) + "    }\n"


def nginx(run: Path, exe: str, issue: Callable[[str], tuple[Path, Path]]) -> Server:
    tmp = run / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    blocks = []
    for where in sorted({(s.address, s.port) for s in T.SITES}):
        sites = [s for s in T.SITES if (s.address, s.port) == where]
        if all(s.names for s in sites):  # unknown SNI / Host: a default server of our own
            sites.append(T.Site(*where, tls=sites[0].tls))
        for site in sites:
            name = site.cert_for or (site.names[0] if site.names else T.DEFAULT_CERT)
            cert = issue(name) if site.tls else None
            blocks.append(_server_block(site, cert, default=not site.names))
    temps = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = (
        "# msgwatch mini-Internet web servers (loopback only)\n"
        f"daemon off;\nmaster_process off;\npid {run / 'nginx.pid'};\n"
        f"lock_file {run / 'nginx.lock'};\nerror_log {run / 'nginx.log'} info;\n"
        "events { worker_connections 512; }\nhttp {\n"
        f"    access_log {run / 'nginx-access.log'};\n{temps}"
        "    default_type text/plain;\n    server_tokens off;\n" + "".join(blocks) + "}\n"
    )
    (run / "nginx.conf").write_text(conf)
    argv = [exe, "-e", str(run / "nginx.log"), "-p", str(run), "-c", str(run / "nginx.conf")]
    binds = {("tcp", site.address, site.port) for site in T.SITES}
    return _server("nginx", argv, run / "nginx.log", binds)


def coturn(run: Path, exe: str) -> Server:
    args = [f"--listening-ip={ip}" for ip in T.TURN_IPS] + [f"--relay-ip={ip}" for ip in T.TURN_IPS]
    args += [
        f"--listening-port={T.TURN_PORT}", "--no-tls", "--no-dtls", "--no-tcp-relay",
        "--realm=minilab", "--lt-cred-mech", "--user=minilab:minilab",  # Allocate → 401 challenge
        f"--userdb={run / 'turndb'}", "--no-cli", "--no-multicast-peers",
        "--denied-peer-ip=0.0.0.0-126.255.255.255", "--denied-peer-ip=128.0.0.0-255.255.255.255",
        "--min-port=49152", "--max-port=49407", f"--log-file={run / 'coturn.log'}",
        "--simple-log", f"--pidfile={run / 'coturn.pid'}",
    ]  # fmt: skip
    (run / "coturn.args").write_text("\n".join(args) + "\n")  # the config, for reading
    binds = {("udp", ip, T.TURN_PORT) for ip in T.TURN_IPS}
    return _server("coturn", [exe, "-n", *args], run / "coturn.log", binds, _stun_ready)


def build(run: Path, issue: Callable[[str], tuple[Path, Path]]) -> list[Server]:
    """The three servers, configured for the run directory ``run`` (not yet started)."""
    exe = {name: which(name) for name in PACKAGES}
    return [dnsmasq(run, exe["dnsmasq"]), nginx(run, exe["nginx"], issue),
            coturn(run, exe["turnserver"])]  # fmt: skip

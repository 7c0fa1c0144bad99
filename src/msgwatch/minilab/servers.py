"""The mini-Internet's real servers: dnsmasq, nginx and coturn, configured from the topology.

Each server is a child process in the foreground (``dnsmasq -k``, nginx with ``daemon off`` and
``master_process off``, coturn without ``-o``), started as the leader of a new session: a Ctrl-C in
the terminal does not reach it, and signalling its process group also reaches anything it forked
(dnsmasq forks per TCP query). Its config, pid file and logs are files in the run directory.

Ready means: the process itself (not a stray server of a crashed run) holds the sockets it should
(read from ``/proc/<pid>/net``), and it answers (a DNS query, a STUN Binding request). Then every
socket it holds must be bound on 127.0.0.0/8: a server that ignored its configuration and bound the
host's interfaces fails the start (coturn does that when given both ``-n`` and ``-c``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.message

from msgwatch.minilab import topology as T

PACKAGES = {"dnsmasq": "dnsmasq-base", "nginx": "nginx-light", "turnserver": "coturn"}
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class MiniInternetError(RuntimeError):
    """The mini-Internet cannot start or stop; the message says what to do."""


def unavailable(search: str = _SEARCH) -> str | None:
    """Why the mini-Internet cannot run here (a server missing, not root), or None."""
    missing = [exe for exe in PACKAGES if shutil.which(exe, path=search) is None]
    if missing:
        names = ", ".join(f"{exe} (Debian package {PACKAGES[exe]})" for exe in missing)
        packages = " ".join(PACKAGES[exe] for exe in missing)
        return f"not installed: {names}; install with: apt-get install {packages}"
    if os.geteuid() != 0:
        return "the mini-Internet must run as root (its servers bind ports 53, 80 and 443)"
    return None


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` runs (zombies, dead but not yet reaped, do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] not in "ZX":
            return True
    return False


def end_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, grace: float = 3.0) -> bool:
    """SIGTERM a process group, SIGKILL after ``grace`` s; True once none of it is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our child
            if not group_alive(pgid):
                return True
            time.sleep(0.01)
    return not group_alive(pgid)


def bound(pid: int) -> set[tuple[str, str, int]]:
    """(``tcp``/``udp``, address, port) of every socket ``pid`` has bound; empty once it is gone."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        tables = {
            t: Path(f"/proc/{pid}/net/{t}").read_text() for t in ("tcp", "udp", "tcp6", "udp6")
        }
    except OSError:
        return set()
    found = set()
    for table, text in tables.items():
        for line in text.splitlines()[1:]:
            cols = line.split()
            host, port = cols[1].split(":")
            if cols[9] not in inodes or int(port, 16) == 0:
                continue
            raw = bytes.fromhex(host)
            ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            found.add((table[:3], str(ip), int(port, 16)))
    return found


def foreign_binds(pid: int) -> list[str]:
    """Sockets of ``pid`` bound to an address outside 127.0.0.0/8."""
    return sorted(f"{proto} {ip}:{port}" for proto, ip, port in bound(pid)
                  if ipaddress.ip_address(ip) not in _LOOPBACK)  # fmt: skip


@dataclass
class Server:
    """One server process: how to start it, where it logs, how to tell it is up."""

    name: str
    argv: list[str]
    log: Path
    binds: set[tuple[str, str, int]]
    """(protocol, address, port) the process must hold before it counts as up."""
    answers: Callable[[], bool] = lambda: True
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, run: Path) -> int:
        with (run / f"{self.name}.out").open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=run,
            )  # fmt: skip
        return self.proc.pid

    def _fail(self, what: str) -> MiniInternetError:
        out = self.log.with_name(f"{self.name}.out")  # stdout/stderr: errors before the log opens
        logs = [p for p in (self.log, out) if p.is_file() and p.stat().st_size] or [self.log]
        tail = "".join(
            f"\n    {line}" for p in logs if p.is_file() for line in p.read_text(errors="replace")
            .splitlines()[-5:] if line.strip()
        )  # fmt: skip
        return MiniInternetError(f"{self.name} {what}; see {' and '.join(map(str, logs))}{tail}")

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until the process holds its sockets (ours, not a stray server's) and answers."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not (self.binds <= bound(self.proc.pid) and self.answers()):
            if self.proc.poll() is not None:
                raise self._fail(f"exited at start (status {self.proc.returncode})")
            if time.monotonic() > deadline:
                raise self._fail(f"did not come up within {timeout:.0f} s")
            time.sleep(0.02)
        bad = foreign_binds(self.proc.pid)
        if bad:
            raise self._fail(f"bound addresses outside 127.0.0.0/8 ({', '.join(bad)})")

    def stop(self) -> bool:
        if self.proc is None:
            return True
        gone = end_group(self.proc.pid, self.proc)
        if gone:
            self.proc.wait(timeout=2)  # reaped: no zombie left either
        return gone


def _dns_ready() -> bool:
    query = dns.message.make_query(next(iter(T.DNS)), "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        try:
            sock.sendto(query.to_wire(), (T.RESOLVER_IP, 53))
            return sock.recv(4096)[:2] == query.to_wire()[:2]
        except OSError:
            return False


def _stun_ready() -> bool:
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)  # Binding, no attributes
    for ip in T.TURN_IPS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.1)
            try:
                sock.sendto(request, (ip, T.TURN_PORT))
                if sock.recv(2048)[:2] != b"\x01\x01":
                    return False
            except OSError:
                return False
    return True


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
    return Server("dnsmasq", argv, run / "dnsmasq.log", binds, _dns_ready)


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
    return Server("nginx", argv, run / "nginx.log", binds)


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
    return Server("coturn", [exe, "-n", *args], run / "coturn.log", binds, _stun_ready)


def build(run: Path, issue: Callable[[str], tuple[Path, Path]]) -> list[Server]:
    """The three servers, configured for the run directory ``run`` (not yet started)."""
    exe = {name: shutil.which(name, path=_SEARCH) or name for name in PACKAGES}
    return [dnsmasq(run, exe["dnsmasq"]), nginx(run, exe["nginx"], issue),
            coturn(run, exe["turnserver"])]  # fmt: skip

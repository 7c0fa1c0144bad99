"""The lab's proxies abroad: Shadowsocks, two SOCKS5 servers and an HTTP CONNECT proxy.

Each runs in the foreground in ``abroad`` on its own :data:`plan.CIRCUMVENTION` address:

- ``ss-server`` (Debian's ``shadowsocks-libev``) on ``shadowsocks`` port 8388, TCP and UDP
  (``mode: tcp_and_udp``), ``chacha20-ietf-poly1305``, a password generated per lab; its
  configuration (``abroad-ss-server.json``, mode 0600: it holds the password) is read with ``-c``,
  so the password is not on a command line. It drops to ``nobody`` (``-a``).
- ``danted`` (Debian's ``dante-server``) on ``socks5`` port 1080: SOCKS5 without authentication
  (a username/password method would need system accounts on the host; the other SOCKS server
  covers RFC 1929), CONNECT, BIND and UDP ASSOCIATE (``udpassociate``/``udpreply``) to and from the
  lab's networks only (``client``/``socks`` rules: everything else is blocked). It starts as root
  in the namespace (``user.privileged: root`` only for what needs it; its work processes run as
  ``nobody``, ``user.unprivileged``). Dante 1.4 has no option for its pid file: it writes
  ``/var/run/danted.pid`` (informational only; the lab stops it by its process group).
- ``microsocks`` (Debian's ``microsocks``) on ``socks5-micro`` port 1080, with a username and
  password generated per lab (RFC 1929), outgoing connections from its own address (``-b``). It
  has no UDP ASSOCIATE: it answers "command not supported" (the transport records that).
- ``tinyproxy`` (Debian's ``tinyproxy``) on ``http-proxy`` port 8888, foreground (``-d``),
  ``Allow`` only the lab's prefixes, ``ConnectPort`` 443, 5222 (WhatsApp's chat) and the helper's 40000, running as
  ``nobody``.

Abroad has no default route: whatever a proxy is asked for, it can reach only the lab.

Entries: ``shadowsocks`` (type ``shadowsocks``, params ``method``, ``password``, ``udp``),
``socks5`` and ``socks5-micro`` (type ``socks5``; the latter with ``username``/``password``),
``http-connect`` (type ``http_connect``).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from msgwatch.lab import plan as P
from msgwatch.lab.circumvention import Built
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server, which
from msgwatch.lab.servers.base import Context, IssueFn

SS_PORT, SOCKS_PORT, MICRO_PORT, HTTP_PORT = 8388, 1080, 1080, 8888
SS_METHOD = "chacha20-ietf-poly1305"
HELPER_PORT = 40000
LAB_PREFIXES = ("198.18.0.0/15", "2001:db8::/32")
UNPRIVILEGED = "nobody"
READY_TIMEOUT = 10.0
EXECUTABLES = {"ss-server": "shadowsocks-libev", "danted": "dante-server",
               "microsocks": "microsocks", "tinyproxy": "tinyproxy"}  # fmt: skip
"""Executable → Debian package."""


def build(ctx: Context, authority: Authority, issue: IssueFn) -> Built:
    """The four proxies (configured, not started) and their entries."""
    del authority, issue  # no certificates: none of these speaks TLS
    exe = {name: ctx.exe.get(name) or which(name) for name in EXECUTABLES}
    servers: list[Server] = []
    entries: list[dict[str, Any]] = []
    for make in (shadowsocks, dante, microsocks, tinyproxy):
        server, entry = make(ctx, exe)
        servers.append(server)
        entries.append(entry)
    return Built(servers=servers, entries=entries, ready_timeout=READY_TIMEOUT)


def _private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (it holds a secret)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def shadowsocks(ctx: Context, exe: dict[str, str]) -> tuple[Server, dict[str, Any]]:
    name, address = "abroad-ss-server", P.CIRCUMVENTION["shadowsocks"]
    password = secrets.token_urlsafe(18)
    config = {"server": address, "server_port": SS_PORT, "password": password,
              "method": SS_METHOD, "mode": "tcp_and_udp", "timeout": 60}  # fmt: skip
    path = _private(ctx.run / f"{name}.json", json.dumps(config, indent=2) + "\n")
    argv = [exe["ss-server"], "-c", str(path), "-a", UNPRIVILEGED]
    binds = [("tcp", address, SS_PORT), ("udp", address, SS_PORT)]
    entry = {
        "name": "shadowsocks", "type": "shadowsocks", "address": address, "port": SS_PORT,
        "protocol": "tcp", "source": "lab",
        "params": {"method": SS_METHOD, "password": password, "udp": True},
    }  # fmt: skip
    return ctx.server(name, "abroad", argv, binds), entry


def dante_config(address: str, port: int) -> str:
    """danted's configuration: SOCKS5 without authentication, lab networks only."""
    rules = []
    for client in LAB_PREFIXES:
        rules.append(f"client pass {{\n  from: {client} to: 0/0\n  log: error\n}}")
    rules.append("client block {\n  from: 0/0 to: 0/0\n  log: connect error\n}")
    for source in LAB_PREFIXES:
        for target in LAB_PREFIXES:
            rules.append(
                f"socks pass {{\n  from: {source} to: {target}\n"
                "  command: connect udpassociate udpreply\n  log: error\n}"
            )
    rules.append("socks block {\n  from: 0/0 to: 0/0\n  log: connect error\n}")
    return "\n".join([
        "# msgwatch lab: SOCKS5 abroad (no authentication, lab networks only)",
        "logoutput: stderr",
        f"internal: {address} port = {port}",
        f"external: {address}",
        "clientmethod: none",
        "socksmethod: none",
        "user.privileged: root",
        f"user.unprivileged: {UNPRIVILEGED}",
        "timeout.negotiate: 10",
        "timeout.io: 120",
        *rules,
    ]) + "\n"  # fmt: skip


def dante(ctx: Context, exe: dict[str, str]) -> tuple[Server, dict[str, Any]]:
    name, address = "abroad-danted", P.CIRCUMVENTION["socks5"]
    path = ctx.run / f"{name}.conf"
    path.write_text(dante_config(address, SOCKS_PORT))
    # -N 1: one server process; no -D: foreground
    argv = [exe["danted"], "-f", str(path), "-N", "1"]
    entry = {
        "name": "socks5", "type": "socks5", "address": address, "port": SOCKS_PORT,
        "protocol": "tcp", "source": "lab", "params": {"udp": True},
    }  # fmt: skip
    return ctx.server(name, "abroad", argv, [("tcp", address, SOCKS_PORT)]), entry


def microsocks(ctx: Context, exe: dict[str, str]) -> tuple[Server, dict[str, Any]]:
    name, address = "abroad-microsocks", P.CIRCUMVENTION["socks5-micro"]
    username, password = "lab", secrets.token_urlsafe(12)
    argv = [exe["microsocks"], "-i", address, "-p", str(MICRO_PORT), "-b", address,
            "-u", username, "-P", password]  # fmt: skip
    entry = {
        "name": "socks5-micro", "type": "socks5", "address": address, "port": MICRO_PORT,
        "protocol": "tcp", "source": "lab",
        "params": {"username": username, "password": password},
    }  # fmt: skip
    return ctx.server(name, "abroad", argv, [("tcp", address, MICRO_PORT)]), entry


def tinyproxy_config(address: str, port: int) -> str:
    """tinyproxy's configuration: CONNECT to 443 and the helper's port, lab clients only."""
    return "\n".join([
        "# msgwatch lab: HTTP CONNECT abroad (lab networks only)",
        f"User {UNPRIVILEGED}",
        "Group nogroup",
        f"Port {port}",
        f"Listen {address}",
        f"Bind {address}",
        "Timeout 120",
        "MaxClients 64",
        "LogLevel Notice",
        "DisableViaHeader Yes",
        *(f"Allow {prefix}" for prefix in LAB_PREFIXES),
        "ConnectPort 443",
        "ConnectPort 5222",  # WhatsApp's chat port (its text path through the proxy)
        f"ConnectPort {HELPER_PORT}",
    ]) + "\n"  # fmt: skip


def tinyproxy(ctx: Context, exe: dict[str, str]) -> tuple[Server, dict[str, Any]]:
    name, address = "abroad-tinyproxy", P.CIRCUMVENTION["http-proxy"]
    path = ctx.run / f"{name}.conf"
    path.write_text(tinyproxy_config(address, HTTP_PORT))
    argv = [exe["tinyproxy"], "-d", "-c", str(path)]
    entry = {
        "name": "http-connect", "type": "http_connect", "address": address, "port": HTTP_PORT,
        "protocol": "tcp", "source": "lab", "params": {},
    }  # fmt: skip
    return ctx.server(name, "abroad", argv, [("tcp", address, HTTP_PORT)]), entry

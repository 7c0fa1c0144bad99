"""The lab's private Tor network, abroad: three directory authorities (also relays), a middle
relay, an exit and an obfs4 bridge, each a foreground Debian ``tor`` with ``TestingTorNetwork 1``.

Addresses are :data:`msgwatch.lab.plan.CIRCUMVENTION` (``tor-auth1..3``, ``tor-relay``,
``tor-exit``, ``tor-bridge``); every tor listens on its own address only (ORPort 9001, the
authorities' DirPort 9030, the bridge's obfs4 9443) and binds its outgoing connections to it.
Keys are made before the start (:mod:`.tor_keys`). The fast-voting options follow chutney's
(``torrc_templates/common.i``, ``authority.i``): a first consensus a few seconds after the start,
Guard/Exit/HSDir flags voted without waiting for stability. The exit's policy is ``accept *:*`` with
``ExitPolicyRejectPrivate 0``: what confines it to the lab is the abroad namespace, which has routes
to the lab's networks only and no default route (the lab checks that before any server starts).
A policy accepting only ``198.18.0.0/15`` was measured not to work: the exit's microdescriptor then
summarises its policy as "reject 1-65535", and clients (vanilla and through the bridge) see "no
exits"; with full descriptors (``UseMicrodescriptors 0``) a vanilla client used it, but a client
through the bridge then could not build circuits at all.
The bridge (``BridgeRelay 1``, ``PublishServerDescriptor 0``) runs ``obfs4proxy`` as its server
transport; a client reaches the network through it alone.

``settle`` waits until an authority's DirPort serves a consensus that lists every relay as
Running (and the exit with the Exit flag), every tor has enough directory information
(an exit without a consensus of its own refuses streams: measured), and that the bridge's ``obfs4_bridgeline.txt`` carries
the certificate written into the entries. Entries: ``tor`` (vanilla), ``tor-obfs4`` (the bridge),
``tor-reach`` (every OR port, DirPort and the obfs4 port, like OONI's ``tor`` test's targets).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from msgwatch.lab import netns
from msgwatch.lab import plan as P
from msgwatch.lab.circumvention import Built
from msgwatch.lab.circumvention.tor_keys import (
    Obfs4State,
    authority_keys,
    fingerprints,
    obfs4_state,
)
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import ServerError, missing, which
from msgwatch.lab.servers.base import Context, IssueFn, in_ns

ORPORT, DIRPORT, OBFS4_PORT = 9001, 9030, 9443
AUTHORITIES = ("tor-auth1", "tor-auth2", "tor-auth3")
RELAYS = (*AUTHORITIES, "tor-relay", "tor-exit")
BRIDGE = "tor-bridge"
READY_TIMEOUT = 60.0
"""Seconds for the network to come up: every tor listening, then a consensus listing every relay."""
SOURCE = "lab"
PACKAGES = {"tor": "tor", "tor-gencert": "tor", "obfs4proxy": "obfs4proxy"}
"""Executables the network needs → the Debian package of each."""
MAX_CONSENSUS = 1 << 20
"""Bytes read of a consensus (a lab consensus is a few KB)."""
FAST_VOTING = (
    "TestingV3AuthInitialVotingInterval 5", "TestingV3AuthInitialVoteDelay 2",
    "TestingV3AuthInitialDistDelay 2", "V3AuthVotingInterval 10", "V3AuthVoteDelay 2",
    "V3AuthDistDelay 2", "V3AuthNIntervalsValid 2",
)  # fmt: skip
"""A first vote 5 s after the start's interval boundary, then a consensus every 10 s (chutney's
schedule is 20 s for both): relays publish their descriptors only once they have a consensus, so
the first consensus lists only the authorities and the second everyone. Measured on a loaded
2-core machine: the network is ready 20-30 s after the lab starts building it (with a 10 s first
interval 27-42 s; with chutney's 20 s ~40 s)."""
NETWORK = ("TestingTorNetwork 1", "TestingDirAuthVoteGuard *", "TestingDirAuthVoteHSDir *",
           "TestingMinExitFlagThreshold 0", "AssumeReachable 1", "PathsNeededToBuildCircuits 0.67")  # fmt: skip
"""Lines every tor of the network has (clients too: :func:`client_params`)."""


def _nick(name: str) -> str:
    return "lab" + re.sub(r"[^A-Za-z0-9]", "", name.removeprefix("tor-"))


def dir_authority_lines(fprs: dict[str, str], v3: dict[str, str]) -> list[str]:
    return [
        f"DirAuthority {_nick(a)} orport={ORPORT} no-v2 v3ident={v3[a]} "
        f"{P.CIRCUMVENTION[a]}:{DIRPORT} {fprs[a]}"
        for a in AUTHORITIES
    ]


def client_params(dir_authorities: list[str]) -> dict[str, list[str]]:
    """What a client needs to use this private network: its ``DirAuthority`` values and the
    testing-network lines (the transport allows only those options)."""
    return {"dir_authorities": [d.removeprefix("DirAuthority ") for d in dir_authorities],
            "torrc": list(NETWORK)}  # fmt: skip


def torrc(ctx: Context, name: str, datadir: Path, dir_authorities: list[str]) -> str:
    """The configuration of relay/authority/bridge ``name``."""
    ip = P.CIRCUMVENTION[name]
    lines = [*NETWORK, *dir_authorities,
             f"DataDirectory {datadir}", "RunAsDaemon 0", "SocksPort 0", f"Nickname {_nick(name)}",
             f"Address {ip}", f"ORPort {ip}:{ORPORT}", f"OutboundBindAddress {ip}",
             f"Log notice file {ctx.run / f'{name}.log'}", "SafeLogging 0",
             "LogTimeGranularity 1", "ShutdownWaitLength 0", "ContactInfo lab@lab.invalid",
             f"ServerDNSResolvConfFile {ctx.run / 'tor-resolv.conf'}",
             "ServerDNSDetectHijacking 0", "ServerDNSAllowBrokenConfig 1",
             f"TestingDirAuthVoteExit {P.CIRCUMVENTION['tor-exit']}"]  # fmt: skip
    if name in AUTHORITIES:
        lines += ["AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1",
                  f"DirPort {ip}:{DIRPORT}", *FAST_VOTING]  # fmt: skip
    if name == "tor-exit":
        lines += ["ExitRelay 1", "ExitPolicyRejectPrivate 0", "ExitPolicyRejectLocalInterfaces 0",
                  "ExitPolicy accept *:*"]  # fmt: skip
    else:
        lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
    if name == BRIDGE:
        lines += ["BridgeRelay 1", "PublishServerDescriptor 0", "BridgeDistribution none",
                  f"ServerTransportPlugin obfs4 exec {which('obfs4proxy')}",
                  f"ServerTransportListenAddr obfs4 {ip}:{OBFS4_PORT}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def http_get(
    ip: str, port: int, path: str, limit: int = MAX_CONSENSUS, timeout: float = 3.0
) -> str:
    """A plain HTTP/1.0 GET (run inside a namespace): the body if the status is 200, else ``""``."""
    data = b""
    with socket.create_connection((ip, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        while len(data) <= limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data[: limit + 1].partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        return ""
    return body.decode("ascii", errors="replace")


def consensus_relays(text: str) -> dict[str, set[str]]:
    """IP → flags of every relay a consensus document lists (``r`` then ``s`` lines)."""
    relays: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["r"] and len(parts) >= 8:
            current = parts[6]
            relays[current] = set()
        elif parts[:1] == ["s"] and current is not None:
            relays[current] = set(parts[1:])
    return relays


def consensus_ready(text: str) -> bool:
    relays = consensus_relays(text)
    wanted = [P.CIRCUMVENTION[r] for r in RELAYS]
    running = all("Running" in relays.get(ip, set()) for ip in wanted)
    return running and "Exit" in relays.get(P.CIRCUMVENTION["tor-exit"], set())


def _fetch_consensus(ip: str) -> str:
    try:
        return http_get(ip, DIRPORT, "/tor/status-vote/current/consensus")
    except OSError:
        return ""


def _settle(ctx: Context, state: Obfs4State, bridge_dir: Path) -> Callable[[float], None]:
    ns = ctx.topology.ns("abroad")

    def settle(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        text = ""
        waiting: list[str] = []
        while time.monotonic() < deadline:
            for auth in AUTHORITIES:
                text = netns.run_in(ns, _fetch_consensus, P.CIRCUMVENTION[auth], timeout=10)
                if consensus_ready(text):
                    break
            # A relay (the exit too) refuses streams until it has a consensus itself.
            waiting = [n for n in (*RELAYS, BRIDGE) if not _bootstrapped(ctx.run / f"{n}.log")]
            if consensus_ready(text) and not waiting:
                break
            time.sleep(0.5)
        else:
            relays = consensus_relays(text)
            seen = ", ".join(f"{ip} {sorted(flags)}" for ip, flags in sorted(relays.items()))
            log = ctx.run / f"{(waiting or AUTHORITIES)[0]}.log"
            raise ServerError("tor", f"is not ready after {timeout:.0f} s (consensus: "
                              f"{seen or 'none'}; not bootstrapped: {', '.join(waiting) or 'none'})",
                              [log], _tail(log))  # fmt: skip
        line = bridge_dir / "pt_state" / "obfs4_bridgeline.txt"
        if f"cert={state.cert}" not in (line.read_text() if line.is_file() else ""):
            raise ServerError(BRIDGE, f"obfs4proxy's {line.name} lacks the certificate written "
                              "into the entries", [line])  # fmt: skip

    return settle


_DIRINFO = re.compile(rb"Bootstrapped (?:7[5-9]|[89]\d|100)%")


def _bootstrapped(log: Path, limit: int = 4 << 20) -> bool:
    """Whether a tor's log (its first ``limit`` bytes) says it has enough directory information
    (75 %, ``enough_dirinfo``, or later). Not 100 %: the exit, the only one, cannot build an exit
    circuit of its own and may stay at 95 %."""
    try:
        with log.open("rb") as f:
            return _DIRINFO.search(f.read(limit)) is not None
    except OSError:
        return False


def _tail(path: Path, lines: int = 8) -> str:
    if not path.is_file():
        return ""
    return "".join(f"\n    {x}" for x in path.read_text(errors="replace").splitlines()[-lines:])


def _tcp_answers(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1.0):
            return True
    except OSError:
        return False


def build(ctx: Context, authority: Authority, issue: IssueFn) -> Built:
    """Keys, configurations and the servers (not started) of the private Tor network."""
    absent = missing(PACKAGES)
    if absent:
        raise ServerError("tor", absent)
    tor, gencert = which("tor"), which("tor-gencert")
    datadirs = {name: ctx.run / name for name in (*RELAYS, BRIDGE)}
    with ThreadPoolExecutor(1 + len(AUTHORITIES)) as pool:  # the key tools run at once
        made = pool.submit(fingerprints, tor, datadirs)
        v3_made = {a: pool.submit(authority_keys, a, gencert, datadirs[a], P.CIRCUMVENTION[a],
                                  DIRPORT) for a in AUTHORITIES}  # fmt: skip
        fprs, v3 = made.result(), {a: f.result() for a, f in v3_made.items()}
    state = obfs4_state(datadirs[BRIDGE])
    (ctx.run / "tor-resolv.conf").write_text(f"nameserver {P.PUBLIC_RESOLVER}\n")
    dir_auths = dir_authority_lines(fprs, v3)
    servers = []
    for name, datadir in datadirs.items():
        ip = P.CIRCUMVENTION[name]
        config = ctx.run / f"{name}.torrc"
        config.write_text(torrc(ctx, name, datadir, dir_auths))
        binds = [("tcp", ip, ORPORT)] + ([("tcp", ip, DIRPORT)] if name in AUTHORITIES else [])
        answers = in_ns(ctx, "abroad", _tcp_answers, ip, OBFS4_PORT) if name == BRIDGE else None
        argv = [tor, "-f", str(config), "--ignore-missing-torrc"]
        servers.append(ctx.server(name, "abroad", argv, binds, answers))
    return Built(servers, entries(fprs, dir_auths, state), READY_TIMEOUT,
                 _settle(ctx, state, datadirs[BRIDGE]))  # fmt: skip


def bridge_line(fpr: str, state: Obfs4State) -> str:
    return f"obfs4 {P.CIRCUMVENTION[BRIDGE]}:{OBFS4_PORT} {fpr} cert={state.cert} iat-mode=0"


def entries(fprs: dict[str, str], dir_auths: list[str], state: Obfs4State) -> list[dict[str, Any]]:
    """The probe's entries for this network: vanilla, obfs4 via the bridge, reachability."""
    first = P.CIRCUMVENTION[AUTHORITIES[0]]
    params = client_params(dir_auths)
    targets: list[dict[str, Any]] = [{"name": n, "address": P.CIRCUMVENTION[n], "port": ORPORT,
                "protocol": "or_port_dirauth" if n in AUTHORITIES else "or_port",
                "fingerprint": fprs[n]} for n in RELAYS]  # fmt: skip
    targets += [{"name": f"{a}-dir", "address": P.CIRCUMVENTION[a], "port": DIRPORT,
                 "protocol": "dir_port", "fingerprint": fprs[a]} for a in AUTHORITIES]  # fmt: skip
    targets.append({"name": BRIDGE, "address": P.CIRCUMVENTION[BRIDGE], "port": OBFS4_PORT,
                    "protocol": "obfs4", "fingerprint": fprs[BRIDGE],
                    "params": {"cert": state.cert, "iat-mode": "0"}})  # fmt: skip
    return [
        {"name": "tor", "type": "tor", "address": first, "port": ORPORT, "protocol": "tcp",
         "params": params, "source": SOURCE},
        {"name": "tor-obfs4", "type": "obfs4", "address": P.CIRCUMVENTION[BRIDGE],
         "port": OBFS4_PORT, "protocol": "tcp",
         "params": {"bridge": bridge_line(fprs[BRIDGE], state), **params},
         "source": SOURCE},
        {"name": "tor-reach", "type": "tor_reach", "address": first, "port": ORPORT,
         "protocol": "tcp", "params": {"targets": targets}, "source": SOURCE},
    ]  # fmt: skip

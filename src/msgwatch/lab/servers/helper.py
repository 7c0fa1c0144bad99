"""The msgwatch test helper as a lab server (``msgwatch helper serve --lab``), abroad and at home."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable, Sequence

from msgwatch.lab import plan as P
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.servers.base import Context, hostport, in_ns
from msgwatch.wire.helper_api import CALL_PORTS, CONTROL_PORT

HELPER_PORTS = (7, *CALL_PORTS)
"""Ports of the test helper (TCP and UDP): its defaults (the call ports and a neutral high port),
the echo port, and every service's call ports besides."""
HELPER_LIMITS = ("--budget-bytes", "1000000000", "--rate-pps", "50000",
                 "--measure-per-minute", "1000", "--send-per-minute", "1000")  # fmt: skip
"""The lab's helpers serve a whole run's replays (every service at once) from one probe address,
and the scenario tests' many runs: limits well above the production defaults."""


def _helper_answers(address: str, port: int) -> bool:
    """``GET /v1/health`` on the helper's control port answers 200."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    request = f"GET /v1/health HTTP/1.1\r\nHost: {hostport(address, port)}\r\n"
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
            "--resolver", hostport(P.PUBLIC_RESOLVER, 53), "--ca-bundle", str(ctx.run / "ca.pem"),
            *HELPER_LIMITS]  # fmt: skip
    argv += [arg for a in addresses for arg in ("--listen", a)]
    argv += [arg for a, p in extra for arg in ("--tcp-listen", hostport(a, p))]
    argv += [arg for option, eps in answering for a, p in eps for arg in (option, hostport(a, p))]
    binds = [(t, a, p) for t in ("tcp", "udp") for a in addresses for p in ports]
    binds += [("tcp", a, CONTROL_PORT) for a in addresses] + [("tcp", a, p) for a, p in extra]
    binds += [("tcp", a, p) for _, eps in answering for a, p in eps]
    server = ctx.server(name, role, argv, binds,
                        in_ns(ctx, role, _helper_answers, addresses[0], CONTROL_PORT))  # fmt: skip
    server.log = server.out  # it logs to stderr only
    return server

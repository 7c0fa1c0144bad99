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

One module per kind of server: :mod:`~msgwatch.lab.servers.dns`, :mod:`~msgwatch.lab.servers.web`,
:mod:`~msgwatch.lab.servers.turn`, :mod:`~msgwatch.lab.servers.helper`; which of them answers each
catalogue protocol is :mod:`~msgwatch.lab.servers.table`, what they share
:mod:`~msgwatch.lab.servers.base`. :func:`build` makes them all.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from msgwatch.lab import plan as P
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.servers.base import DEFAULT_CERT, Bind, Context
from msgwatch.lab.servers.dns import check_resolver_lines, isp_dns, public_dns
from msgwatch.lab.servers.helper import HELPER_LIMITS, HELPER_PORTS, helper
from msgwatch.lab.servers.table import SERVERS, ServicePlan, plan_services
from msgwatch.lab.servers.turn import TURN_REALM, TURN_USER, coturns
from msgwatch.lab.servers.web import (
    BLOCKPAGE_CERT,
    BLOCKPAGE_HTML,
    BULK_BYTES,
    BULK_PATH,
    blockpage,
    web,
)

__all__ = [
    "BLOCKPAGE_CERT",
    "BLOCKPAGE_HTML",
    "BULK_BYTES",
    "BULK_PATH",
    "DEFAULT_CERT",
    "HELPER_LIMITS",
    "HELPER_PORTS",
    "SERVERS",
    "TURN_REALM",
    "TURN_USER",
    "Bind",
    "Context",
    "ServicePlan",
    "blockpage",
    "build",
    "check_resolver_lines",
    "coturns",
    "helper",
    "isp_dns",
    "plan_services",
    "public_dns",
    "web",
]


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

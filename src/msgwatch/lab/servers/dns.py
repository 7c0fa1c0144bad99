"""The lab's resolvers: dnsmasq as the public resolver abroad and as each ISP's resolver."""

from __future__ import annotations

from collections.abc import Sequence

from msgwatch.lab import plan as P
from msgwatch.lab.netns import LabError
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.procs.ready import dns_answers
from msgwatch.lab.servers.base import Context, in_ns
from msgwatch.lab.servers.table import ServicePlan


def public_dns(ctx: Context, plan: ServicePlan) -> Server:
    """The public resolver abroad: every catalogue name, NXDOMAIN for any other."""
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
    answers = in_ns(ctx, "abroad", dns_answers, P.PUBLIC_RESOLVER, probe)
    argv = [ctx.exe["dnsmasq"], "-k", "-C", str(run / f"{name}.conf")]
    return ctx.server(name, "abroad", argv, binds, answers)


def check_resolver_lines(lines: Sequence[str]) -> list[str]:
    """The dnsmasq lines a scenario adds, each checked to be one line."""
    for line in lines:
        if any(c in line for c in "\r\n\0"):
            raise LabError(f"a resolver line must be one line: {line!r}")
    return list(lines)


def isp_dns(ctx: Context, isp: str, extra: Sequence[str] = ()) -> Server:
    """``isp``'s resolver on its censor, forwarding to the public resolver, plus ``extra`` lines."""
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

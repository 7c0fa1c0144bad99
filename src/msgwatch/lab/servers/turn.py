"""coturn in the lab: every ``stun``/``turn`` endpoint, over UDP, TCP or TLS."""

from __future__ import annotations

from msgwatch.lab.procs.proc import Server
from msgwatch.lab.procs.ready import stun_answers
from msgwatch.lab.servers.base import DEFAULT_CERT, Context, IssueFn, in_ns
from msgwatch.lab.servers.table import ServicePlan

TURN_REALM, TURN_USER = "lab", "lab:lab"
_DENIED_PEERS = (  # a relay may only ever reach lab addresses
    "0.0.0.0-198.17.255.255", "198.20.0.0-255.255.255.255",
    "::-2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)  # fmt: skip


def coturns(ctx: Context, plan: ServicePlan, issue: IssueFn) -> list[Server]:
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
            in_ns(ctx, "abroad", stun_answers, addresses, port) if "udp" in transports else None
        )
        # -n: no configuration file; every option is on the command line (with -c it would also
        # read one, and then bind every interface).
        servers.append(
            ctx.server(name, "abroad", [ctx.exe["turnserver"], "-n", *args], binds, answers)
        )
    return servers

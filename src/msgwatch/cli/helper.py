"""``msgwatch helper serve``: the test helper from the command line (see ``docs/helper.md``)."""

from __future__ import annotations

import sys

import click

from msgwatch.cli.main import EXIT_ENVIRONMENT, EXIT_USAGE, _err, cli, parse_hostport

DEFAULT_PORTS = "443,596,3478-3481,4244,5242-5243,7985,7987,8801,10000,19302,40000,50001"


def parse_ports(text: str) -> list[int]:
    """``3478-3481,8801`` → [3478, 3479, 3480, 3481, 8801]; empty text → []."""
    ports: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise click.BadParameter(f"{part!r} is not a port or a range of ports")
        first, last = int(low), int(high or low)
        if not 0 < first <= last < 65536 or last - first > 1024:
            raise click.BadParameter(f"{part!r}: ports are 1-65535, a range at most 1025 long")
        ports.extend(range(first, last + 1))
    return list(dict.fromkeys(ports))


def _endpoints(values: tuple[str, ...], option: str) -> list[tuple[str, int]]:
    from msgwatch.helper.server import parse_endpoint

    try:
        return [parse_endpoint(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


@cli.group("helper")
def helper_group() -> None:
    """The test helper: STUN, UDP/TCP echo with counters, and the control API."""


@helper_group.command("serve")
@click.option(
    "--listen",
    multiple=True,
    metavar="ADDR",
    help="Address to bind (repeat; default 0.0.0.0 and ::).",
)
@click.option(
    "--control-port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Control API port on every --listen address (0: none).",
)
@click.option(
    "--udp-ports",
    default=DEFAULT_PORTS,
    show_default=True,
    help="UDP echo/STUN ports on every --listen address (commas, ranges).",
)
@click.option(
    "--tcp-ports",
    default=DEFAULT_PORTS,
    show_default=True,
    help="TCP echo ports on every --listen address (commas, ranges).",
)
@click.option("--udp-listen", multiple=True, metavar="ADDR:PORT", help="One more UDP socket.")
@click.option("--tcp-listen", multiple=True, metavar="ADDR:PORT", help="One more TCP socket.")
@click.option(
    "--mtproto-listen",
    multiple=True,
    metavar="ADDR:PORT",
    help="A TCP socket answering MTProto's req_pq_multi with a resPQ (the lab's Telegram DCs).",
)
@click.option(
    "--whatsapp-listen",
    multiple=True,
    metavar="ADDR:PORT",
    help="A TCP socket answering WhatsApp's chat opening with a ServerHello (the lab's chat).",
)
@click.option("--lab", is_flag=True, help="Lab mode: measure only 198.18.0.0/15 and 2001:db8::/32.")
@click.option(
    "--allow",
    multiple=True,
    metavar="PREFIX",
    help="Lab mode: measure only these prefixes (repeat).",
)
@click.option(
    "--budget-bytes",
    type=click.IntRange(1000),
    default=50_000_000,
    show_default=True,
    help="Bytes a minute echoed to one client (UDP and TCP).",
)
@click.option(
    "--global-budget-bytes",
    type=click.IntRange(1000),
    help="Bytes a minute echoed to everyone (default 20 × --budget-bytes).",
)
@click.option(
    "--rate-pps",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="UDP datagrams a second answered to one client.",
)
@click.option(
    "--measure-per-minute",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="/v1/measure calls a minute per client.",
)
@click.option(
    "--send-per-minute",
    type=click.IntRange(1, 10_000),
    default=120,
    show_default=True,
    help="/v1/udp/send calls (downstream replays) a minute per client.",
)
@click.option(
    "--resolver",
    metavar="HOST:PORT",
    help="DNS server for the measure steps (default: the system's).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    help="CAs the tls/https steps trust (default: the system's).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning"]),
    default="info",
    show_default=True,
)
def serve_command(
    listen: tuple[str, ...], control_port: int, udp_ports: str, tcp_ports: str,
    udp_listen: tuple[str, ...], tcp_listen: tuple[str, ...], mtproto_listen: tuple[str, ...],
    whatsapp_listen: tuple[str, ...], lab: bool, allow: tuple[str, ...],
    budget_bytes: int, global_budget_bytes: int | None, rate_pps: int, measure_per_minute: int,
    send_per_minute: int, resolver: str | None, ca_bundle: str | None, log_level: str,
) -> None:  # fmt: skip
    """Run the test helper until SIGTERM or Ctrl-C.

    Production mode (the default) measures only global unicast addresses for its clients; --lab or
    --allow restricts it to the given prefixes instead. Logs name clients by a keyed hash in
    production mode, by address in lab mode."""
    from msgwatch.helper.control import ControlSettings
    from msgwatch.helper.policy import PolicyError, policy_from_options
    from msgwatch.helper.server import HelperConfig, HelperError, parse_address, serve

    try:
        policy = policy_from_options(lab, allow)
        addresses = [parse_address(a) for a in listen] if listen else ["0.0.0.0", "::"]
    except (PolicyError, ValueError) as exc:
        raise _err(str(exc), EXIT_USAGE) from exc
    calls = ControlSettings().calls_per_minute | {"measure": measure_per_minute,
                                                  "send": send_per_minute}  # fmt: skip
    config = HelperConfig(
        listen=addresses,
        udp_ports=parse_ports(udp_ports),
        tcp_ports=parse_ports(tcp_ports),
        udp_listen=_endpoints(udp_listen, "--udp-listen"),
        tcp_listen=_endpoints(tcp_listen, "--tcp-listen"),
        mtproto_listen=_endpoints(mtproto_listen, "--mtproto-listen"),
        whatsapp_listen=_endpoints(whatsapp_listen, "--whatsapp-listen"),
        control_port=control_port or None,
        policy=policy,
        budget_bytes=budget_bytes,
        rate_pps=rate_pps,
        global_budget_bytes=global_budget_bytes,
        resolver=parse_hostport(resolver) if resolver else None,
        ca_bundle=ca_bundle,
        control=ControlSettings(calls_per_minute=calls),
    )
    if not (config.udp_endpoints() or config.tcp_endpoints() or config.control_endpoints()
            or config.mtproto_listen or config.whatsapp_listen):  # fmt: skip
        raise _err("nothing to serve: give ports or --udp-listen/--tcp-listen", EXIT_USAGE)
    import asyncio
    import logging

    logging.basicConfig(
        stream=sys.stderr,
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except HelperError as exc:
        raise _err(str(exc), EXIT_ENVIRONMENT) from exc

"""``msgwatch helper serve``: the test helper from the command line (see ``docs/helper.md``)."""

from __future__ import annotations

import sys

import click

from msgwatch.cli.common import (
    EXIT_ENVIRONMENT,
    EXIT_USAGE,
    LazyDefault,
    _err,
    log_level_option,
    parse_hostport,
    setting,
)


def default_ports() -> str:
    """The helper's default ports (:data:`msgwatch.wire.helper_api.CALL_PORTS`) as the options
    write them: ``443,596,3478-3481,…``."""
    from msgwatch.wire.helper_api import CALL_PORTS

    runs: list[list[int]] = []
    for port in sorted(set(CALL_PORTS)):
        if runs and port == runs[-1][-1] + 1:
            runs[-1].append(port)
        else:
            runs.append([port])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def default_control_port() -> int:
    from msgwatch.wire.helper_api import CONTROL_PORT

    return CONTROL_PORT


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


@click.group("helper")
def helper_group() -> None:
    """The test helper: STUN, UDP/TCP echo with counters, and the control API."""


@helper_group.command("serve")
@click.option(
    "--listen",
    multiple=True,
    metavar="ADDR",
    help="Address to bind (repeat; default 0.0.0.0 and ::).",
)
@setting(
    "--control-port",
    cls=LazyDefault,
    type=click.IntRange(0, 65535),
    default=default_control_port,
    help="Control API port on every --listen address (0: none).",
)
@setting(
    "--udp-ports",
    cls=LazyDefault,
    default=default_ports,
    help="UDP echo/STUN ports on every --listen address (commas, ranges).",
)
@setting(
    "--tcp-ports",
    cls=LazyDefault,
    default=default_ports,
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
@setting(
    "--budget-bytes",
    type=click.IntRange(1000),
    default=50_000_000,
    help="Bytes a minute echoed to one client (UDP and TCP).",
)
@click.option(
    "--global-budget-bytes",
    type=click.IntRange(1000),
    help="Bytes a minute echoed to everyone (default 20 × --budget-bytes).",
)
@setting(
    "--rate-pps",
    type=click.IntRange(1),
    default=2000,
    help="UDP datagrams a second answered to one client.",
)
@setting(
    "--measure-per-minute",
    type=click.IntRange(1, 10_000),
    default=10,
    help="/v1/measure calls a minute per client.",
)
@setting(
    "--send-per-minute",
    type=click.IntRange(1, 10_000),
    default=120,
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
@log_level_option("debug", "info", "warning")
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

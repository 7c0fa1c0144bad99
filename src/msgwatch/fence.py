"""The safety fence: the only networks a probe, a test, the demo or a benchmark may reach.

When the environment variable ``MSGWATCH_ALLOWED_NETWORKS`` holds a comma-separated
list of prefixes (the tests, the demo and the benchmarks set it to loopback and the lab's ranges),
every destination outside them is refused with ``destination_not_allowed`` before any packet leaves,
and the system resolver (which would send queries to whatever server the host uses) is refused too.
A refusal is the run's configuration, not the network's behaviour: the runner records such a target
as not measured (never a failure, never submitted). A value that does not parse, or one that is set
but empty, raises :class:`FenceError`; the runner checks it before anything else, so such a run
stops at its start instead of recording every destination as failed.

Everything that opens a socket towards a destination chosen by data (the probe's steps in
:mod:`msgwatch.steps.net`, the spool's collector client, the probe's client programs) calls
:func:`check_destination` first. Imports nothing of the project but the failure vocabulary.
"""

from __future__ import annotations

import ipaddress
import os

from msgwatch.failures import NOT_ALLOWED, ProbeFailure

__all__ = [
    "FENCE_VARIABLE",
    "LAB_NETWORKS",
    "NOT_ALLOWED",
    "FenceError",
    "Network",
    "check_destination",
    "check_fence",
    "fence_from",
]

FENCE_VARIABLE = "MSGWATCH_ALLOWED_NETWORKS"
LAB_NETWORKS = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
MAX_FENCE_CHARS = 64 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FenceError(ValueError):
    """``MSGWATCH_ALLOWED_NETWORKS`` is set but is not a list of prefixes: the run must not start
    (a fence that does not parse must neither be lowered nor turn every destination into a
    measured failure)."""


def fence_from(value: str | None) -> list[Network] | None:
    """The fence that ``value`` (the variable's text) describes; None when it is unset.

    Raises :class:`FenceError` when it is empty (only blanks and commas: "no fence" is said by
    unsetting the variable, never by emptying it), too long, or holds something that is not an
    address or a prefix."""
    if value is None:
        return None
    if len(value) > MAX_FENCE_CHARS:
        raise FenceError(f"{FENCE_VARIABLE} is too long ({len(value):,} characters)")
    parts = [p.strip() for p in value.split(",")]
    if not any(parts):
        raise FenceError(
            f"{FENCE_VARIABLE} is set but empty: list the prefixes the probe may reach "
            "(e.g. 127.0.0.0/8,::1/128), or unset it to measure without a fence"
        )
    networks: list[Network] = []
    for part in (p for p in parts if p):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            shown = part if len(part) <= 60 else part[:60] + "..."
            raise FenceError(
                f"{FENCE_VARIABLE}: {shown!r} is not an address or a prefix "
                "(expected a comma-separated list such as 127.0.0.0/8,::1/128)"
            ) from exc
    return networks


def check_fence() -> list[Network] | None:
    """The fence from the environment (None when unset); raises :class:`FenceError` when it is
    malformed. The runner calls it before anything else."""
    return fence_from(os.environ.get(FENCE_VARIABLE))


def check_destination(ip: str) -> None:
    """Raise ``ProbeFailure(destination_not_allowed)`` when the fence is up and ``ip`` is outside."""
    fence = check_fence()
    if fence is None:
        return
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError as exc:
        raise ProbeFailure(NOT_ALLOWED, f"not an address: {ip!r}") from exc
    if not any(address in network for network in fence):
        raise ProbeFailure(NOT_ALLOWED)

"""Entry type → the transport module that brings it up.

Every module in :mod:`msgwatch.circumvention.transports` exposes::

    def check_params(entry: Entry) -> list[str]       # problems with entry.params, [] when fine
    def bring_up(entry: Entry, ctx: Context, run: Run) -> AbstractAsyncContextManager[Tunnel | None]

``bring_up`` starts the client (its process in ``ctx.workdir``, bounded logs), records the stages
up to ``tunnel`` in ``run`` and yields the :class:`~msgwatch.circumvention.model.Tunnel` — or
``None`` for a test that has no tunnel (``tor_reach``) — and always stops its processes on exit.
A stage that fails raises :class:`~msgwatch.circumvention.model.StageFailed` out of it. It never
hangs past ``ctx.budget(entry.type)`` and never raises anything else for bad input from the
network.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractAsyncContextManager
from typing import Protocol, cast

from msgwatch.circumvention.model import TYPES, Context, Entry, Run, Tunnel

MODULES = {
    "tor": "tor", "obfs4": "tor", "tor_reach": "tor_reach",
    "openvpn": "openvpn", "wireguard": "wireguard",
    "shadowsocks": "shadowsocks", "socks5": "proxy", "http_connect": "proxy",
}  # fmt: skip
assert set(MODULES) == set(TYPES)


class TransportModule(Protocol):
    def check_params(self, entry: Entry) -> list[str]: ...

    def bring_up(
        self, entry: Entry, ctx: Context, run: Run
    ) -> AbstractAsyncContextManager[Tunnel | None]: ...


def module(kind: str) -> TransportModule:
    """The module for entry type ``kind`` (imported on first use)."""
    if kind not in MODULES:
        raise ValueError(f"unknown circumvention type {kind!r} (known: {', '.join(TYPES)})")
    name = f"msgwatch.circumvention.transports.{MODULES[kind]}"
    return cast(TransportModule, importlib.import_module(name))

"""The lab's circumvention servers abroad, started only by a lab asked for them.

``Lab(circumvention=("tor", "vpn", "proxies"))`` (or ``circumvention=GROUPS``) builds, besides the
usual servers, the groups named, each a module here exposing ``build(ctx, authority, issue) ->``
:class:`Built`:

- ``tor``: a private Tor network (``TestingTorNetwork``: directory authorities with keys from
  ``tor-gencert``, relays, an exit, an obfs4 bridge) (:mod:`~msgwatch.lab.circumvention.tor`);
- ``vpn``: OpenVPN over UDP and TCP (a lab CA), WireGuard on ``wireguard-go``
  (:mod:`~msgwatch.lab.circumvention.vpn`);
- ``proxies``: Shadowsocks (``ss-server``), SOCKS5 (``danted``, ``microsocks``), HTTP CONNECT
  (``tinyproxy``) (:mod:`~msgwatch.lab.circumvention.proxies`).

Their addresses are :data:`msgwatch.lab.plan.CIRCUMVENTION` (198.18.4.0/24, abroad). What a probe
needs to use them (bridge lines, keys, the OpenVPN CA, passwords) is written as the entries of a
``--circumvention`` file, ``<run dir>/circumvention.json`` (:attr:`Lab.circumvention_file`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.servers.base import Context, IssueFn

GROUPS = ("tor", "vpn", "proxies")
FILE_NAME = "circumvention.json"


@dataclass
class Built:
    """A group's servers (configured, not started), the entries a probe tests them with (each a
    ``--circumvention`` file's ``transport`` table), how long they may take to be ready, and an
    optional wait run after every server of the lab answers (e.g. until the Tor network has a
    consensus), which raises :class:`msgwatch.lab.procs.proc.ServerError` on failure."""

    servers: list[Server] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    ready_timeout: float = 10.0
    settle: Callable[[float], None] | None = None


class _Group(Protocol):
    def build(self, ctx: Context, authority: Authority, issue: IssueFn) -> Built: ...


def check_groups(groups: Collection[str]) -> tuple[str, ...]:
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown circumvention group(s) {', '.join(unknown)} (known: {GROUPS})")
    return tuple(g for g in GROUPS if g in groups)


def build(
    ctx: Context, authority: Authority, issue: IssueFn, groups: Collection[str]
) -> list[Built]:
    """Every group asked for, built (files written, nothing started)."""
    out = []
    for group in check_groups(groups):
        module = cast(_Group, importlib.import_module(f"msgwatch.lab.circumvention.{group}"))
        out.append(module.build(ctx, authority, issue))
    return out


def write_entries(path: Path, built: Collection[Built]) -> Path:
    """The probe's ``--circumvention`` file for the lab's servers."""
    entries = [entry for b in built for entry in b.entries]
    path.write_text(json.dumps({"transport": entries}, indent=2) + "\n")
    return path

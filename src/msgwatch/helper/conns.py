"""Connection bookkeeping shared by the helper's TCP handlers (echo, responders, control API):
who is connected, bounded in all and per client, and closing a connection without raising."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

from msgwatch.helper.udp import normalize_ip


def client_of(writer: asyncio.StreamWriter) -> str:
    """The peer's address, normalised (an IPv4-mapped IPv6 address counts as the IPv4 one)."""
    peer = writer.get_extra_info("peername")
    return normalize_ip(str(peer[0])) if peer else "?"


@dataclass
class Slots:
    """Open connections per client."""

    _open: Counter[str] = field(default_factory=Counter)

    @property
    def active(self) -> int:
        return sum(self._open.values())

    def take(self, client: str, total: int, per_client: int) -> bool:
        """Count one more connection from ``client``, unless a bound is reached."""
        if self.active >= total or self._open[client] >= per_client:
            return False
        self._open[client] += 1
        return True

    def give_back(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()

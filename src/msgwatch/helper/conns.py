"""Connection bookkeeping shared by the helper's TCP handlers (echo, responders, control API):
who is connected, bounded in all and per client, and closing a connection without raising.

:class:`TCPService` is the accept side of the echo and the responders: a connection over the
bounds is closed at once (counted ``refused``), any other one is served for at most ``lifetime``
seconds, and a timeout or a reset ends it quietly."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

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


class ConnectionCounters(Protocol):
    connections: int
    refused: int


class TCPService:
    """A bounded TCP connection handler (module notes); a dataclass below gives the fields and
    :meth:`serve`."""

    max_connections: int
    max_per_client: int
    lifetime: float
    counters: ConnectionCounters
    _slots: Slots

    @property
    def active(self) -> int:
        return self._slots.active

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = client_of(writer)
        if not self._slots.take(client, self.max_connections, self.max_per_client):
            self.counters.refused += 1
            writer.close()
            return
        self.counters.connections += 1
        try:
            async with asyncio.timeout(self.lifetime):
                await self.serve(client, reader, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._slots.give_back(client)
            await close(writer)

    async def serve(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection from ``client`` (already counted; closed afterwards)."""
        raise NotImplementedError

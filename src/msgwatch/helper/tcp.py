"""TCP echo, also the sink for replays over TCP: every byte received is sent back, within limits.

For each connection (the listening sockets are made by :mod:`msgwatch.helper.server`):

- beyond ``max_connections`` at once, or ``max_per_client`` from one client address, a new
  connection is closed at once;
- it reads in chunks of up to 64 KiB; each chunk is echoed if the client's byte budget
  (:mod:`msgwatch.helper.limits`, shared with UDP) allows. The first chunk over the budget ends
  the echo for the rest of the connection (what comes back is always a prefix of what was sent,
  never a stream with holes); what follows is read and dropped — the client still gets to send
  its replay, the helper just stops answering;
- after ``max_bytes`` received, ``idle`` seconds without a byte (or a client that does not read
  its echoes for that long), or ``lifetime`` seconds in all, the connection is closed.

Counters (connections, refused, bytes in and out, bytes not echoed) are served by ``/v1/health``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from msgwatch.helper.conns import Slots, TCPService
from msgwatch.helper.limits import Limits
from msgwatch.helper.logs import ClientNames, logger

CHUNK = 64 * 1024


@dataclass
class TCPCounters:
    connections: int = 0
    refused: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    not_echoed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class TCPEcho(TCPService):
    """The connection handler; one instance serves every TCP port."""

    limits: Limits
    max_bytes: int = 16 * 1024 * 1024
    max_connections: int = 512
    max_per_client: int = 16
    idle: float = 30.0
    lifetime: float = 300.0
    names: ClientNames = field(default_factory=lambda: ClientNames(reveal=False))
    clock: Callable[[], float] = time.monotonic
    counters: TCPCounters = field(default_factory=TCPCounters)
    _slots: Slots = field(default_factory=Slots)

    async def serve(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        left = self.max_bytes
        echoing = True
        while left > 0:
            data = await asyncio.wait_for(reader.read(min(CHUNK, left)), self.idle)
            if not data:
                return
            left -= len(data)
            self.counters.rx_bytes += len(data)
            if echoing and not self.limits.allow_send(
                client, len(data), self.clock(), packet=False
            ):
                echoing = False
            if not echoing:
                self.counters.not_echoed += len(data)
                if self.limits.newly_dropping(client):
                    logger.info("tcp: %s over its budget: not echoing", self.names.name(client))
                continue
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.idle)
            self.counters.tx_bytes += len(data)

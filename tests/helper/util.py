"""In-process helper and loopback clients for the helper's tests (loopback only, ephemeral ports)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import h11

from msgwatch.helper.control import ControlSettings
from msgwatch.helper.policy import Policy
from msgwatch.helper.server import Helper, HelperConfig

LOOPBACK_ONLY = Policy.lab(["127.0.0.0/8", "::1/128"])


def config(**changes: Any) -> HelperConfig:
    """One UDP, one TCP and the control port on 127.0.0.1, all ephemeral; loopback lab mode."""
    base = HelperConfig(
        listen=("127.0.0.1",), udp_ports=(0,), tcp_ports=(0,), control_port=0, policy=LOOPBACK_ONLY
    )
    return replace(base, **changes)


@asynccontextmanager
async def running(cfg: HelperConfig | None = None) -> AsyncIterator[Helper]:
    async with Helper(cfg or config()) as helper:
        yield helper


@dataclass
class _Collect(asyncio.DatagramProtocol):
    received: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        self.arrived.set()


class UDPClient:
    """A connected UDP socket from ``source`` (an explicit loopback address) to the helper."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Collect) -> None:
        self.transport, self.protocol = transport, protocol

    @classmethod
    async def open(cls, target: tuple[str, int], source: str = "127.0.0.1") -> UDPClient:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _Collect, local_addr=(source, 0), remote_addr=target
        )
        return cls(transport, protocol)

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    @property
    def received(self) -> list[bytes]:
        return self.protocol.received

    def send(self, data: bytes) -> None:
        self.transport.sendto(data)

    async def wait_for(self, count: int, timeout: float = 1.0) -> list[bytes]:
        """Wait until ``count`` datagrams arrived (or ``timeout``); returns all received."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.received) < count and loop.time() < end:
            self.protocol.arrived.clear()
            try:
                await asyncio.wait_for(self.protocol.arrived.wait(), end - loop.time())
            except TimeoutError:
                break
        return self.received

    def close(self) -> None:
        self.transport.close()


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_http(
    target: tuple[str, int], data: bytes, source: str = "127.0.0.1", timeout: float = 5.0
) -> Reply:
    """Send ``data`` as is; parse whatever comes back (status None: closed without a response)."""
    reader, writer = await asyncio.open_connection(*target, local_addr=(source, 0))
    conn = h11.Connection(h11.CLIENT)
    # Let h11 believe it sent a request, so it parses the response.
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    writer.write(data)
    status: int | None = None
    headers: dict[str, str] = {}
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    except (h11.RemoteProtocolError, ConnectionResetError):
        pass  # closed before a response
    finally:
        writer.close()
    return Reply(status, headers, bytes(body))


async def http(
    target: tuple[str, int],
    method: str,
    path: str,
    body: Any = None,
    source: str = "127.0.0.1",
    raw_body: bytes | None = None,
) -> Reply:
    payload = (
        raw_body if raw_body is not None else b"" if body is None else json.dumps(body).encode()
    )
    head = f"{method} {path} HTTP/1.1\r\nHost: helper\r\nConnection: close\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return await raw_http(target, head.encode() + b"\r\n" + payload, source)


def settings(**changes: Any) -> ControlSettings:
    return replace(ControlSettings(), **changes)

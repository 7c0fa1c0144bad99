"""The lab's stand-in for the msgwatch test helper: bounded TCP and UDP echo (step 3 completes it).

Run inside a lab namespace::

    python -m msgwatch.lab.helper_stub --tcp 198.18.3.10:7 --udp 198.18.3.10:3478 --tcp '[2001:db8:3::10]:443'

- **TCP**: every byte received is sent back, at most ``--max-bytes`` per connection (then the
  connection is closed); a connection idle for ``--idle`` seconds is closed; beyond
  ``--max-connections`` at once, new connections are closed at once.
- **UDP**: a STUN Binding request (RFC 5389: type 0x0001, magic cookie 0x2112A442) is answered with
  a Binding success carrying XOR-MAPPED-ADDRESS — the probe's call-path check sends exactly that to
  the helper on each call port; any other datagram is echoed, never more bytes than it carried.

It binds only the addresses it is given (never a wildcard) and imports nothing of the project, so it
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import struct
import sys
from collections.abc import Sequence
from typing import cast

MAGIC_COOKIE = 0x2112A442
MAX_DATAGRAM = 2048


def parse_endpoint(text: str) -> tuple[str, int]:
    """``198.18.3.10:7`` or ``[2001:db8:3::10]:443`` → (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    address = ipaddress.ip_address(host.strip("[]"))  # a name or a wildcard would not parse
    if address.is_unspecified:
        raise argparse.ArgumentTypeError(f"a wildcard address is not allowed: {text!r}")
    return str(address), int(port)


def stun_binding_response(request: bytes, peer: tuple[str, int]) -> bytes | None:
    """The Binding success response to ``request`` if it is a Binding request, else None."""
    if len(request) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", request[:8])
    if kind != 0x0001 or cookie != MAGIC_COOKIE or length % 4 or len(request) != 20 + length:
        return None
    transaction = request[8:20]
    address = ipaddress.ip_address(peer[0])
    port = peer[1] ^ (MAGIC_COOKIE >> 16)
    xor_key = struct.pack("!I", MAGIC_COOKIE) + transaction
    raw = address.packed
    xored = bytes(b ^ xor_key[i] for i, b in enumerate(raw))
    family = 0x01 if address.version == 4 else 0x02
    value = struct.pack("!BBH", 0, family, port) + xored
    attribute = struct.pack("!HH", 0x0020, len(value)) + value  # XOR-MAPPED-ADDRESS
    return struct.pack("!HHI", 0x0101, len(attribute), MAGIC_COOKIE) + transaction + attribute


class _UDPEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is None:
            return
        peer = (str(addr[0]), int(addr[1]))
        answer = stun_binding_response(data, peer)
        self.transport.sendto(answer if answer is not None else data[:MAX_DATAGRAM], addr)


class _TCPEcho:
    def __init__(self, max_bytes: int, max_connections: int, idle: float) -> None:
        self.max_bytes, self.max_connections, self.idle = max_bytes, max_connections, idle
        self.active = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_connections:
            writer.close()
            return
        self.active += 1
        left = self.max_bytes
        try:
            while left > 0:
                data = await asyncio.wait_for(reader.read(min(65536, left)), self.idle)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                left -= len(data)
        except (TimeoutError, OSError):
            pass
        finally:
            self.active -= 1
            writer.close()


async def serve(
    tcp: Sequence[tuple[str, int]],
    udp: Sequence[tuple[str, int]],
    max_bytes: int = 1 << 20,
    max_connections: int = 256,
    idle: float = 30.0,
) -> None:
    loop = asyncio.get_running_loop()
    handler = _TCPEcho(max_bytes, max_connections, idle)
    servers = [await asyncio.start_server(handler, host, port) for host, port in tcp]
    for host, port in udp:
        await loop.create_datagram_endpoint(_UDPEcho, local_addr=(host, port))
    print(f"helper stub: TCP echo on {len(servers)}, UDP echo/STUN on {len(udp)}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msgwatch.lab.helper_stub")
    parser.add_argument("--tcp", action="append", type=parse_endpoint, default=[])
    parser.add_argument("--udp", action="append", type=parse_endpoint, default=[])
    parser.add_argument("--max-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.tcp and not args.udp:
        parser.error("give at least one --tcp or --udp ADDRESS:PORT")
    asyncio.run(serve(args.tcp, args.udp, args.max_bytes, args.max_connections, args.idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TCP echo: the same bytes back, within the byte budget and the connection limits."""

from __future__ import annotations

import asyncio
import os

import pytest

from msgwatch.helper.server import HelperError
from tests.helper.util import config, running


async def _exchange(
    target: tuple[str, int], payload: bytes, source: str = "127.0.0.1", wait: float = 0.3
) -> bytes:
    reader, writer = await asyncio.open_connection(*target, local_addr=(source, 0))
    writer.write(payload)
    await writer.drain()
    got = bytearray()
    try:
        async with asyncio.timeout(wait):
            while len(got) < len(payload):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    except TimeoutError:
        pass
    writer.close()
    return bytes(got)


def test_echo() -> None:
    async def scenario() -> None:
        async with running() as helper:
            payload = os.urandom(200_000)
            assert await _exchange(helper.bound["tcp"][0], payload) == payload

    asyncio.run(scenario())


def test_over_budget_is_read_but_not_echoed() -> None:
    async def scenario() -> None:
        async with running(config(budget_bytes=50_000)) as helper:
            target = helper.bound["tcp"][0]
            assert await _exchange(target, b"t" * 45_000, source="127.0.0.7") == b"t" * 45_000
            got = await _exchange(target, b"t" * 30_000, source="127.0.0.7")
            assert len(got) <= 10_000  # a prefix at most, never the whole
            assert helper.tcp.counters.not_echoed >= 20_000
            assert helper.tcp.counters.rx_bytes == 75_000  # all of it was read
            assert await _exchange(target, b"u" * 1000, source="127.0.0.8") == b"u" * 1000

    asyncio.run(scenario())


def test_connections_per_client_are_limited() -> None:
    async def scenario() -> None:
        async with running() as helper:
            target = helper.bound["tcp"][0]
            helper.tcp.max_per_client = 2
            held = [await asyncio.open_connection(*target, local_addr=("127.0.0.9", 0))
                    for _ in range(2)]  # fmt: skip
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection(*target, local_addr=("127.0.0.9", 0))
            assert await asyncio.wait_for(reader.read(10), 1.0) == b""  # closed at once
            writer.close()
            assert await _exchange(target, b"ok", source="127.0.0.10") == b"ok"
            assert helper.tcp.counters.refused == 1
            for _, w in held:
                w.close()

    asyncio.run(scenario())


def test_a_busy_port_is_an_error_and_nothing_is_left_bound() -> None:
    async def scenario() -> None:
        async with running() as first:
            port = first.bound["udp"][0][1]
            with pytest.raises(HelperError, match=f"cannot bind udp 127.0.0.1:{port}"):
                async with running(config(udp_ports=(0, port))):
                    pass

    asyncio.run(scenario())

"""Connection slots: bounded in all and per client, released exactly."""

from __future__ import annotations

from msgwatch.helper.conns import Slots


def test_slots_bound_per_client_and_in_all() -> None:
    slots = Slots()
    assert slots.take("a", total=3, per_client=2) and slots.take("a", total=3, per_client=2)
    assert not slots.take("a", total=3, per_client=2)  # per client
    assert slots.take("b", total=3, per_client=2)
    assert not slots.take("c", total=3, per_client=2)  # in all
    slots.give_back("a")
    assert slots.active == 2
    assert slots.take("c", total=3, per_client=2)
    for client in ("a", "b", "c"):
        slots.give_back(client)
    assert slots.active == 0 and not slots._open


def test_a_tcp_service_refuses_over_its_bounds_and_ends_at_its_lifetime() -> None:
    import asyncio
    from dataclasses import dataclass, field

    from msgwatch.helper.conns import TCPService

    @dataclass
    class Counters:
        connections: int = 0
        refused: int = 0

    @dataclass
    class Hold(TCPService):
        max_connections: int = 4
        max_per_client: int = 1
        lifetime: float = 0.3
        counters: Counters = field(default_factory=Counters)
        _slots: Slots = field(default_factory=Slots)

        async def serve(
            self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read(1)  # until the client closes, or the lifetime ends it

    async def scenario() -> None:
        service = Hold()
        server = await asyncio.start_server(service, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        first = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        assert service.active == 1
        second = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(second[0].read(), 1.0) == b""  # closed at once
        assert await asyncio.wait_for(first[0].read(), 1.0) == b""  # the lifetime ended it
        await asyncio.sleep(0.05)
        assert (service.counters.connections, service.counters.refused) == (1, 1)
        assert service.active == 0
        for _, writer in (first, second):
            writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())

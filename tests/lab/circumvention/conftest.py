"""Set-up for the circumvention tests in the lab: the probe side runs inside a probe's namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from msgwatch.lab import netns
from msgwatch.lab.topology import Lab

T = TypeVar("T")


def in_probe(
    lab: Lab, make: Callable[[], Awaitable[T]], isp: str = "isp1", timeout: float = 120.0
) -> T:
    """Run the coroutine ``make()`` with its own event loop in a thread inside the ISP's probe
    namespace: its sockets and the client processes it starts live there."""

    def call() -> T:
        async def main() -> T:
            return await make()

        return asyncio.run(main())

    return netns.run_in(lab.ns(lab.probe_role(isp)), call, timeout=timeout)

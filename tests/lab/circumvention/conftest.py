"""Set-up for the circumvention tests in the lab: one lab for the whole package, with every
circumvention group (the private Tor network alone takes 15-30 s to come up), and the probe side
run inside a probe's namespace. Each test leaves the censors as it found them (rules removed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.lab import netns
from msgwatch.lab.circumvention import GROUPS
from msgwatch.lab.run import scenario_catalogue
from msgwatch.lab.scenario import list_scenarios
from msgwatch.lab.topology import Lab
from tests.lab.conftest import lab_unavailable
from tests.lab.quiet import heavy

UP: dict[str, float] = {}
"""Seconds the package's lab took to come up (printed by the scenarios' module)."""

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


def circumvention_catalogue() -> Catalogue:
    """The lab catalogue of every service any circumvention scenario names (one lab serves all)."""
    scenarios = [s for s in list_scenarios() if s.circumvention]
    services = sorted({name for s in scenarios for name in s.services})
    return scenario_catalogue(
        scenarios[0].model_copy(update={"services": services}), load_catalogue()
    )


@pytest.fixture(scope="package")
def circumvention_lab() -> Iterator[Lab]:
    """One lab with every circumvention group, shared by the package's modules."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        with heavy():  # its keys keep both cores busy: no other lab measures meanwhile
            up = stack.enter_context(Lab(catalogue=circumvention_catalogue(), circumvention=GROUPS))
        UP["lab up"] = time.monotonic() - started
        yield up

"""The table of protocols: every catalogue protocol has a chain in the probe and a server in the lab,
and a chain runs what the table says."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import get_args

import pytest

from msgwatch.catalogue.schema import _TRANSPORTS, Endpoint, Protocol, Transport
from msgwatch.lab.servers import SERVERS
from msgwatch.probe import protocols
from msgwatch.probe.chain import Chain
from msgwatch.probe.chains import ChainConfig, run_chain
from msgwatch.steps.trace import Trace


def test_every_catalogue_protocol_has_a_chain_a_lab_server_and_transports() -> None:
    names = set(get_args(Protocol))
    assert set(protocols.CHAINS) == names
    assert set(SERVERS) == names
    assert set(_TRANSPORTS) == names


def _endpoint(protocol: Protocol, transport: Transport = "tcp") -> Endpoint:
    return Endpoint(
        id="e",
        host=None,
        address="127.0.0.1",
        port=9,
        transport=transport,
        protocol=protocol,
        path="/",
        source="doc",
        checked=dt.date(2026, 12, 2),
    )


def test_a_chain_runs_its_protocols_entry_with_the_resolved_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dispatch is the table: replacing an entry replaces what the chain does (no if-chain
    elsewhere decides), and the entry gets the chain's addresses, deadline and transaction."""
    seen: list[Chain] = []

    async def fake(chain: Chain) -> None:
        seen.append(chain)
        chain.outcome.fail("fake_failure", "app_handshake")

    monkeypatch.setitem(protocols.CHAINS, "mtproto", fake)

    async def scenario() -> None:
        deadline = asyncio.get_running_loop().time() + 1
        trace = Trace()
        outcome = await run_chain(trace, "text", _endpoint("mtproto"), ChainConfig(), deadline)
        assert (outcome.failure, outcome.failed_step) == ("fake_failure", "app_handshake")
        (chain,) = seen
        assert chain.addresses == ["127.0.0.1"] and chain.deadline == deadline
        assert chain.txid == outcome.transaction_ids[0] and chain.outcome is outcome

    asyncio.run(scenario())


def test_an_entry_that_raises_is_recorded_as_internal_never_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(chain: Chain) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(protocols.CHAINS, "tcp", broken)

    async def scenario() -> None:
        deadline = asyncio.get_running_loop().time() + 1
        outcome = await run_chain(Trace(), "text", _endpoint("tcp"), ChainConfig(), deadline)
        assert outcome.failed_step == "internal" and outcome.failure is not None

    asyncio.run(scenario())

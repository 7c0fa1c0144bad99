"""``POST /v1/udp/send``: the helper sends call traffic of its own, only where and as much as allowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from msgwatch.helper.downstream import SendModel, SendSettings
from msgwatch.helper.server import Helper
from msgwatch.wire import calltraffic as C
from msgwatch.wire.helper_api import schedule
from tests.helper.util import UDPClient, config, http, running
from tests.helper.util import settings as control_settings

SECONDS = 0.3


def _body(client: UDPClient, local_port: int, **changes: Any) -> dict[str, Any]:
    return {"client_port": client.port, "local_port": local_port, "profile": "voice",
            "variant": "original", "seconds": SECONDS, "seed": 5, "marker": "whatsapp",
            **changes}  # fmt: skip


async def _open(helper: Helper, source: str = "127.0.0.1") -> UDPClient:
    """A client that opened its flow: one pinhole datagram, echoed."""
    client = await UDPClient.open(helper.bound["udp"][0], source=source)
    client.send(b"msgwatch-pinhole\x00")
    await client.wait_for(1)
    return client


def test_schedule_is_the_probes() -> None:
    original = C.voice_profile(SECONDS, 5, "whatsapp")
    assert schedule("voice", "original", SECONDS, 5, "whatsapp") == original
    assert schedule("voice", "control", SECONDS, 5, "whatsapp") == C.control(original)
    plain = schedule("voice", "plain", SECONDS, 5, "whatsapp")
    assert plain == C.random_payload(C.voice_profile(SECONDS, 5), 5)
    assert schedule("video", "original", SECONDS, 5, None) == C.video_profile(SECONDS, 5)


def test_sends_the_schedule_and_counts_it() -> None:
    async def scenario() -> None:
        async with running() as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            client = await _open(helper)
            expected = schedule("voice", "original", SECONDS, 5, "whatsapp")
            reply = await http(control, "POST", "/v1/udp/send", _body(client, port))
            assert reply.status == 202, reply.body
            answer = reply.json()
            assert answer["packets"] == len(expected)
            assert answer["bytes"] == sum(len(p.payload) for p in expected)
            # While it sends, what arrives on the flow is counted, not echoed.
            client.send(b"msgwatch-pinhole\x01")
            await client.wait_for(1 + len(expected), timeout=2.0)
            await asyncio.sleep(0.1)
            assert client.received[1:] == [p.payload for p in expected]
            query = f"/v1/udp/flows?client_port={client.port}&local_port={port}"
            view = (await http(control, "GET", query)).json()
            assert view["originated"] == {"tx_packets": len(expected),
                                          "tx_bytes": answer["bytes"], "over_limits": 0,
                                          "send_buffer_full": 0, "not_echoed": 1}  # fmt: skip
            # The pinhole's echo and the schedule are the flow's tx; both pinholes its rx.
            assert view["totals"]["tx_packets"] == 1 + len(expected)
            assert view["totals"]["rx_packets"] == 2
            counters = helper.udp.counters
            assert counters.originated_packets == len(expected) and counters.not_echoed == 1
            assert helper.downstream.running == 0
            # Once done, the flow echoes again.
            client.send(b"after")
            await client.wait_for(2 + len(expected))
            assert client.received[-1] == b"after"
            client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"seconds": 10.5}, 400, "bad_request"),
        ({"seconds": 0}, 400, "bad_request"),
        ({"profile": "chat"}, 400, "bad_request"),
        ({"marker": "nope"}, 400, "bad_request"),
        ({"extra": 1}, 400, "bad_request"),
        ({"port": 1}, 404, "no_such_socket"),
    ],
)
def test_bad_requests(changes: dict[str, Any], status: int, reason: str) -> None:
    async def scenario() -> None:
        async with running() as helper:
            client = await _open(helper)
            port = changes.pop("port", helper.bound["udp"][0][1])
            body = _body(client, port, **changes)
            reply = await http(helper.bound["control"][0], "POST", "/v1/udp/send", body)
            assert (reply.status, reply.json()["error"]) == (status, reason)
            assert helper.udp.counters.originated_packets == 0
            client.close()

    asyncio.run(scenario())


def test_no_flow_no_send() -> None:
    async def scenario() -> None:
        async with running() as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            client = await UDPClient.open(helper.bound["udp"][0])  # nothing sent yet
            reply = await http(control, "POST", "/v1/udp/send", _body(client, port))
            assert (reply.status, reply.json()["error"]) == (404, "no_such_flow")
            # A flow opened from another address is not this client's to be sent to.
            other = await _open(helper, source="127.0.0.3")
            reply = await http(control, "POST", "/v1/udp/send", _body(other, port),
                               source="127.0.0.2")  # fmt: skip
            assert (reply.status, reply.json()["error"]) == (404, "no_such_flow")
            # A flow whose last datagram is too old is closed for sends.
            helper.downstream.settings = SendSettings(fresh=0.05)
            await asyncio.sleep(0.1)
            reply = await http(control, "POST", "/v1/udp/send", _body(other, port),
                               source="127.0.0.3")  # fmt: skip
            assert (reply.status, reply.json()["error"]) == (404, "no_such_flow")
            assert helper.udp.counters.originated_packets == 0
            client.close()
            other.close()

    asyncio.run(scenario())


def test_one_send_per_flow_and_a_few_per_client() -> None:
    async def scenario() -> None:
        async with running() as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            helper.downstream.settings = SendSettings(per_client=2)
            a, b, c = [await _open(helper) for _ in range(3)]
            first = await http(control, "POST", "/v1/udp/send", _body(a, port))
            assert first.status == 202
            again = await http(control, "POST", "/v1/udp/send", _body(a, port))
            assert (again.status, again.json()["error"]) == (409, "already_sending")
            assert again.headers["retry-after"] == "5"
            second = await http(control, "POST", "/v1/udp/send", _body(b, port))
            assert second.status == 202
            third = await http(control, "POST", "/v1/udp/send", _body(c, port))
            assert (third.status, third.json()["error"]) == (409, "already_sending")
            await asyncio.sleep(SECONDS + 0.2)
            # Done: the same flow may be sent to again (it was received from recently).
            c.send(b"keepalive")
            await c.wait_for(2)
            assert (await http(control, "POST", "/v1/udp/send", _body(c, port))).status == 202
            for client in (a, b, c):
                client.close()

    asyncio.run(scenario())


def test_budgets_bound_what_is_sent() -> None:
    async def scenario() -> None:
        # The whole schedule must fit in the byte budget when asked...
        async with running(config(budget_bytes=1000)) as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            client = await _open(helper)
            reply = await http(control, "POST", "/v1/udp/send", _body(client, port))
            assert (reply.status, reply.json()["error"]) == (429, "over_budget")
            client.close()
        # ...and every datagram is charged as it goes: over the packet rate, it is withheld.
        async with running(config(rate_pps=5)) as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            client = await _open(helper)
            reply = await http(control, "POST", "/v1/udp/send", _body(client, port))
            assert reply.status == 202
            planned = reply.json()["packets"]
            await asyncio.sleep(SECONDS + 0.2)
            query = f"/v1/udp/flows?client_port={client.port}&local_port={port}"
            originated = (await http(control, "GET", query)).json()["originated"]
            assert 0 < originated["tx_packets"] < planned
            assert originated["tx_packets"] + originated["over_limits"] == planned
            assert len(client.received) == 1 + originated["tx_packets"]
            client.close()

    asyncio.run(scenario())


def test_send_calls_are_rate_limited() -> None:
    async def scenario() -> None:
        limits = {"measure": 10, "flows": 600, "health": 120, "send": 2}
        async with running(config(control=control_settings(calls_per_minute=limits))) as helper:
            control, port = helper.bound["control"][0], helper.bound["udp"][0][1]
            client = await _open(helper)
            statuses = []
            for _ in range(3):
                reply = await http(control, "POST", "/v1/udp/send", _body(client, port))
                statuses.append((reply.status, reply.json().get("error")))
            assert statuses == [(202, None), (409, "already_sending"), (429, "rate_limited")]
            client.close()

    asyncio.run(scenario())


def test_request_model_bounds() -> None:
    with pytest.raises(ValueError):
        SendModel.model_validate({"client_port": 0, "local_port": 1, "profile": "voice",
                                    "variant": "original", "seconds": 1, "seed": 1})  # fmt: skip

"""The helper's wire contract (``msgwatch.wire.helper_api``): the client's requests validate on the
server, and the server's validation takes its names and bounds from the contract."""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from msgwatch.helper import measure as M
from msgwatch.helper.downstream import SendModel
from msgwatch.helper.flows import FlowTable
from msgwatch.steps.control import HelperLink, _counts, helper_flows, helper_measure, helper_send
from msgwatch.steps.trace import Trace
from msgwatch.wire import helper_api as api
from msgwatch.wire.helper_api import Schedule, SendRequest
from tests.helper.util import UDPClient, running
from tests.unit.servers import deadline

PLAN = Schedule("voice", "original", 0.2, 5, "whatsapp")


def test_the_servers_models_have_the_contracts_fields() -> None:
    assert tuple(SendModel.model_fields) == api.SEND_FIELDS
    assert set(M.Step.model_fields) == set(api.MeasureStep.__annotations__)
    assert set(M.MeasureRequest.model_fields) == set(api.MeasureRequest.__annotations__)
    assert get_args(M.Step.model_fields["kind"].annotation) == api.STEP_KINDS
    assert {f.name for f in fields(SendRequest)} == {*api.FLOW_QUERY, "schedule"}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"seconds": api.MAX_SECONDS}, True),
        ({"seconds": api.MAX_SECONDS + 0.1}, False),
        ({"seed": api.MAX_SEED}, True),
        ({"seed": api.MAX_SEED + 1}, False),
        ({"client_port": api.MAX_PORT}, True),
        ({"client_port": api.MAX_PORT + 1}, False),
        ({"local_port": api.MIN_PORT - 1}, False),
        ({"profile": "fax"}, False),
        ({"surprise": 1}, False),
    ],
)
def test_the_send_bounds_are_the_contracts(change: dict[str, Any], valid: bool) -> None:
    body = {**SendRequest(40001, 3478, PLAN).to_dict(), **change}
    if valid:
        assert SendModel.model_validate(body).request() == SendRequest.from_dict(body)
    else:
        with pytest.raises(ValidationError):
            SendModel.model_validate(body)


def test_a_send_request_round_trips_through_json() -> None:
    request = SendRequest(40001, 3478, PLAN)
    body = json.loads(json.dumps(request.to_dict()))
    assert tuple(body) == api.SEND_FIELDS
    assert SendModel.model_validate(body).request() == request
    assert Schedule.checked("voice", "original", 0.2, 5, "whatsapp") == PLAN
    with pytest.raises(ValueError):
        Schedule.checked("voice", "louder", 0.2, 5)


def test_the_servers_flow_view_is_what_the_client_checks() -> None:
    table = FlowTable()
    key = ("127.0.0.1", 40001, 3478)
    table.received(key, 100, 1.0)
    table.sent(key, 100, 1.0)
    table.originating(key)
    table.originated(key, 50, 1.05)
    view = json.loads(json.dumps(table.view(key, 1.1, 1000.0)))
    assert tuple(view["declined"]) == api.DECLINED
    assert tuple(view["originated"]) == api.ORIGINATED
    kept = _counts(view)
    assert kept is not None
    assert tuple(kept["declined"]) == api.KEPT_DECLINED
    assert kept["originated"]["tx_packets"] == 1 and kept["tx_packets"] == 2


def test_the_clients_requests_validate_on_the_server() -> None:
    """Each endpoint, asked by the probe's own client: no 400 from the helper."""

    async def scenario() -> None:
        async with running() as helper:
            udp_port = helper.bound["udp"][0][1]
            link = HelperLink("127.0.0.1", helper.bound["control"][0][1])
            trace = Trace()
            # /v1/measure: steps as the probe's helper view builds them.
            steps = [{"kind": "stun", "port": udp_port, "address": "127.0.0.1"}]
            record = await helper_measure(trace, 1, link, steps, deadline(5.0))
            assert record["failure"] is None
            assert [r["failure"] for r in record["results"]] == [None]
            # /v1/udp/flows: an open flow is counted, an unknown one is 404 (not 400).
            client = await UDPClient.open(helper.bound["udp"][0])
            client.send(b"msgwatch-pinhole\x00")
            await client.wait_for(1)
            flows = [(client.port, udp_port), (1, udp_port)]
            counts, failure = await helper_flows(trace, 2, link, flows, deadline(5.0))
            assert failure is None and counts[1] is None
            assert counts[0] is not None and counts[0]["rx_packets"] == 1
            # /v1/udp/send: scheduled (202) with the contract's answer.
            request = SendRequest(client.port, udp_port, PLAN)
            answer, failure = await helper_send(trace, 3, link, request, deadline(5.0))
            assert failure is None and answer is not None
            assert tuple(answer) == api.SEND_ANSWER
            assert answer["packets"] == len(PLAN.packets())
            await client.wait_for(1 + len(PLAN.packets()), timeout=2.0)
            # The server does validate: a send longer than the contract allows is a 400.
            too_long = Schedule("voice", "original", api.MAX_SECONDS * 2, 5)
            bad = SendRequest(client.port, udp_port, too_long)
            answer, failure = await helper_send(trace, 4, link, bad, deadline(5.0))
            assert answer is None and failure == "helper_status_400"
            client.close()

    asyncio.run(scenario())

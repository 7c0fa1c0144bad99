"""The msgwatch test helper in a real lab: control API, measure steps, flows, from the probes.

The probes talk to the abroad helper (198.18.3.10) and the domestic one (198.19.0.10) across the
censors (with no censor rules loaded); the helper runs its steps against the lab's own servers
and refuses anything outside the lab's ranges.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from typing import Any

import pytest

from msgwatch.catalogue import Endpoint
from msgwatch.lab.topology import Lab

CONTROL = 8765

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxies from the environment: straight to the helper."""


def _get(url: str) -> tuple[int, Any]:
    try:
        with _DIRECT.open(url, timeout=5) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    with _DIRECT.open(request, timeout=20) as reply:
        return json.load(reply)


def _udp_then_flows(helper: str, port: int, count: int) -> tuple[int, int, Any]:
    """Send ``count`` datagrams to the helper, read the echoes, then ask for the flow."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.connect((helper, port))
        echoed = 0
        for _ in range(count):
            payload = os.urandom(120)
            sock.send(payload)
            echoed += sock.recv(2048) == payload
        local = sock.getsockname()[1]
    time.sleep(0.05)
    status, view = _get(f"http://{helper}:{CONTROL}/v1/udp/flows?client_port={local}"
                        f"&local_port={port}")  # fmt: skip
    return echoed, status, view


def _endpoint(lab: Lab, protocol: str, transport: str = "tcp") -> Endpoint:
    for service in lab.mapping.catalogue.services:
        for function in service.functions:
            for e in function.endpoints:
                if e.protocol == protocol and e.transport == transport and e.host is not None:
                    return e
    raise AssertionError(f"no {protocol}/{transport} endpoint with a host")


@pytest.mark.netns
def test_both_helpers_answer_in_lab_mode(lab: Lab) -> None:
    for where in ("abroad", "domestic"):
        status, health = lab.run_in(
            "probe2", _get, f"http://{lab.helper_address(where)}:{CONTROL}/v1/health"
        )
        assert status == 200 and health["mode"] == "lab"
        assert health["allowed"] == ["198.18.0.0/15", "2001:db8::/32"]


@pytest.mark.netns
def test_measure_from_the_abroad_helper(lab: Lab) -> None:
    https, stun_ep = _endpoint(lab, "https"), _endpoint(lab, "stun", "udp")
    chat = _endpoint(lab, "whatsapp_chat")
    steps = [
        {"kind": "dns", "host": https.host},
        {"kind": "http", "scheme": "https", "host": https.host, "port": https.port},
        {"kind": "stun", "host": stun_ep.host, "port": stun_ep.port},
        {"kind": "tcp", "host": chat.host, "port": chat.port},
        {"kind": "tcp", "address": "10.0.0.1", "port": 443},
        {"kind": "stun", "address": "127.0.0.1", "port": 3478},
    ]
    url = f"http://{lab.helper_address('abroad')}:{CONTROL}/v1/measure"
    out = lab.run_in("probe1", _post, url, {"steps": steps, "timeout": 5})
    dns, page, stun, tcp, private, loopback = out["results"]
    assert dns["failure"] is None and dns["addresses"] == [lab.mapping.hosts[https.host or ""]]
    assert page["failure"] is None and page["status"] == 200
    assert stun["failure"] is None and stun["mapped"] is True
    assert tcp["failure"] is None
    assert private["failure"] == loopback["failure"] == "destination_not_allowed"
    assert {c["ip"] for c in out["trace"]["tcp_connect"]}.isdisjoint({"10.0.0.1", "127.0.0.1"})


@pytest.mark.netns
def test_flows_are_counted_and_private(lab: Lab) -> None:
    helper = lab.helper_address("abroad")
    echoed, status, view = lab.run_in("probe1", _udp_then_flows, helper, 40000, 20)
    assert echoed == 20 and status == 200
    assert view["totals"] == {"rx_packets": 20, "rx_bytes": 2400, "tx_packets": 20,
                              "tx_bytes": 2400}  # fmt: skip
    # The domestic helper, on the same port, has its own flows.
    echoed, status, view = lab.run_in(
        "probe2", _udp_then_flows, lab.helper_address("domestic"), 3478, 5
    )
    assert echoed == 5 and status == 200 and view["totals"]["rx_packets"] == 5

"""A production helper never hands out its own network's private DNS answers (issue 9, item 13).

The helper's resolver is the operator's; on a network with split-horizon DNS it answers names with
10.x / 192.168.x addresses that say what is inside. ``/v1/measure`` returns addresses the policy
would refuse as targets as ``[redacted]`` (the count is kept: that it happened is the evidence),
everywhere: the step's result, the trace's DNS records, their raw bytes. In lab mode the lab's
prefixes are the policy, so lab answers are returned.

The fake resolver is on loopback; the public address below is only a string in its answer (no
step connects anywhere).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import dns.message

from msgwatch.helper.policy import Policy
from tests.helper.util import config, http, running
from tests.unit.servers import dns_answer, udp_server

PUBLIC = "1.2.3.4"  # a string in a DNS answer only
PRIVATE = ("10.1.2.3", "192.168.7.8", "fd00::5")
LAB = "198.18.5.5"


def _measure(policy: Policy, addresses: tuple[str, ...], steps: list[dict[str, Any]]) -> Any:
    async def scenario() -> Any:
        async with udp_server(dns_answer(*addresses)) as resolver:
            cfg = config(policy=policy, resolver=(resolver.ip, resolver.port))
            async with running(cfg) as helper:
                body = {"steps": steps, "timeout": 3}
                reply = await http(helper.bound["control"][0], "POST", "/v1/measure", body)
                assert reply.status == 200, reply.body
                return reply.json()

    return asyncio.run(scenario())


def _raw_addresses(record: dict[str, Any]) -> set[str]:
    raw = record.get("raw_response")
    if not raw:
        return set()
    message = dns.message.from_wire(base64.b64decode(raw), ignore_trailing=True)
    return {r.to_text() for rrset in message.answer for r in rrset}


def test_production_redacts_private_answers_everywhere() -> None:
    steps: list[dict[str, Any]] = [{"kind": "dns", "host": "intranet.example.test"},
             {"kind": "tcp", "host": "intranet.example.test", "port": 80}]  # fmt: skip
    # The tcp step's name resolves to private addresses only: refused, and not revealed either.
    out = _measure(Policy.production(), (PUBLIC, *PRIVATE), steps[:1])
    [lookup] = out["results"]
    assert lookup["failure"] is None
    assert sorted(lookup["addresses"]) == sorted([PUBLIC, "[redacted]", "[redacted]", "[redacted]"])
    assert lookup["redacted"] == 3
    assert all(a in (PUBLIC, "[redacted]") for seen in lookup["answers_seen"] for a in seen)
    text = json.dumps(out)
    assert not any(p in text for p in PRIVATE)
    for record in out["trace"]["queries"]:
        values = {a.get("ipv4") or a.get("ipv6") for a in record.get("answers") or []}
        assert values <= {PUBLIC, "[redacted]"}
        assert not _raw_addresses(record) & set(PRIVATE)  # raw bytes dropped when they hold one
    assert any(a.get("ipv4") == "[redacted]" for r in out["trace"]["queries"]
               for a in r.get("answers") or [])  # fmt: skip

    out = _measure(Policy.production(), PRIVATE, steps[1:])
    [connect] = out["results"]
    assert connect["failure"] == "destination_not_allowed" and connect["reason"] == "private"
    assert connect["addresses"] == ["[redacted]"] * 3 and connect["redacted"] == 3
    assert not any(p in json.dumps(out) for p in PRIVATE)
    assert out["trace"]["tcp_connect"] == []


def test_production_keeps_public_answers_whole() -> None:
    out = _measure(Policy.production(), (PUBLIC,), [{"kind": "dns", "host": "www.example.test"}])
    [lookup] = out["results"]
    assert lookup["addresses"] == [PUBLIC] and "redacted" not in lookup
    a_records = [q for q in out["trace"]["queries"] if q["query_type"] == "A"]
    assert a_records and all(_raw_addresses(q) == {PUBLIC} for q in a_records)


def test_lab_mode_returns_the_labs_answers_and_redacts_the_rest() -> None:
    out = _measure(Policy.lab(), (LAB, "10.9.9.9"), [{"kind": "dns", "host": "web.lab.test"}])
    [lookup] = out["results"]
    assert sorted(lookup["addresses"]) == sorted([LAB, "[redacted]"]) and lookup["redacted"] == 1
    assert "10.9.9.9" not in json.dumps(out)

"""A circumvention Run becomes a valid measurement (docs/spec/ts-msgwatch-circumvention.md):
the validator accepts it, private entries are scrubbed, params never leak, the spec and the
model name the same keys."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention.measurement import TEST_NAME, TEST_VERSION, build
from msgwatch.circumvention.model import Context, Entry, Run, StageFailed
from msgwatch.measurement import circumvention as model
from msgwatch.measurement import model as base
from msgwatch.measurement.registry import spec_for
from msgwatch.measurement.validate import extra_keys, validate
from msgwatch.steps.trace import Trace

SPEC = (
    Path(__file__).resolve().parents[2] / "docs" / "spec" / "ts-msgwatch-circumvention.md"
).read_text()
SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA=="
STARTED = dt.datetime(2026, 12, 10, 12, 0, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _entry(private: bool = False, address: str = "198.18.4.5") -> Entry:
    return Entry(
        name="wireguard",
        type="wireguard",
        address=address,
        port=51820,
        protocol="udp",
        params={"private_key": SECRET, "peer_public_key": SECRET, "password": "hunter2"},
        source="user" if private else "lab",
        private=private,
    )


async def _stages(run: Run, clock: FakeClock, *, fail: str | None = None) -> None:
    for name in ("connect", "handshake", "tunnel"):
        async with run.stage(name) as detail:
            clock.now += 0.5
            if name == "tunnel":
                detail["progress"] = 100
    if fail == "transfer":
        raise run.fail("transfer", "connection_reset", bytes_sent=65536, bytes_received=20000,
                       seconds=1.0)  # fmt: skip
    async with run.stage("transfer") as detail:
        detail.update(bytes_sent=65536, bytes_received=65536, seconds=0.4)
        clock.now += 0.4


def _run(entry: Entry, *, fail: str | None = None) -> Run:
    clock = FakeClock()
    trace = Trace(clock=clock)
    run = Run(entry, trace)
    txid = trace.new_transaction()
    trace.tcp(txid=txid, t0=0.0, ip=entry.address, port=entry.port, failure=None)
    trace.event("connect", txid=txid, t0=0.0, address=f"{entry.address}:{entry.port}", proto="tcp")
    trace.note_probe_address("198.18.1.2")
    trace.event("read", txid=txid, t0=0.0, address="198.18.1.2:5000", proto="udp", num_bytes=3)
    with contextlib.suppress(StageFailed):
        asyncio.run(_stages(run, clock, fail=fail))
    run.keys["control"] = {"helper": "198.18.3.10", "port": 40000, "failure": None, "t0": 0.0,
                           "t": 0.1}  # fmt: skip
    run.keys["through"] = [{"service": "whatsapp", "function": "text", "failure": None}]
    run.keys["params"] = dict(entry.params)  # a careless transport: never copied
    run.keys["tor_logs"] = ["x" * 5000] * 500
    return run


def _ctx(tmp_path: Path) -> Context:
    return Context(workdir=tmp_path, helper="198.18.3.10")


def test_a_run_is_a_valid_measurement(tmp_path: Path) -> None:
    entry = _entry()
    m = build(_run(entry), entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    assert m["test_name"] == TEST_NAME and m["test_version"] == TEST_VERSION
    assert m["input"] == "wireguard"
    keys = m["test_keys"]
    assert keys["success"] is True and keys["failed_stage"] is None and keys["failure"] is None
    assert [s["stage"] for s in keys["stages"]] == ["connect", "handshake", "tunnel", "transfer"]
    assert keys["bootstrap_time"] == pytest.approx(1.5)
    assert keys["budget"] == 15.0
    assert keys["entry"]["address"] == "198.18.4.5" and keys["entry"]["port"] == 51820
    assert keys["transport_name"] == "wireguard"
    assert m["test_runtime"] == pytest.approx(1.9)
    assert len(keys["tor_logs"]) == 200 and all(len(x) == 512 for x in keys["tor_logs"])


def test_a_failed_stage_is_the_measurement_failure(tmp_path: Path) -> None:
    entry = _entry()
    m = build(_run(entry, fail="transfer"), entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    keys = m["test_keys"]
    assert keys["failed_stage"] == "transfer" and keys["failure"] == "connection_reset"
    assert keys["success"] is False
    assert keys["stages"][-1]["bytes_received"] == 20000


def test_params_never_leak_and_probe_address_is_scrubbed(tmp_path: Path) -> None:
    entry = _entry()
    m = build(_run(entry), entry, _ctx(tmp_path), STARTED)
    text = json.dumps(m)
    assert SECRET not in text and "hunter2" not in text and "params" not in text
    assert "198.18.1.2" not in text and m["probe_ip"] == "127.0.0.1"


def test_a_private_entry_is_scrubbed_everywhere(tmp_path: Path) -> None:
    entry = _entry(private=True)
    m = build(_run(entry), entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    assert m["test_keys"]["entry"]["address"] == "[scrubbed]"
    assert m["test_keys"]["entry"]["port"] is None
    assert "198.18.4.5" not in json.dumps(m)
    assert m["test_keys"]["tcp_connect"][0]["ip"] == "[scrubbed]"


def test_a_private_name_and_its_answers_are_scrubbed(tmp_path: Path) -> None:
    entry = _entry(private=True, address="vpn.example.org")
    run = _run(entry)
    run.trace.query({"hostname": "vpn.example.org", "query_type": "A", "engine": "udp",
                     "answers": [{"answer_type": "A", "ipv4": "198.18.4.77"}], "failure": None,
                     "t0": 0.0, "t": 0.1, "transaction_id": 9})  # fmt: skip
    run.trace.tcp(txid=9, t0=0.1, ip="198.18.4.77", port=51820, failure=None)
    m = build(run, entry, _ctx(tmp_path), STARTED)
    text = json.dumps(m)
    assert "198.18.4.77" not in text and "vpn.example.org" not in text
    assert m["input"] == "wireguard" and validate(m) == []


def test_the_validator_catches_departures(tmp_path: Path) -> None:
    entry = _entry()
    m = build(_run(entry), entry, _ctx(tmp_path), STARTED)
    bad = json.loads(json.dumps(m))
    bad["test_keys"]["failed_stage"] = "tunnel"
    bad["test_keys"]["stages"][0]["stage"] = "teleport"
    del bad["test_keys"]["through"]
    problems = validate(bad)
    assert any("teleport" in p for p in problems)
    assert "missing test_keys.through" in problems
    private = json.loads(json.dumps(m))
    private["test_keys"]["entry"]["private"] = True
    assert any("not scrubbed" in p for p in validate(private))
    assert spec_for(TEST_NAME) is not None


def test_the_writer_writes_only_what_the_spec_names(tmp_path: Path) -> None:
    entry = _entry()
    m = build(_run(entry, fail="transfer"), entry, _ctx(tmp_path), STARTED)
    # stage details beyond the named ones and replays are open by the spec
    assert extra_keys(m) == []


def _names(text: str) -> set[str]:
    return set(re.findall(r'[`"]([a-z_][a-z0-9_]*)[`"]', text))


def _all_keys(td: Any) -> set[str]:
    out: set[str] = set()
    for key, hint in typing.get_type_hints(td).items():
        out.add(key)
        stack = [hint]
        while stack:
            h = stack.pop()
            if typing.is_typeddict(h):
                out |= _all_keys(h)
            else:
                stack.extend(typing.get_args(h))
    return out


def test_the_spec_names_every_key_of_the_model() -> None:
    own = _all_keys(model.CircumventionTestKeys) - _all_keys(base.TcpConnect)
    standard = set()
    for td in (base.Query, base.TlsHandshake, base.HttpTransaction, base.NetworkEvent,
               base.ProbeLag):  # fmt: skip
        standard |= _all_keys(td)
    missing = {k for k in own - standard if k not in _names(SPEC)}
    assert not missing, f"the spec does not name {sorted(missing)}"


def test_the_spec_states_the_version_and_extensions() -> None:
    assert SPEC.startswith(f"# {TEST_NAME}")
    assert f"Status: version {TEST_VERSION} (test_version)" in SPEC
    assert f'| `test_version` | `"{TEST_VERSION}"` |' in SPEC
    shown = re.search(r"\| `extensions` \| `(\{.*?\})` \|", SPEC)
    assert shown is not None and json.loads(shown.group(1)) == model.EXTENSIONS
    assert f"- **{TEST_VERSION}** (" in SPEC[SPEC.index("## Changes") :]
    for stage in model.STAGE_NAMES:
        assert f"`{stage}`" in SPEC

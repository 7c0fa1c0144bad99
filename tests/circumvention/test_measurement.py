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
from msgwatch.circumvention.model import Context, Entry, Run, StageFailed, StageRecord
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
THROUGH_TEXT: dict[str, Any] = {
    "service": "whatsapp", "function": "text", "measured": True, "failure": None,
    "failed_step": None, "resolved_outside": False, "tls": None, "app": None,
    "target": {"endpoint": "chat", "host": "chat.example", "port": 443, "protocol": "tls",
               "address": "198.18.2.20", "resolved_outside": False},
}  # fmt: skip


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
        detail.update(bytes_sent=65536, bytes_received=65536, seconds=0.4, stalled_at=None,
                      last_echo=0.4, echo_rate=163840, idle=0.0, stall_seconds=5.0)  # fmt: skip
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
    run.keys["through"] = [THROUGH_TEXT]
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
               base.ProbeLag, base.ReplayRecord, base.AppHandshake):  # fmt: skip
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


# --- fix round (issue 13 review): H3 scrubbing, M6 keys, Tor's error, the shapes written -------


def _contacted_run(entry: Entry, server: str, port: int) -> Run:
    """A run whose transport reached ``server`` (resolved with no query recorded, as
    vpnkit's system resolution did) and recorded it in every place a transport does."""
    run = _run(entry)
    run.endpoint_addresses.add(server)
    shown = f"[{server}]" if ":" in server else server
    run.trace.tcp(txid=7, t0=0.2, ip=server, port=port, failure=None)
    run.trace.event("connect", txid=7, t0=0.2, address=f"{shown}:{port}", proto="udp")
    run.stages[0].detail.update(address=server, addresses=[server])
    run.keys["openvpn_handshake"] = [{
        "endpoint": f"openvpn://vpn/?address={shown}:{port}&transport=udp", "ip": server,
        "port": port, "transport": "udp", "provider": "vpn", "t0": 0.1, "t": 0.3,
        "transaction_id": 7, "failure": None,
    }]  # fmt: skip
    run.keys["wireguard_handshake"] = {
        "endpoint": f"{shown}:{port}", "ip": server, "port": port, "transport": "udp",
        "t0": 0.1, "t": 0.3, "handshake_time": 0.2, "latest_handshake": 1_700_000_000,
        "transaction_id": 7, "failure": None,
    }  # fmt: skip
    return run


@pytest.mark.parametrize("server", ["198.18.4.77", "2001:db8::77"])
def test_a_private_entry_hides_what_it_contacted_and_its_ports(tmp_path: Path, server: str) -> None:
    entry = Entry(name="myvpn", type="openvpn", address="vpn.example.org", port=51234,
                  protocol="udp", params={}, source="user", private=True)  # fmt: skip
    m = build(_contacted_run(entry, server, 51234), entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    text = json.dumps(m)
    assert server not in text and "2001:0db8" not in text and "vpn.example.org" not in text
    assert "51234" not in text
    keys = m["test_keys"]
    assert keys["entry"]["port"] is None and keys["entry"]["address"] == "[scrubbed]"
    assert keys["openvpn_handshake"][0]["port"] == 0
    assert (
        keys["openvpn_handshake"][0]["endpoint"]
        == "openvpn://vpn/?address=[scrubbed]&transport=udp"
    )
    assert keys["wireguard_handshake"]["endpoint"] == "[scrubbed]"
    assert all(c["port"] == 0 for c in keys["tcp_connect"] if c["ip"] == "[scrubbed]")
    # the helper and the through target are not the entry's: they stay
    assert keys["control"]["helper"] == "198.18.3.10"
    assert keys["through"][0]["target"]["port"] == 443


def test_a_public_entry_keeps_its_addresses_and_ports(tmp_path: Path) -> None:
    entry = Entry(name="openvpn-udp", type="openvpn", address="198.18.4.77", port=51234,
                  protocol="udp", params={}, source="lab")  # fmt: skip
    m = build(_contacted_run(entry, "198.18.4.77", 51234), entry, _ctx(tmp_path), STARTED)
    keys = m["test_keys"]
    assert keys["openvpn_handshake"][0]["port"] == 51234 and keys["entry"]["port"] == 51234
    assert keys["wireguard_handshake"]["endpoint"] == "198.18.4.77:51234"


def test_a_private_tor_reach_entry_hides_every_target(tmp_path: Path) -> None:
    targets: list[dict[str, Any]] = [{"name": "a", "address": "198.18.5.1", "port": 9001, "protocol": "or_port"},
               {"name": "b", "address": "198.18.5.2", "port": 9030, "protocol": "dir_port"}]  # fmt: skip
    entry = Entry(name="my-relays", type="tor_reach", address="198.18.5.1", port=9001,
                  params={"targets": targets}, source="user", private=True)  # fmt: skip
    run = Run(entry, Trace())
    ids = {}
    for i, t in enumerate(targets):
        run.trace.tcp(txid=i + 1, t0=0.0, ip=t["address"], port=t["port"], failure=None)
        run.trace.event("connect", txid=i + 1, t0=0.0, address=f"{t['address']}:{t['port']}",
                        proto="tcp")  # fmt: skip
        ids[f"{i:064x}"] = {"failure": None, "target_address": f"{t['address']}:{t['port']}",
                            "target_name": t["name"], "target_protocol": t["protocol"]}  # fmt: skip
    run.keys["targets"] = ids
    run.keys["through"] = []
    m = build(run, entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    text = json.dumps(m)
    for t in targets:
        assert t["address"] not in text and str(t["port"]) not in text
    assert not any(i in text for i in ids)
    assert sorted(m["test_keys"]["targets"]) == ["scrubbed-0", "scrubbed-1"]
    assert {t["target_address"] for t in m["test_keys"]["targets"].values()} == {"[scrubbed]"}


def test_wireguard_and_udp_associate_keys_are_written(tmp_path: Path) -> None:
    entry = _entry()
    run = _contacted_run(entry, "198.18.4.5", 51820)
    del run.keys["openvpn_handshake"]
    run.keys["udp_associate"] = {"failure": None, "echo": True, "seconds": 0.01}
    run.keys["tunnel"] = "wireguard"
    m = build(run, entry, _ctx(tmp_path), STARTED)
    keys = m["test_keys"]
    assert keys["wireguard_handshake"]["handshake_time"] == 0.2
    assert keys["udp_associate"] == {"failure": None, "echo": True, "seconds": 0.01}
    assert validate(m) == [] and extra_keys(m) == []
    bad = json.loads(json.dumps(m))
    bad["test_keys"]["udp_associate"]["echo"] = "yes"
    assert any("udp_associate.echo" in p for p in validate(bad))


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (None, None),
        ("generic_timeout_error", "timeout-reached"),
        ("client_failed", "client_failed"),
    ],
)
def test_tor_error_is_oonis(tmp_path: Path, failure: str | None, error: str | None) -> None:
    entry = Entry(name="tor-obfs4", type="obfs4", address="198.18.4.20", port=443)
    run = Run(entry, Trace())
    for stage in ("connect", "handshake", "tunnel"):
        failed = failure if stage == "tunnel" else None
        run.stages.append(StageRecord(stage, 0.0, 0.1, failed, {"progress": 50}))
    run.stages.append(StageRecord("transfer", 0.1, 0.2, "connection_reset"))  # not the bootstrap
    run.keys["through"] = []
    m = build(run, entry, _ctx(tmp_path), STARTED)
    assert validate(m) == []
    assert m["test_keys"]["error"] == error
    other = build(_run(_entry()), _entry(), _ctx(tmp_path), STARTED)
    assert "error" not in other["test_keys"]


def test_an_old_through_target_string_or_a_null_seconds_is_caught(tmp_path: Path) -> None:
    """The two shapes the collector rejected (review H2) are the validator's to catch, and the
    writer no longer produces them (tests/circumvention/test_flows.py)."""
    entry = _entry()
    m = json.loads(json.dumps(build(_run(entry), entry, _ctx(tmp_path), STARTED)))
    m["test_keys"]["through"][0]["target"] = "chat"
    m["test_keys"]["stages"][-1]["seconds"] = None
    problems = validate(m)
    assert any("through[0].target" in p for p in problems)
    assert any("stages[3].seconds" in p for p in problems)


def test_a_handshake_cut_by_the_budget_has_a_null_end(tmp_path: Path) -> None:
    """What the lab's opcode-DPI scenario wrote: an OpenVPN handshake the budget cut, never
    ended (``t`` null), is valid (it was rejected before)."""
    entry = Entry(name="openvpn-udp", type="openvpn", address="198.18.4.40", port=1194,
                  protocol="udp")  # fmt: skip
    run = _contacted_run(entry, "198.18.4.40", 1194)
    run.keys["openvpn_handshake"][0]["t"] = None
    m = build(run, entry, _ctx(tmp_path), STARTED)
    assert validate(m) == [] and m["test_keys"]["openvpn_handshake"][0]["t"] is None

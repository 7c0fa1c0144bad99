"""The spool's parts on their own: the probe identity and the ledger (the spool's own tests cover
them through :class:`Spool`)."""

from __future__ import annotations

from pathlib import Path

from msgwatch.spool.identity import KEY_RE, ProbeIdentity
from msgwatch.spool.ledger import Ledger


def record(key: str) -> dict[str, str]:
    return {"key": key, "uid": f"uid-{key}", "status": "stored", "collector": "c", "time": "t"}


def test_the_identity_is_made_once_and_tags_one_network(tmp_path: Path) -> None:
    identity = ProbeIdentity(tmp_path / "state")
    assert identity.read() is None  # reading never makes one
    made = identity.probe_id()
    assert ProbeIdentity(tmp_path / "state").probe_id() == made == identity.read()
    italy = {"probe_cc": "IT", "probe_asn": "AS30722"}
    keys = [identity.new_key(italy), identity.new_key(italy)]
    assert all(KEY_RE.fullmatch(k) for k in keys) and keys[0] != keys[1]
    assert keys[0].split(".")[0] == keys[1].split(".")[0] == identity.network_tag(italy)
    assert identity.network_tag({"probe_cc": "IR", "probe_asn": "AS197207"}) != keys[0][:16]
    assert made not in keys[0]


def test_a_damaged_identity_is_replaced(tmp_path: Path) -> None:
    identity = ProbeIdentity(tmp_path)
    identity.path.write_text("not an id\n")
    assert identity.read() is None
    fresh = identity.probe_id()
    assert identity.read() == fresh and len(fresh) == 32


def test_the_ledger_appends_after_a_torn_line_and_rotates_with_its_total(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, max_bytes=300)
    ledger.append([record("a"), record("b")])
    with open(ledger.path, "ab") as f:
        f.write(b'{"key": "torn')  # a crash in the middle of a write
    ledger.append([record("c")])
    assert [r["key"] for r in ledger.records()] == ["a", "b", "c"]
    assert ledger.tail_keys() == ["a", "b", "c"]
    assert not ledger.rotate()  # below max_bytes
    ledger.append([record("d"), record("a")])
    assert ledger.rotate()
    assert [p.name for _, p in ledger.generations()] == ["submitted-5.jsonl"]
    assert not ledger.path.exists() and ledger.count() == 5
    ledger.append([record("e")])
    assert [r["key"] for r in ledger.records()] == ["a", "b", "c", "d", "a", "e"]
    assert ledger.tail_keys() == ["e", "a", "b", "c", "d"]  # each once, the newest file first
    assert ledger.count() == 6

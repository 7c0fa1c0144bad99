"""The spool on disk: layout, durability order, random keys, corrupt files, the ledger and its
rotation, status."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.models import check_idempotency_key
from msgwatch.spool import spool as spool_module
from msgwatch.spool.spool import (
    MAX_MEASUREMENT_BYTES,
    ROOT_STATE_DIR,
    Ack,
    Invalid,
    Spool,
    default_state_dir,
    resolve_state_dir,
)
from tests.spool import fixture_measurements

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_state_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    assert default_state_dir({"MSGWATCH_STATE_DIR": "/x"}, euid=0) == Path("/x")
    assert default_state_dir({}, euid=0) == ROOT_STATE_DIR == Path("/var/lib/msgwatch")
    assert default_state_dir({"XDG_STATE_HOME": "/s"}, euid=1000) == Path("/s/msgwatch")
    assert default_state_dir({}, euid=1000, home=home) == home / ".local/state/msgwatch"
    assert default_state_dir({"MSGWATCH_STATE_DIR": ""}, euid=1000, home=home) == (
        home / ".local/state/msgwatch"
    )
    monkeypatch.setenv("MSGWATCH_STATE_DIR", str(tmp_path / "env"))
    assert resolve_state_dir(None) == tmp_path / "env"
    assert resolve_state_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_tests_never_use_the_system_state_dir() -> None:
    # The suite runs as root here: without MSGWATCH_STATE_DIR it would write /var/lib/msgwatch.
    assert os.environ.get("MSGWATCH_STATE_DIR"), "tests/conftest.py must set MSGWATCH_STATE_DIR"
    assert resolve_state_dir(None) != ROOT_STATE_DIR


def test_layout_keys_and_modes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state")
    measurements = fixture_measurements()
    keys = spool.add(measurements)
    assert len(set(keys)) == len(measurements)
    for key, m in zip(keys, measurements, strict=True):
        assert KEY.fullmatch(key) and check_idempotency_key(key) == key
        path = spool.pending_dir / f"{key}.json"
        text = path.read_text()
        assert json.loads(text) == m
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (spool.state_dir, spool.root, spool.pending_dir, spool.rejected_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list(spool.tmp_dir.iterdir()) == []
    assert sorted(p.name for p in spool.state_dir.iterdir()) == ["probe-id", "spool"]
    assert stat.S_IMODE(spool.probe_id_path.stat().st_mode) == 0o600
    assert HEX32.fullmatch(spool.probe_id_path.read_text().strip())


KEY = re.compile(r"[0-9a-f]{16}\.[0-9a-f]{32}")
ZZ = {"probe_cc": "ZZ", "probe_asn": "AS0"}


def _tags(keys: list[str]) -> set[str]:
    return {key.split(".")[0] for key in keys}


def test_the_probe_id_is_made_once_and_never_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a")
    keys = [k for _ in range(3) for k in spool.add([{**ZZ, "n": i} for i in range(4)])]
    probe_id = spool.read_probe_id()
    assert probe_id is not None and HEX32.fullmatch(probe_id)
    assert Spool(tmp_path / "a").probe_id() == probe_id  # persistent
    assert Spool(tmp_path / "b").probe_id() != probe_id  # random, per state directory
    assert not any(probe_id[:8] in k for k in keys)
    for key in keys:
        assert probe_id not in (spool.pending_dir / f"{key}.json").read_text()
    assert spool.status()["probe_id"] == probe_id


def test_a_key_links_measurements_on_one_network_only(tmp_path: Path) -> None:
    """The tag is one per (installation, network): the same for every measurement on a network,
    different on another network and for another installation; the random part never repeats."""
    spool = Spool(tmp_path / "a")
    home = [{"probe_cc": "AZ", "probe_asn": "AS29049", "n": i} for i in range(8)]
    away = [{"probe_cc": "AZ", "probe_asn": "AS28787", "n": i} for i in range(8)]
    first, second = spool.add(home), spool.add(home)
    elsewhere = spool.add(away)
    assert len(_tags(first + second)) == 1
    assert len(_tags(elsewhere)) == 1 and _tags(elsewhere) != _tags(first)
    assert len({k.split(".")[1] for k in first + second + elsewhere}) == 24
    other = Spool(tmp_path / "b").add(home)
    assert _tags(other) != _tags(first)
    # The tag is HMAC-SHA256(probe id, "<cc>/<asn>"): not computable without the probe id.
    probe_id = bytes.fromhex(spool.probe_id())
    expected = hmac.new(probe_id, b"AZ/AS29049", hashlib.sha256).hexdigest()[:16]
    assert _tags(first) == {expected}
    # A measurement without (valid) network fields is tagged as ZZ/AS0, never refused.
    assert _tags(spool.add([{"n": 1}, {"probe_cc": 5, "probe_asn": None}])) == _tags(
        spool.add([ZZ])
    )


def test_a_damaged_probe_id_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "probe-id").write_text("not an id\n")
    spool = Spool(tmp_path)
    assert spool.read_probe_id() is None and spool.status()["probe_id"] is None
    spool.add([ZZ])
    assert spool.read_probe_id() is not None and HEX32.fullmatch(spool.read_probe_id() or "")


def _trace_disk(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record fsync (of which path), rename/replace and unlink, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_rename, real_replace, real_unlink = os.fsync, os.rename, os.replace, os.unlink

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(a: Any, b: Any) -> None:
        events.append(("rename", str(b)))
        real_rename(a, b)

    def replace(a: Any, b: Any) -> None:
        events.append(("rename", str(b)))
        real_replace(a, b)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        events.append(("unlink", str(self)))
        real_unlink(self)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    return events


def test_write_order_file_fsync_rename_dir_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path).create()
    spool.probe_id()  # made on first use, with its own fsyncs
    events = _trace_disk(monkeypatch)
    [key] = spool.add([{"test_keys": {}}])
    final = str(spool.pending_dir / f"{key}.json")
    tmp = str(spool.tmp_dir / f"{key}.json")
    assert events == [("fsync", tmp), ("rename", final), ("fsync", str(spool.pending_dir))]


def test_ledger_is_fsynced_before_the_pending_file_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    keys = spool.add([{"a": 1}, {"b": 2}])
    events = _trace_disk(monkeypatch)
    spool.acknowledge([Ack(k, f"uid{i}", "stored", "http://c") for i, k in enumerate(keys)])
    ledger = str(spool.ledger_path)
    assert events[0] == ("fsync", ledger)
    assert [e for e in events if e[0] == "unlink"] == [
        ("unlink", str(spool.pending_dir / f"{k}.json")) for k in keys
    ]
    assert events[-1] == ("fsync", str(spool.pending_dir))
    records = list(spool.ledger())
    assert [(r["key"], r["uid"], r["status"], r["collector"]) for r in records] == [
        (keys[0], "uid0", "stored", "http://c"),
        (keys[1], "uid1", "stored", "http://c"),
    ]
    assert all(r["time"].endswith("Z") for r in records)
    assert spool.pending() == []


def test_torn_ledger_line_is_skipped_and_not_glued(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    [key] = spool.add([{"a": 1}])
    spool.ledger_path.write_bytes(b'{"key": "old", "uid": "u"}\n{"key": "torn", "ui')
    spool.acknowledge([Ack(key, "u2", "duplicate", "http://c")])
    assert [r["key"] for r in spool.ledger()] == ["old", key]


def test_recover_finishes_an_interrupted_acknowledgement(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    done, other = spool.add([{"a": 1}, {"b": 2}])
    # A crash after the ledger line was fsync'd, before the unlink:
    line = json.dumps({"key": done, "uid": "u", "status": "stored", "collector": "c", "time": "t"})
    spool.ledger_path.write_text(line + "\n")
    stale = spool.tmp_dir / "half-written.json"
    stale.write_text("{")
    os.utime(stale, (0, 0))
    fresh = spool.tmp_dir / "being-written.json"
    fresh.write_text("{")
    assert spool.recover() == 1
    assert [i.key for i in spool.pending()] == [other]
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"\xff\xfe not utf-8", "bad_encoding"),
        (b'{"cut": ', "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    ],
)
def test_corrupt_pending_files_go_to_rejected(tmp_path: Path, content: bytes, error: str) -> None:
    spool = Spool(tmp_path)
    good, bad = spool.add([{"ok": True}, {"replaced": True}])
    (spool.pending_dir / f"{bad}.json").write_bytes(content)
    loaded = {i.key: spool.load(i) for i in spool.pending()}
    assert loaded[good] == b'{"ok":true}'
    assert isinstance(loaded[bad], Invalid) and loaded[bad].error == error  # type: ignore[union-attr]
    assert (spool.rejected_dir / f"{bad}.json").read_bytes() == content
    reason = json.loads((spool.rejected_dir / f"{bad}.json.reason.json").read_text())
    assert reason["error"] == error and reason["file"] == f"{bad}.json"
    assert [i.key for i in spool.pending()] == [good]


def test_oversized_pending_file_is_rejected_without_reading_it_all(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    [key] = spool.add([{"a": 1}])
    path = spool.pending_dir / f"{key}.json"
    with path.open("r+b") as handle:
        handle.truncate(MAX_MEASUREMENT_BYTES * 50)  # sparse: 200 MiB that costs nothing
    [item] = spool.pending()
    result = spool.load(item)
    assert isinstance(result, Invalid) and result.error == "body_too_large"
    assert (spool.rejected_dir / f"{key}.json").exists()


def test_odd_entries_in_pending_are_moved_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    [good] = spool.add([{"a": 1}])
    (spool.pending_dir / "notes.txt").write_text("hello")
    (spool.pending_dir / "bad key!.json").write_text("{}")
    (spool.pending_dir / "sub.json").mkdir()
    (spool.pending_dir / "link.json").symlink_to("/dev/zero")
    assert [i.key for i in spool.pending()] == [good]
    reasons = {
        json.loads(p.read_text())["file"]: json.loads(p.read_text())["error"]
        for p in spool.rejected_dir.glob("*.reason.json")
    }
    assert reasons == {
        "notes.txt": "bad_idempotency_key",
        "bad key!.json": "bad_idempotency_key",
        "sub.json": "not_a_file",
        "link.json": "not_a_file",
    }
    assert spool.status()["rejected"] == 4


def test_reject_keeps_the_reason_and_the_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    [key] = spool.add([{"a": 1}])
    assert spool.reject(key, "bad_asn", "probe_asn must be AS<n>", "http://c")
    assert not spool.reject(key, "bad_asn", "again", "http://c")  # gone: nothing to do
    reason = json.loads((spool.rejected_dir / f"{key}.json.reason.json").read_text())
    assert (reason["error"], reason["detail"], reason["collector"]) == (
        "bad_asn",
        "probe_asn must be AS<n>",
        "http://c",
    )
    assert json.loads((spool.rejected_dir / f"{key}.json").read_text()) == {"a": 1}
    assert len(list(spool.rejected_dir.iterdir())) == 2


def test_status_of_a_missing_state_dir_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "none"
    status = Spool(state).status()
    assert status["probe_id"] is None and status["pending"]["count"] == 0
    assert status["submitted"] == 0 and status["rejected"] == 0
    assert not state.exists()


def test_status_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keys = spool.add([{"n": i} for i in range(5)])
    spool.acknowledge([Ack(keys[0], "u", "stored", "c")])
    spool.reject(keys[1], "bad_time", "x")
    spool.write_attempts(
        {
            "items": {
                keys[2]: {
                    "attempts": 3,
                    "last_error": "connection_refused (c)",
                    "last_attempt": "2026-11-24T10:00:00Z",
                },
                keys[3]: {
                    "attempts": 1,
                    "last_error": "eof_error (c)",
                    "last_attempt": "2026-11-24T09:00:00Z",
                },
                "gone": {"attempts": 9},
            }
        }
    )
    status = spool.status()
    pending = status["pending"]
    assert pending["count"] == 3
    assert pending["bytes"] == sum(
        len(json.dumps({"n": i}, separators=(",", ":"))) for i in (2, 3, 4)
    )
    assert pending["attempted"] == 2 and pending["max_attempts"] == 3
    assert pending["last_error"] == {"error": "connection_refused (c)",
                                     "time": "2026-11-24T10:00:00Z"}  # fmt: skip
    assert pending["oldest"].endswith("Z")
    assert (status["submitted"], status["rejected"]) == (1, 1)
    assert "gone" not in spool.read_attempts()["items"]  # pruned: no longer pending


def test_damaged_attempts_file_reads_as_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path).create()
    spool.attempts_path.write_text("{not json")
    assert spool.read_attempts() == {"items": {}, "last_submission": None}


def test_disk_errors_surface_as_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path).create()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        spool.add([{"a": 1}])
    monkeypatch.undo()
    assert spool.pending() == []  # nothing half-written in pending/
    assert list(spool.tmp_dir.iterdir()) == []


# -- the ledger's rotation -------------------------------------------------------------------------

SMALL = 1000
"""A ledger threshold of a few lines (a line is about 150 bytes)."""


def _acknowledge(spool: Spool, n: int) -> list[str]:
    """Spool ``n`` measurements and acknowledge them one by one (one ledger line each)."""
    keys = spool.add([{"n": i} for i in range(n)])
    for i, key in enumerate(keys):
        spool.acknowledge([Ack(key, f"uid{i}", "stored", "http://127.0.0.1:1")])
    return keys


def _acknowledge_until_rotated(spool: Spool) -> list[str]:
    """Acknowledge measurements one by one until ``submitted.jsonl`` is rotated away."""
    keys: list[str] = []
    while spool.ledger_path.exists() or not keys:
        keys += _acknowledge(spool, 1)
        assert len(keys) < 100, "never rotated"
    return keys


def _generations(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.root.glob("submitted-*.jsonl"))


def _line(key: str) -> str:
    return json.dumps({"key": key, "uid": "u", "status": "stored", "collector": "c", "time": "t"})


def test_the_ledger_rotates_at_the_threshold_and_keeps_one_generation(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ledger_max_bytes=SMALL)
    keys: list[str] = []
    sizes: list[int] = []
    seen: set[str] = set()
    for _ in range(60):
        keys += _acknowledge(spool, 1)
        size = spool.ledger_path.stat().st_size if spool.ledger_path.exists() else 0
        assert size < SMALL  # rotated as soon as it reached the threshold
        sizes.append(size)
        assert len(_generations(spool)) <= 1
        seen.update(_generations(spool))
        assert spool.status()["submitted"] == len(keys)
    assert 0 in sizes  # it really rotated (submitted.jsonl renamed away) ...
    assert len(seen) >= 5  # ... several times
    [name] = _generations(spool)
    total = int(name[len("submitted-") : -len(".jsonl")])
    # On disk: the previous generation (its records are the ones just before submitted.jsonl's;
    # T counts them and all before them), then submitted.jsonl.
    on_record = [r["key"] for r in spool.ledger()]
    in_current = len(keys) - total
    assert on_record == keys[len(keys) - len(on_record) :] and len(on_record) > in_current
    on_disk = sum(p.stat().st_size for p in spool.root.glob("submitted*.jsonl"))
    assert on_disk < 2 * SMALL + 200


def test_no_rotation_below_the_threshold(tmp_path: Path) -> None:
    spool = Spool(tmp_path)  # the default: 1 MiB
    _acknowledge(spool, 30)
    assert spool.recover() == 0 and not spool.rotate_ledger()
    assert _generations(spool) == [] and spool.status()["submitted"] == 30


def test_rotation_renames_then_fsyncs_then_drops_the_older_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, ledger_max_bytes=SMALL)
    _acknowledge_until_rotated(spool)
    [older] = _generations(spool)
    [key] = spool.add([{"last": 1}])
    spool.ledger_path.write_text("".join(_line(f"k{i}") + "\n" for i in range(7)))
    spool.ledger_max_bytes = spool.ledger_path.stat().st_size + 1  # the next line reaches it
    events = _trace_disk(monkeypatch)
    spool.acknowledge([Ack(key, "u", "stored", "c")])
    root = str(spool.root)
    [name] = _generations(spool)
    assert name == f"submitted-{int(older[10:-6]) + 8}.jsonl"
    assert events == [
        ("fsync", str(spool.ledger_path)),  # the line first ...
        ("unlink", str(spool.pending_dir / f"{key}.json")),  # ... then the pending file ...
        ("fsync", str(spool.pending_dir)),
        ("rename", str(spool.root / name)),  # ... then, a safe point, the rotation
        ("fsync", root),
        ("unlink", str(spool.root / older)),
        ("fsync", root),
    ]


def test_a_crash_in_the_middle_of_a_rotation(tmp_path: Path) -> None:
    """Renamed, but the older generation not yet deleted: the larger T includes the smaller."""
    spool = Spool(tmp_path, ledger_max_bytes=SMALL).create()
    (spool.root / "submitted-5.jsonl").write_text("".join(_line(f"a{i}") + "\n" for i in range(5)))
    (spool.root / "submitted-12.jsonl").write_text("".join(_line(f"b{i}") + "\n" for i in range(7)))
    spool.ledger_path.write_text("".join(_line(f"c{i}") + "\n" for i in range(3)))
    assert spool.status()["submitted"] == 15
    assert [r["key"] for r in spool.ledger()] == [f"b{i}" for i in range(7)] + ["c0", "c1", "c2"]
    spool.recover()
    assert _generations(spool) == ["submitted-12.jsonl"] and spool.status()["submitted"] == 15


def test_the_repair_still_works_across_a_rotation(tmp_path: Path) -> None:
    """A crash after the ledger line, before the unlink; then a rotation by a caller that did not
    recover first: the line is in the previous generation, and the repair still finds it."""
    spool = Spool(tmp_path, ledger_max_bytes=SMALL)
    crashed, other = spool.add([{"crashed": 1}, {"other": 2}])
    spool.ledger_path.write_text(_line(crashed) + "\n")  # the fsync'd line; the unlink never came
    keys = _acknowledge_until_rotated(spool)  # the crashed key's line leaves submitted.jsonl
    assert len(_generations(spool)) == 1
    assert (spool.pending_dir / f"{crashed}.json").exists()
    assert spool.recover() == 1
    assert [i.key for i in spool.pending()] == [other]
    assert spool.status()["submitted"] == len(keys) + 1


def test_recover_repairs_before_it_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path, ledger_max_bytes=SMALL)
    [crashed] = spool.add([{"crashed": 1}])
    spool.ledger_path.write_text("".join(_line(f"k{i}") + "\n" for i in range(9)) + _line(crashed))
    spool.ledger_max_bytes = spool.ledger_path.stat().st_size  # at the threshold: rotated
    events = _trace_disk(monkeypatch)
    assert spool.recover() == 1
    crashed_path = str(spool.pending_dir / f"{crashed}.json")
    kinds = [e for e in events if e == ("unlink", crashed_path) or e[0] == "rename"]
    assert kinds == [
        ("unlink", str(spool.pending_dir / f"{crashed}.json")),
        ("rename", str(spool.root / "submitted-10.jsonl")),
    ]
    assert spool.pending() == [] and spool.status()["submitted"] == 10


def test_a_large_ledger_from_an_older_version_is_counted_once_and_rotated(tmp_path: Path) -> None:
    spool = Spool(tmp_path).create()
    lines = [_line(f"old{i}") for i in range(20_000)]  # about 2.2 MiB, never rotated
    spool.ledger_path.write_text("\n".join(lines) + "\n")
    assert spool.status()["submitted"] == 20_000
    spool.recover()
    assert _generations(spool) == ["submitted-20000.jsonl"] and not spool.ledger_path.exists()
    [key] = spool.add([{"new": 1}])
    spool.acknowledge([Ack(key, "u", "stored", "c")])
    assert spool.status()["submitted"] == 20_001


def test_damaged_ledger_lines_are_skipped_and_never_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ledger_max_bytes=4000).create()
    good = [_line(f"g{i}") for i in range(3)]
    damaged = [
        "{not json",
        "[1, 2]",
        json.dumps({"uid": "no key"}),
        json.dumps({"key": "a/b"}),  # not a valid key: never used as a file name
        json.dumps({"key": 7}),
        "[" * 100_000,
        '{"key": "x' + "x" * (spool_module.MAX_LEDGER_LINE * 3) + '"}',  # longer than allowed
    ]
    text = "\n".join([good[0], *damaged, good[1]]).encode()
    text += b'\n{"key": "\xff\xfe"}\n' + good[2].encode() + b'\n{"key": "torn'
    spool.ledger_path.write_bytes(text)
    assert [r["key"] for r in spool.ledger()] == ["g0", "g1", "g2"]
    assert spool.status()["submitted"] == 3
    spool.recover()  # larger than 4,000 bytes: rotated, with only the good lines counted
    assert _generations(spool) == ["submitted-3.jsonl"] and spool.status()["submitted"] == 3


def test_odd_ledger_files_never_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ledger_max_bytes=10).create()
    os.mkfifo(spool.ledger_path)  # would block a plain open() for ever
    assert spool.status()["submitted"] == 0 and list(spool.ledger()) == []
    assert spool.recover() == 0 and spool.ledger_path.exists()  # not rotated: not a file
    spool.ledger_path.unlink()
    spool.ledger_path.symlink_to("/dev/zero")
    assert spool.status()["submitted"] == 0 and spool.recover() == 0
    spool.ledger_path.unlink()
    (spool.root / "submitted-99x.jsonl").write_text(_line("a") + "\n")  # not a generation's name
    (spool.root / "submitted-1234567890123456789012.jsonl").write_text("")  # T too long
    (spool.root / "submitted-4.jsonl").mkdir()  # not a file
    assert spool.status()["submitted"] == 0 and list(spool.ledger()) == []

"""The spool on disk: layout, durability order, the probe id, corrupt files, the ledger, status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

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


def test_layout_keys_modes_and_no_probe_id_in_measurements(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state")
    measurements = fixture_measurements()
    keys = spool.add(measurements)
    probe_id = spool.probe_id()
    assert len(probe_id) == 32 and int(probe_id, 16) >= 0
    assert (tmp_path / "state" / "probe-id").read_text() == probe_id + "\n"
    assert len(set(keys)) == len(measurements)
    for key, m in zip(keys, measurements, strict=True):
        prefix, _, rest = key.partition(".")
        assert prefix == probe_id and len(rest) == 32 and len(key) <= 128
        path = spool.pending_dir / f"{key}.json"
        text = path.read_text()
        assert json.loads(text) == m
        assert probe_id not in text  # it identifies the installation: never in a measurement
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (spool.state_dir, spool.root, spool.pending_dir, spool.rejected_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list(spool.tmp_dir.iterdir()) == []
    assert Spool(tmp_path / "state").probe_id() == probe_id  # made once


def test_damaged_probe_id_is_replaced(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "probe-id").write_text("not an id\n")
    fresh = spool.probe_id()
    assert len(fresh) == 32 and (tmp_path / "probe-id").read_text().strip() == fresh


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
    spool.probe_id()
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
    assert status["probe_id"] == spool.probe_id()
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
    spool = Spool(tmp_path)
    spool.probe_id()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", full)
    with pytest.raises(OSError):
        spool.add([{"a": 1}])
    monkeypatch.undo()
    assert spool.pending() == []  # nothing half-written in pending/
    assert list(spool.tmp_dir.iterdir()) == []

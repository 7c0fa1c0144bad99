"""msgwatch.durable: write order (file fsync, rename, directory fsync), nothing left behind on a
failure, exact modes, the atomic JSONL writer, ``replacing`` and ``flocked``."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgwatch import durable


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record fsync (of which path) and replace, in order."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_durably_syncs_the_file_then_renames_then_syncs_the_directory(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    target = tmp_path / "state.json"
    durable.write_durably(target, b"{}")
    assert target.read_bytes() == b"{}"
    (_, synced_file), rename, synced_dir = events
    assert synced_file.startswith(str(tmp_path / ".state.json.")) and synced_file.endswith(".tmp")
    assert rename == ("replace", str(target))
    assert synced_dir == ("fsync", str(tmp_path))
    assert only_files(tmp_path) == ["state.json"]


def test_the_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        durable.write_durably(tmp_path / "public", b"x", mode=0o644)
    finally:
        os.umask(old)
    os.umask(0)
    try:
        durable.write_durably(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_target_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        durable.write_durably(target, [b"new", b"er"])
    assert target.read_bytes() == b"old"
    assert only_files(tmp_path) == ["state.json"]


def test_a_failing_producer_leaves_nothing(tmp_path: Path) -> None:
    def chunks() -> Iterator[str]:
        yield "half"
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError):
        durable.write_jsonl(tmp_path / "out.jsonl", ({"n": n} for n in chunks()))
    assert only_files(tmp_path) == []


def test_write_new_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        durable.write_new(tmp_path / "taken", b"ours")
    assert (tmp_path / "taken").read_bytes() == b"theirs"


def test_write_jsonl_writes_compact_utf8_lines_in_the_temporary_directory(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    target = tmp_path / "out.jsonl"
    count = durable.write_jsonl(target, [{"a": "é", "b": [1, 2]}, {"c": None}], scratch)
    assert count == 2
    assert target.read_bytes() == '{"a":"é","b":[1,2]}\n{"c":null}\n'.encode()
    assert [json.loads(line) for line in target.read_text().splitlines()][1] == {"c": None}
    assert events[0][1].startswith(str(scratch / ".out.jsonl."))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_replacing_renames_what_was_made_and_removes_it_on_failure(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    target = tmp_path / "export.parquet"
    with durable.replacing(target) as temporary:
        temporary.write_bytes(b"made by someone else")
        assert not target.exists()
    assert target.read_bytes() == b"made by someone else"
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    with pytest.raises(RuntimeError), durable.replacing(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("failed")
    assert target.read_bytes() == b"made by someone else"
    assert only_files(tmp_path) == ["export.parquet"]


def test_flocked_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    probe = (
        "import sys; from pathlib import Path; from msgwatch.durable import flocked\n"
        "with flocked(Path(sys.argv[1]), wait=False) as held: print(held)"
    )

    def other_holds() -> str:
        result = subprocess.run(
            [sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    with durable.flocked(lock, wait=False) as held:
        assert held
        assert other_holds() == "False"
    assert other_holds() == "True"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600

"""An archive that cannot be written: disk full (a small tmpfs), read-only (a read-only bind
mount), permission denied (a process without CAP_DAC_OVERRIDE). Each time: ``StoreUnavailable``,
nothing acknowledged, ``/health`` says so, no damage left in the archive, and storing works
again once the cause is gone. Needs root (mount, setpriv); skipped otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.collector.store import DurableStore, StoreUnavailable, Submission, open_store
from msgwatch.collector.store.archive import Archive, lines_of
from msgwatch.collector.store.records import parse_record

ROOT = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, setpriv)")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{' '.join(argv)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for everyone (a read-only bind mount of itself)."""
    _run("mount", "--bind", str(path), str(path))
    try:
        _run("mount", "-o", "remount,bind,ro", str(path))
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` but ``leave`` bytes."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\xff" * 65536
        with contextlib.suppress(OSError):
            while True:
                if not f.write(block):
                    break
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def archive_state(data_dir: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Sizes of the segments and ``{key: uid}`` of every record; asserts no damage anywhere."""
    archive = Archive(data_dir)
    sizes, records = {}, {}
    for file in archive.files():
        sizes[file] = archive.size(file)
        scan = archive.scan(file, 0)
        for member in scan:
            for _, line in lines_of(member.data):
                parsed = parse_record(line)
                assert parsed is not None
                records[parsed[1]] = parsed[0]
        assert scan.torn_at is None and not scan.skipped, file
    return sizes, records


def batch(prefix: str, count: int, minilab: list[dict[str, Any]]) -> list[Submission]:
    return [Submission(f"{prefix}-{n}", minilab[n % len(minilab)]) for n in range(count)]


async def check_reopened(
    data_dir: Path, database: str | None, acknowledged: dict[str, str], minilab: list[Any]
) -> None:
    """After a restart: every acknowledged key is a duplicate of its uid, index == archive."""
    store = await open_store(data_dir, database)
    try:
        keys = sorted(acknowledged)
        receipts = await store.put_many([Submission(k, minilab[0]) for k in keys])
        assert all(r.duplicate for r in receipts)
        assert [r.measurement_uid for r in receipts] == [acknowledged[k] for k in keys]
        _, records = archive_state(data_dir)
        assert records == acknowledged  # nothing else in the archive: no half member, no orphan
        assert (await store.health())["stored"] == 0
    finally:
        await store.close()


@needs_root
def test_disk_full(tmp_path: Path, index_database: str | None, minilab: list[Any]) -> None:
    with tmpfs(tmp_path / "mnt", "8m") as mnt:
        data_dir = mnt / "data"

        async def main() -> None:
            store = await open_store(data_dir, index_database)
            assert isinstance(store, DurableStore)
            acknowledged: dict[str, str] = {}
            try:
                for r, s in zip(
                    await store.put_many(batch("a", 5, minilab)),
                    batch("a", 5, minilab),
                    strict=True,
                ):
                    acknowledged[s.idempotency_key] = r.measurement_uid
                sizes, _ = archive_state(data_dir)
                filler = fill(mnt, leave=48 * 1024)  # the next member (~100 KB) fits halfway
                with pytest.raises(StoreUnavailable, match="No space left"):
                    await store.put_many(batch("b", 40, minilab))
                assert archive_state(data_dir)[0] == sizes  # the half member was truncated away
                health = await store.health()
                assert health["status"] == "unavailable" and not health["archive"]["writable"]
                with pytest.raises(StoreUnavailable):
                    await store.put_many(batch("b", 40, minilab))
                filler.unlink()
                receipts = await store.put_many(batch("b", 40, minilab))
                assert not any(r.duplicate for r in receipts)
                acknowledged |= {
                    s.idempotency_key: r.measurement_uid
                    for s, r in zip(batch("b", 40, minilab), receipts, strict=True)
                }
                assert (await store.health())["status"] == "ok"

                filler = fill(mnt, leave=0)  # nothing left: archive or (SQLite) index fails
                with pytest.raises(StoreUnavailable):
                    await store.put_many(batch("c", 1, minilab))
                filler.unlink()
                (receipt,) = await store.put_many(batch("c", 1, minilab))
                assert not receipt.duplicate
                acknowledged["c-0"] = receipt.measurement_uid
                assert await store.get(receipt.measurement_uid) == minilab[0]
            finally:
                await store.close()
            await check_reopened(data_dir, index_database, acknowledged, minilab)

        asyncio.run(main())


@needs_root
def test_read_only_archive(tmp_path: Path, index_database: str | None, minilab: list[Any]) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, index_database)
        (first,) = await store.put_many(batch("a", 1, minilab))
        with read_only(tmp_path / "archive"):
            with pytest.raises(StoreUnavailable, match="Read-only file system"):
                await store.put_many(batch("b", 1, minilab))
            health = await store.health()
            assert health["status"] == "unavailable" and not health["archive"]["writable"]
            assert await store.get(first.measurement_uid) == minilab[0]  # reads go on
            await store.close()
            store = await open_store(tmp_path, index_database)  # opening needs no write
            with pytest.raises(StoreUnavailable):
                await store.put_many(batch("b", 1, minilab))
        try:
            (second,) = await store.put_many(batch("b", 1, minilab))
            assert not second.duplicate
            assert (await store.health())["status"] == "ok"
        finally:
            await store.close()
        await check_reopened(
            tmp_path,
            index_database,
            {"a-0": first.measurement_uid, "b-0": second.measurement_uid},
            minilab,
        )

    asyncio.run(main())


@needs_root
def test_permission_denied(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    drop = "-dac_override,-dac_read_search"
    done = subprocess.run(
        [
            "setpriv",
            f"--bounding-set={drop}",
            f"--inh-caps={drop}",
            "--",
            sys.executable,
            "-m",
            "tests.collector.test_store_faults",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {
        "denied_segment": "StoreUnavailable",
        "denied_directory": "StoreUnavailable",
        "health_while_denied": "unavailable",
        "after": "stored",
        "health_after": "ok",
    }
    _, records = archive_state(tmp_path)
    assert sorted(records) == ["a", "b"]


async def _permission_worker(data_dir: Path) -> dict[str, str]:
    """Run without CAP_DAC_OVERRIDE: permission bits apply to us although we are root."""
    measurement = {
        "probe_asn": "AS0",
        "probe_cc": "ZZ",
        "test_name": "t",
        "measurement_start_time": "2026-11-24 00:00:00",
        "software_name": "s",
        "software_version": "1",
        "test_keys": {},
    }
    outcome: dict[str, str] = {}
    store = await open_store(data_dir)
    try:
        await store.put_many([Submission("a", measurement)])
        (segment,) = Archive(data_dir).files()
        path = data_dir / segment
        path.chmod(0o444)
        try:
            await store.put_many([Submission("b", measurement)])
            outcome["denied_segment"] = "stored"
        except StoreUnavailable:
            outcome["denied_segment"] = "StoreUnavailable"
        path.parent.chmod(0o555)  # and no new segment either
        try:
            await store.put_many([Submission("b", measurement)])
            outcome["denied_directory"] = "stored"
        except StoreUnavailable:
            outcome["denied_directory"] = "StoreUnavailable"
        outcome["health_while_denied"] = (await store.health())["status"]
        path.parent.chmod(0o755)
        path.chmod(0o644)
        (receipt,) = await store.put_many([Submission("b", measurement)])
        outcome["after"] = "duplicate" if receipt.duplicate else "stored"
        outcome["health_after"] = (await store.health())["status"]
    finally:
        await store.close()
    return outcome


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_permission_worker(Path(sys.argv[1])))))  # noqa: T201 (a subprocess)

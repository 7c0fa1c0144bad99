"""``msgwatch run`` on a full disk (issue 9, item 7), on a real, tiny tmpfs.

What must hold: the spool's copy is made first and its failure is reported as a spool failure
(naming the state directory), the output's failure names the output file, the message says where the
measurements are (the spool, the output, or nowhere), and no temporary file is left behind on any
path — a leftover would keep the disk full for the next run.

Needs root (``mount -t tmpfs``); every mount is undone in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from msgwatch.cli.main import cli
from msgwatch.spool.spool import Spool
from tests.spool import closed_port, small_catalogue
from tests.unit.servers import TEST_SERVICE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

PAGE = 4096


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``make(name)``: a fresh 64 KiB tmpfs mounted at ``tmp_path/name``."""
    mounted: list[Path] = []

    def make(name: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "msgwatch-test", str(point)],
                check=True,
                capture_output=True,
            )
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"cannot mount a tmpfs: {exc}")
        mounted.append(point)
        return point

    try:
        yield make
    finally:
        for point in reversed(mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(mount: Path, leave_pages: int = 0) -> int:
    """Fill the file system, then give back ``leave_pages`` pages; returns the free bytes."""
    reserve = mount / "reserve"
    if leave_pages:
        reserve.write_bytes(b"r" * leave_pages * PAGE)
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * PAGE):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave_pages:
        reserve.unlink()
    return free_bytes(mount)


def free_bytes(mount: Path) -> int:
    info = os.statvfs(mount)
    return info.f_bavail * info.f_frsize


def temporaries(*roots: Path) -> list[str]:
    """Every file that looks like a write in progress (``*.tmp``, or anything in ``spool/tmp``)."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and (path.name.endswith(".tmp") or path.parent.name == "tmp"):
                found.append(str(path))
    return found


def run(tmp_path: Path, state: Path, output: Path) -> Result:
    """Two services: each measurement is most of a page, the output file two pages."""
    catalogue = tmp_path / "cat"
    if not catalogue.exists():
        small_catalogue(catalogue)
        second = TEST_SERVICE.format(id="svc2", tcp_port=closed_port(), udp_port=closed_port())
        (catalogue / "svc2.toml").write_text(second)
    args = ["run", "--catalogue", str(catalogue), "--timeout", "0.5", "--no-submit",
            "--state-dir", str(state), "--output", str(output)]  # fmt: skip
    return CliRunner().invoke(cli, args)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("fresh", [True, False], ids=["first-run", "existing-state"])
def test_a_shared_full_disk_reports_the_spool_and_leaves_nothing_behind(
    tmp_path: Path, tmpfs: Callable[[str], Path], fresh: bool
) -> None:
    disk = tmpfs("disk")
    state, output = disk / "state", disk / "out" / "m.jsonl"
    if not fresh:
        Spool(state).create().probe_id()  # a probe that has run here before
    free = fill(disk)
    result = run(tmp_path, state, output)
    assert result.exit_code == 4, result.output
    message = one_line(result.stderr)
    # the spool's failure first, as what it is, then the output's, then the consequence
    assert f"cannot spool the measurements in {state / 'spool'}" in message, message
    assert "no space left" in message.lower()
    assert f"nor write them to {output}" in message
    assert "this run's measurements are lost" in message
    assert "free space" in message  # the fix
    assert temporaries(disk) == []
    assert free_bytes(disk) == free  # nothing this run wrote is still taking space
    assert not output.exists()
    assert not list(state.rglob("*.json"))  # nothing half-spooled


def test_a_full_output_disk_keeps_the_spool_copy_and_says_so(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("out")
    state, output = tmp_path / "state", disk / "m.jsonl"
    free = fill(disk, leave_pages=1)  # room for half the output file
    result = run(tmp_path, state, output)
    assert result.exit_code == 4, result.output
    message = one_line(result.stderr)
    assert f"cannot write {output}" in message and "no space left" in message.lower()
    assert f"the measurements are safe in the spool ({state / 'spool' / 'pending'})" in message
    assert "cannot spool" not in message
    assert temporaries(disk) == []
    assert free_bytes(disk) == free
    pending = sorted((state / "spool" / "pending").glob("*.json"))
    assert len(pending) == 2
    assert {json.loads(p.read_text())["input"] for p in pending} == {"svc", "svc2"}


def test_a_full_state_disk_keeps_the_output_and_says_so(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("state")
    state, output = disk / "state", tmp_path / "m.jsonl"
    Spool(state).create().probe_id()
    free = fill(disk)
    result = run(tmp_path, state, output)
    assert result.exit_code == 4, result.output
    message = one_line(result.stderr)
    assert f"cannot spool the measurements in {state / 'spool'}" in message
    assert f"they are in {output} only" in message
    assert temporaries(disk) == []
    assert free_bytes(disk) == free
    assert output.exists() and os.stat(output).st_mode & 0o777 == 0o600

"""The seam for client programs: fenced before anything starts, stopped at the deadline with its
whole process group, output bounded. Harmless programs only (``/bin/sh``); nothing touches a
network."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from msgwatch.failures import NOT_ALLOWED, ProbeFailure
from msgwatch.fence import FENCE_VARIABLE
from msgwatch.steps.exec import Program, ProgramResult, run_program

SH = "/bin/sh"


def _run(program: Program, seconds: float) -> tuple[ProgramResult, float]:
    async def scenario() -> tuple[ProgramResult, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await run_program(program, loop.time() + seconds)
        return result, loop.time() - t0

    return asyncio.run(scenario())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent, the shell, was killed and init reaps it soon).
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_a_program_is_stopped_at_the_deadline_with_its_children() -> None:
    script = "sleep 30 & echo child $!; echo started; sleep 30"
    result, elapsed = _run(Program([SH, "-c", script], destinations=[]), 0.5)
    assert result.timed_out and not result.ready
    assert result.returncode is not None and result.returncode < 0  # ended by a signal
    assert elapsed < 3
    out = bytes(result.stdout.kept).decode()
    assert "started" in out
    child = int(out.split("child ", 1)[1].split()[0])
    for _ in range(50):
        if not _alive(child):
            break
        asyncio.run(asyncio.sleep(0.02))
    assert not _alive(child), "the program's background child outlived it"


def test_a_program_that_exits_is_not_stopped() -> None:
    result, _ = _run(Program([SH, "-c", "echo out; echo err >&2; exit 3"], destinations=[]), 5)
    assert (result.returncode, result.timed_out, result.ready) == (3, False, False)
    assert bytes(result.stdout.kept) == b"out\n" and bytes(result.stderr.kept) == b"err\n"


def test_a_ready_line_ends_the_wait() -> None:
    program = Program(
        [SH, "-c", "echo 'Bootstrapped 50%'; echo 'Bootstrapped 100% (done)'; sleep 30"],
        destinations=[],
        ready=lambda line: line.startswith(b"Bootstrapped 100%"),
    )
    result, elapsed = _run(program, 10)
    assert result.ready and not result.timed_out and elapsed < 3


def test_output_is_bounded_and_counted() -> None:
    program = Program([SH, "-c", "head -c 200000 /dev/zero"], destinations=[], max_output=1000)
    result, _ = _run(program, 10)
    assert len(result.stdout.kept) == 1000 and result.stdout.total == 200000
    assert result.stdout.truncated and result.returncode == 0


@pytest.mark.parametrize("destination", ["192.0.2.10", "chat.example.test"])
def test_a_destination_outside_the_fence_starts_nothing(
    destination: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FENCE_VARIABLE, "127.0.0.0/8")
    marker = tmp_path / "ran"
    program = Program([SH, "-c", f"touch {marker}"], destinations=["127.0.0.1", destination])
    with pytest.raises(ProbeFailure) as refused:
        _run(program, 5)
    assert refused.value.failure == NOT_ALLOWED
    assert not marker.exists()


def test_destinations_inside_the_fence_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FENCE_VARIABLE, "127.0.0.0/8")
    marker = tmp_path / "ran"
    result, _ = _run(Program([SH, "-c", f"touch {marker}"], destinations=["127.0.0.1"]), 5)
    assert result.returncode == 0 and marker.exists()


def test_a_cancelled_step_leaves_no_child(tmp_path: Path) -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        pidfile = tmp_path / "pid"
        program = Program([SH, "-c", f"echo $$ > {pidfile}; sleep 30"], destinations=[])
        task = asyncio.create_task(run_program(program, loop.time() + 30))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if pidfile.exists() and pidfile.read_text().strip():
                break
        pid = int(pidfile.read_text())
        pidfile.unlink()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(scenario())
    assert not _alive(pid)

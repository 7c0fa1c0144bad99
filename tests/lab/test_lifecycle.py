"""Up and down leave nothing behind: not after down(), three cycles, a signal, a failed start, kill -9.

"Nothing" is checked on the machine, not in the lab's own bookkeeping: no namespace ``mw<id>-*``, no
process of the lab (servers, and anything started inside it), no run directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from msgwatch.lab import netns, runtime
from msgwatch.lab import servers as lab_servers
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.topology import Lab, LabError

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("needs_lab")]

CHILD = """
import sys, time
from msgwatch.lab.topology import Lab
lab = Lab().up()
sleeper = lab.popen("probe1", ["sleep", "60"])
print(lab.lab_id, sleeper.pid, *[s.proc.pid for s in lab.servers], flush=True)
if sys.argv[1] == "wait":
    time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead; an orphan's is reaped by init in its own time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _nothing_left(lab_id: str, pids: list[int]) -> None:
    assert [n for n in netns.namespaces() if n.startswith(f"mw{lab_id}-")] == []
    assert [p for p in pids if not _gone(p)] == []
    assert not runtime.entry(lab_id).exists()
    assert not (runtime.RUN_ROOT / f".{lab_id}.new").exists()


def _pids(lab: Lab) -> list[int]:
    return [s.proc.pid for s in lab.servers if s.proc is not None]


def test_three_cycles_leave_nothing() -> None:
    for _ in range(3):
        lab = Lab()
        with lab:
            pids = _pids(lab)
            assert len(pids) == len(lab.servers) >= 10
            assert len(runtime.lab_namespaces(lab.lab_id)) == 7
            assert lab.run_dir.is_dir() and (lab.catalogue_dir / "index.toml").is_file()
            sleeper = lab.popen("domestic", ["sleep", "60"])
        lab.down()  # idempotent
        _nothing_left(lab.lab_id, [*pids, sleeper.pid])
        assert sleeper.returncode is not None  # killed inside the namespace, and reaped
        assert lab.timings["up"] < 5 and lab.timings["down"] < 5, lab.timings
    with pytest.raises(LabError, match="once"):
        lab.up()


def _child(mode: str = "wait") -> tuple[subprocess.Popen[str], str, list[int]]:
    argv = [sys.executable, "-c", CHILD, mode]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    with child.stdout:  # the child prints one line
        line = child.stdout.readline()
    if not line:
        child.wait(timeout=15)
        pytest.fail("the child's lab did not come up (its error is on stderr)")
    lab_id, *pids = line.split()
    return child, lab_id, [int(p) for p in pids]


def test_gc_removes_a_lab_whose_owner_was_killed() -> None:
    child, lab_id, pids = _child()
    child.kill()
    child.wait(timeout=5)
    assert runtime.entry(lab_id).exists() and len(runtime.lab_namespaces(lab_id)) == 7
    assert not any(_gone(p) for p in pids)  # the crash left everything running
    removed = runtime.gc()
    assert f"removed {runtime.entry(lab_id)}" in removed
    assert sum(line.startswith("deleted namespace") for line in removed) >= 7
    _nothing_left(lab_id, pids)
    assert lab_id not in runtime.known_ids()


def test_sigterm_takes_the_lab_down() -> None:
    child, lab_id, pids = _child()
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(timeout=15) == -signal.SIGTERM  # then the default handler ran
    _nothing_left(lab_id, pids)


def test_exit_without_down_takes_the_lab_down() -> None:
    child, lab_id, pids = _child("exit")  # atexit
    assert child.wait(timeout=15) == 0
    _nothing_left(lab_id, pids)


def test_two_labs_at_once_do_not_collide() -> None:
    with Lab() as one, Lab() as two:
        assert one.lab_id != two.lab_id
        for lab in (one, two):
            probe = lab.run_in("probe1", socket.create_connection, ("198.19.0.10", 7), 3)
            probe.close()
    _nothing_left(one.lab_id, _pids(one))
    _nothing_left(two.lab_id, _pids(two))


def test_a_server_that_fails_is_named_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    web: Callable[..., Server] = lab_servers.web

    def broken_web(*args: object) -> Server:
        server = web(*args)
        server.argv += ["-g", "no_such_directive on;"]
        return server

    monkeypatch.setattr(lab_servers, "web", broken_web)
    lab = Lab()
    with pytest.raises(LabError, match=r"^abroad-web exited at start") as excinfo:
        lab.up()
    message = str(excinfo.value)
    log = Path(message.split("; see ")[1].split()[0])
    try:
        assert log.is_file() and "no_such_directive" in log.read_text()
        assert "no_such_directive" in message  # the log's last lines are quoted
        _nothing_left(lab.lab_id, _pids(lab))
    finally:
        for kept in Path(log.parent).glob(f"msgwatch-lab-{lab.lab_id}-*"):
            kept.unlink()
